"""A seeded hop's cost as the tasks of one activity pile up in one workflow, next to an INSERT.

A signal triggered thousands of times leaves thousands of tasks of each of its activities in
one workflow. A hop (worker/hop.py) must still read its own task by id, whatever plan
PostgreSQL caches for its prepared statement: with statistics never gathered (a new install,
a server whose autovacuum is off) its generic plan once scanned every task of the activity.
This runs `--rounds` rounds of `--hops` hops of one activity in a database of its own, made
afresh (so never analyzed), and prints each round's median hop next to a one-row autocommit
INSERT on the same connection, and the growth from the first round to the last.

    python bench/hop_scaling.py [--rounds 4] [--hops 1500]

Reads CARILLON_DATABASE_URL (PostgreSQL; the database `<name>_hop_scaling` is dropped and
created). The last line is JSON: first_round_ms, last_round_ms, growth (the last round's
hop/INSERT ratio over the first's), insert_ms.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

#: The workflow whose first activity piles up tasks.
DEFINITION = {
    "id": "scaling",
    "activities": [
        {"name": "start1", "type": "start", "transitions": {"done": "end1"}},
        {"name": "end1", "type": "end"},
    ],
}


def fresh_database(url: str) -> str:
    """The URL of `<database>_hop_scaling`, dropped and created again (never analyzed)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if not parsed.drivername.startswith("postgresql"):
        raise SystemExit("hop_scaling needs PostgreSQL: set CARILLON_DATABASE_URL")
    name = f"{parsed.database}_hop_scaling"
    admin = create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return parsed.set(database=name).render_as_string(hide_password=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=4, help="rounds of hops (4)")
    parser.add_argument("--hops", type=int, default=1500, help="hops per round (1500)")
    args = parser.parse_args()
    if not (1 <= args.rounds <= 50 and 10 <= args.hops <= 100_000):
        parser.error("--rounds must be 1-50 and --hops 10-100000")

    from sqlalchemy import insert, text, update

    from worker import catalog, hop, schema
    from worker.db import make_engine, make_session_factory
    from worker.models import Job, Task, Workflow, new_id
    from worker.transitions import with_defaults

    url = fresh_database(
        os.environ.get(
            "CARILLON_DATABASE_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/carillon_bench"
        )
    )
    db = make_engine(url)
    schema.upgrade(db)
    sessions = make_session_factory(db)
    with sessions() as s, s.begin():
        org = catalog.ensure_org(s, "bench")
        workflow = catalog.save_definition(s, org, DEFINITION)
        s.flush()
        workflow_id = workflow.id
        s.execute(update(Workflow).where(Workflow.id == workflow_id).values(state="started"))
        job = Job(id=new_id(), workflow_id=workflow_id, version=1, origin="start", vars={})
        s.add(job)
        job_id = job.id
    seed = hop.Seed(workflow_id, 1, job_id, "start1", {}, {}, None)
    fence = seed.fence()
    assert fence is not None

    def row(task_id: str, activity: str, parent: str | None, at: dt.datetime) -> dict[str, Any]:
        return with_defaults(
            {
                "id": task_id,
                "workflow_id": workflow_id,
                "job_id": job_id,
                "parent_id": parent,
                "activity": activity,
                "activity_type": activity[:-1],
                "version": 1,
                "state": "pending",
                "attempt": 0,
                "vars": {},
                "counts": {},
                "created_at": at,
                "updated_at": at,
            }
        )

    # The baseline commits as a hop does, without waiting for the WAL flush.
    probe = text(
        "WITH relaxed AS (SELECT set_config('synchronous_commit', 'off', true)) "
        "INSERT INTO probe SELECT :id, :at FROM relaxed"
    )
    print(f"database {url.split('@')[-1]}")
    print(f"{args.rounds} rounds of {args.hops} hops of one activity in one workflow")
    ratios: list[float] = []
    hop_medians: list[float] = []
    inserts: list[float] = []
    with db.connect() as connection:
        driver: Any = connection.connection.dbapi_connection
        driver.autocommit = True  # as the engine runs a hop (Engine._autocommit)
        connection.exec_driver_sql("CREATE TABLE probe (id text PRIMARY KEY, at timestamptz)")
        for round_number in range(1, args.rounds + 1):
            hops, probes = [], []
            for _ in range(args.hops):
                task_id, now = new_id(), dt.datetime.now(dt.UTC)
                connection.execute(insert(Task), [row(task_id, "start1", None, now)])
                done = hop.Completion(now, now, "bench", ["done"], {}, {}, [])
                successor = row(new_id(), "end1", task_id, now)
                began = time.perf_counter()
                written = hop.claim_complete_and_create(
                    connection, task_id, fence, done, [successor]
                )
                hops.append(time.perf_counter() - began)
                if not written:
                    raise SystemExit(f"the hop of {task_id} wrote nothing")
                began = time.perf_counter()
                connection.execute(probe, {"id": task_id, "at": now})
                probes.append(time.perf_counter() - began)
            hop_ms = statistics.median(hops) * 1000
            insert_ms = statistics.median(probes) * 1000
            inserts.append(insert_ms)
            hop_medians.append(hop_ms)
            ratios.append(hop_ms / insert_ms)
            print(
                f"round {round_number}: {round_number * args.hops:6d} tasks of the activity, "
                f"hop median {hop_ms:.3f} ms, one-row INSERT {insert_ms:.3f} ms, "
                f"ratio {hop_ms / insert_ms:.2f}"
            )
        driver.autocommit = False
    db.dispose()
    figures = {
        "first_round_ms": round(hop_medians[0], 3),
        "last_round_ms": round(hop_medians[-1], 3),
        # Against the INSERT of the same rounds: the machine's own drift cancels out.
        "growth": round(ratios[-1] / ratios[0], 3),
        "insert_ms": round(statistics.median(inserts), 3),
    }
    print(
        f"growth of hop/INSERT from the first round to the last: {figures['growth']:.2f}x "
        "(flat: ~1)"
    )
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
