"""The monitoring API with 10,000 workflows and 1,000,000 tasks: every page endpoint timed
through the Flask app against the raw SQL of its own query, in the same script.

Seeds a fresh PostgreSQL database `carillon_bench_monitoring` (on the server of
CARILLON_DATABASE_URL; created, then dropped at the end) with psycopg2 COPY: 10,000 workflows
of one organization, 250,000 jobs, 1,000,000 tasks (one workflow alone holds 200,000 of them,
for deep pages), 500,000 log lines, 50,000 triggers and 1,000 validations, spread over 30
days. Then each case calls its endpoint --calls times (p50/p99) and runs the statements the
endpoint runs (page + count) as raw SQL through psycopg2 for the baseline;
ratio = endpoint p50 / SQL p50 (the price of Flask, auth, the ORM and JSON).

    python bench/monitoring.py [--workflows 10000] [--tasks 1000000] [--calls 20] [--explain]

The last line is JSON: {"endpoints": {case: {"p50_ms", "p99_ms", "sql_p50_ms", "ratio"}},
"worst_p99_ms", "seed_s"}.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import create_engine, func, select, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import make_url

from worker import monitoring
from worker.definitions import Definition

DATABASE = "carillon_bench_monitoring"
ADMIN_TOKEN = "bench-monitoring-admin-token-0123456789"
DEFAULT_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
BODY = {
    "activities": [
        {"name": "start1", "type": "start", "transitions": {"done": "wait1"}},
        {"name": "wait1", "type": "wait", "duration": "1h", "transitions": {"done": "end1"}},
        {"name": "end1", "type": "end"},
        {"name": "signal1", "type": "externalSignal", "transitions": {"done": "end2"}},
        {"name": "end2", "type": "end"},
    ]
}
#: (activity, type) of a job's four tasks.
JOB_TASKS = (("start1", "start"), ("wait1", "wait"), ("end1", "end"), ("signal1", "externalSignal"))
LEVELS = ("info", "info", "info", "warning", "error")


class _NoDispatch:
    def dispatch(
        self, definition: Definition, rows: list[tuple[str, str]], seeds: Any = None
    ) -> None:
        raise AssertionError("the benchmark only reads")

    def apply_commands(self, workflow_id: int) -> None:
        raise AssertionError("the benchmark only reads")


def _ts(value: datetime) -> str:
    return value.isoformat()


def _copy(cursor: Any, table: str, columns: str, rows: Iterator[str], batch: int = 200_000) -> None:
    """COPY rows (tab-separated lines) into `table`, a batch at a time (bounded memory)."""
    buffer, count = io.StringIO(), 0
    for line in rows:
        buffer.write(line)
        count += 1
        if count == batch:
            buffer.seek(0)
            cursor.copy_expert(f"COPY {table} ({columns}) FROM STDIN", buffer)
            buffer, count = io.StringIO(), 0
    if count:
        buffer.seek(0)
        cursor.copy_expert(f"COPY {table} ({columns}) FROM STDIN", buffer)


def seed(raw: Any, workflows: int, tasks: int) -> dict[str, Any]:
    """Every row, by COPY; returns what the cases need (names, a job id, a task id)."""
    rng = random.Random(7)
    now = datetime.now(UTC)
    jobs_total = tasks // len(JOB_TASKS)
    big_jobs = jobs_total // 5  # wf00000: a fifth of all jobs, for deep pages
    cur = raw.cursor()
    cur.execute(
        "INSERT INTO organization (name, created_at) VALUES ('acme', now()), ('globex', now()) "
        "RETURNING id"
    )
    org_id = cur.fetchone()[0]
    names = [f"wf{n:05d}" for n in range(workflows)]
    states = ["started"] * 6 + ["finished", "paused", "error", "edition"]

    def workflow_rows() -> Iterator[str]:
        for n, name in enumerate(names):
            state = "started" if n == 0 else states[n % len(states)]
            created = _ts(now - timedelta(days=30))
            yield (
                f"{n + 1}\t{uuid.uuid4()}\t{org_id}\t{name}\tWorkflow number {n}\t{state}\t1\t1"
                f"\t{created}\t{created}\n"
            )

    _copy(
        cur,
        "workflow",
        "id, pkey, org_id, name, label, state, latest_version, running_version, created_at, "
        "updated_at",
        workflow_rows(),
    )
    cur.execute("SELECT setval('workflow_id_seq', %s)", (workflows,))
    _copy(
        cur,
        "workflow_version",
        "workflow_id, version, body, created_at",
        (
            f"{n + 1}\t1\t{json.dumps({'id': name, **BODY})}\t{_ts(now)}\n"
            for n, name in enumerate(names)
        ),
    )
    # Jobs: the big workflow's first, then round-robin over the others.
    job_ids = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(jobs_total)]
    owners = [1 if i < big_jobs else 2 + (i % (workflows - 1)) for i in range(jobs_total)]
    span = 30 * 86400
    starts = [now - timedelta(seconds=span * (1 - i / jobs_total)) for i in range(jobs_total)]
    last_job: dict[int, int] = {}
    for i, owner in enumerate(owners):
        last_job[owner] = i
    running = {i for owner, i in last_job.items() if owner % 10 < 3}  # latest job of 30% runs
    _copy(
        cur,
        "job",
        "id, workflow_id, version, origin, vars, created_at",
        (
            f"{job_ids[i]}\t{owners[i]}\t1\tstart\t{{}}\t{_ts(starts[i])}\n"
            for i in range(jobs_total)
        ),
    )
    task_ids: list[str] = []

    def task_rows() -> Iterator[str]:
        for i in range(jobs_total):
            begun = starts[i]
            for k, (activity, kind) in enumerate(JOB_TASKS):
                task_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
                if i < 3 or i == big_jobs - 1:
                    task_ids.append(task_id)
                created = begun + timedelta(seconds=k)
                started: datetime | None = created
                state, due, finished = "done", "\\N", created
                if i in running and kind in ("wait", "externalSignal"):
                    state, started = "waiting", None
                    due = (
                        _ts(now + timedelta(minutes=rng.randint(1, 600))) if kind == "wait" else due
                    )
                elif i in running and kind == "end":
                    continue
                elif rng.random() < 0.01:
                    state = "failed"
                done_at = (
                    "\\N"
                    if state == "waiting"
                    else _ts(finished + timedelta(seconds=rng.random() * 5))
                )
                start_at = "\\N" if started is None else _ts(started)
                yield (
                    f"{task_id}\t{owners[i]}\t{job_ids[i]}\t{activity}\t{kind}\t1\t{state}\t1"
                    f"\t{{}}\t{{}}\t{_ts(created)}\t{_ts(created)}\t{start_at}\t{done_at}"
                    f"\t{due}\t0\n"
                )

    _copy(
        cur,
        "task",
        "id, workflow_id, job_id, activity, activity_type, version, state, attempt, vars, "
        "counts, created_at, updated_at, started_at, finished_at, due_at, fired",
        task_rows(),
    )

    def log_rows() -> Iterator[str]:
        for n in range(tasks // 2):
            i = n * 2 // len(JOB_TASKS) % jobs_total
            level = LEVELS[n % len(LEVELS)]
            yield (
                f"{owners[i]}\t{job_ids[i]}\t\\N\twait1\t{level}"
                f"\tline {n}: activity wait1 {level} message\t{_ts(starts[i])}\n"
            )

    _copy(
        cur,
        "log_line",
        "workflow_id, job_id, task_id, activity, level, message, created_at",
        log_rows(),
    )
    _copy(
        cur,
        "trigger",
        "id, workflow_id, activity, source, parameters, state, created_at",
        (
            f"{uuid.uuid4()}\t{1 + n % workflows}\tsignal1\tbench\t{{}}\taccepted"
            f"\t{_ts(now - timedelta(seconds=rng.randint(0, 86400)))}\n"
            for n in range(tasks // 20)
        ),
    )
    _copy(
        cur,
        "validation",
        "org_id, pkey, workflow_id, job_id, task_id, activity, subject, assignee, state, created",
        (
            f"{org_id}\t{uuid.uuid4()}\t{1 + n}\t{job_ids[n]}\t{uuid.uuid4()}\tvalidation1"
            f"\tApprove {n}\talice\t{'pending' if n % 2 else 'approved'}\t{_ts(now)}\n"
            for n in range(min(1000, workflows))
        ),
    )
    raw.commit()
    # What autovacuum does to a table at rest: statistics, and the visibility map that lets
    # counts be index-only scans.
    raw.autocommit = True
    cur.execute("VACUUM ANALYZE")
    raw.autocommit = False
    return {
        "big": names[0],
        "small": names[7],
        "big_job": job_ids[0],
        "big_task": task_ids[0] if task_ids else "",
        "org_id": org_id,
        "big_jobs": big_jobs,
    }


def _sql(stmt: Any) -> str:
    return str(stmt.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}))


def _page_sql(stmt: Any, start: int, count: int = 25) -> list[str]:
    """What an endpoint's page runs: the window and the (bounded) count of its statement."""
    bounded = stmt.order_by(None).limit(start + count + 10_000).subquery()
    return [
        _sql(stmt.offset(start).limit(count)),
        _sql(select(func.count()).select_from(bounded)),
    ]


def cases(facts: dict[str, Any]) -> dict[str, tuple[str, list[str]]]:
    """case -> (URL, baseline SQL statements)."""
    org = facts["org_id"]
    big_id, small_id = 1, 8
    base = "/monitoring/api/acme"
    big = f"{base}/workflows/{facts['big']}"
    deep_jobs = facts["big_jobs"] - 25
    deep_tasks = facts["big_jobs"] * 3
    sample_ids = [big_id + n for n in range(25)]
    summary_sql = [
        _sql(
            select(monitoring.Workflow.state, func.count())
            .where(monitoring.Workflow.org_id == org)
            .group_by(monitoring.Workflow.state)
        ),
    ]
    per_workflow = (
        select(monitoring.Task.workflow_id, monitoring.Task.state, func.count().label("n"))
        .group_by(monitoring.Task.workflow_id, monitoring.Task.state)
        .subquery()
    )
    summary_sql.append(
        _sql(
            select(per_workflow.c.state, func.sum(per_workflow.c.n))
            .join(monitoring.Workflow, monitoring.Workflow.id == per_workflow.c.workflow_id)
            .where(monitoring.Workflow.org_id == org)
            .group_by(per_workflow.c.state)
        )
    )
    return {
        "summary": (f"{base}/summary", summary_sql),
        "workflows": (
            f"{base}/workflows",
            [
                *_page_sql(monitoring.workflows_stmt(org), 0),
                _sql(select(monitoring.Job).where(monitoring.Job.workflow_id.in_(sample_ids))),
            ],
        ),
        "workflows_deep": (
            f"{base}/workflows?_lineStart=9950",
            _page_sql(monitoring.workflows_stmt(org), 9950),
        ),
        "workflows_state": (
            f"{base}/workflows?state=paused&_lineStart=500",
            _page_sql(monitoring.workflows_stmt(org, "paused"), 500),
        ),
        "workflows_q": (
            f"{base}/workflows?q=number%2099",
            _page_sql(monitoring.workflows_stmt(org, None, "number 99"), 0),
        ),
        "workflow_big": (
            big,
            [
                _sql(
                    select(monitoring.Task.activity, monitoring.Task.state, func.count())
                    .where(monitoring.Task.workflow_id == big_id)
                    .group_by(monitoring.Task.activity, monitoring.Task.state)
                )
            ],
        ),
        "workflow_small": (
            f"{base}/workflows/{facts['small']}",
            [
                _sql(
                    select(monitoring.Task.activity, monitoring.Task.state, func.count())
                    .where(monitoring.Task.workflow_id == small_id)
                    .group_by(monitoring.Task.activity, monitoring.Task.state)
                )
            ],
        ),
        "jobs": (f"{big}/jobs", _page_sql(monitoring.jobs_stmt(big_id), 0)),
        "jobs_deep": (
            f"{big}/jobs?_lineStart={deep_jobs}",
            _page_sql(monitoring.jobs_stmt(big_id), deep_jobs),
        ),
        "jobs_failed": (
            f"{big}/jobs?state=failed",
            _page_sql(monitoring.jobs_stmt(big_id, "failed"), 0),
        ),
        "tasks": (f"{big}/tasks", _page_sql(monitoring.tasks_stmt(big_id), 0)),
        "tasks_deep": (
            f"{big}/tasks?_lineStart={deep_tasks}",
            _page_sql(monitoring.tasks_stmt(big_id), deep_tasks),
        ),
        "tasks_failed": (
            f"{big}/tasks?state=failed",
            _page_sql(monitoring.tasks_stmt(big_id, "failed"), 0),
        ),
        "tasks_activity": (
            f"{big}/tasks?activity=wait1&_lineStart=1000",
            _page_sql(monitoring.tasks_stmt(big_id, None, "wait1"), 1000),
        ),
        "tasks_job": (
            f"{big}/tasks?jobId={facts['big_job']}",
            _page_sql(monitoring.tasks_stmt(big_id, None, None, facts["big_job"]), 0),
        ),
        "logs": (f"{big}/logs", _page_sql(monitoring.logs_stmt(big_id), 0)),
        "logs_deep": (
            f"{big}/logs?_lineStart=50000",
            _page_sql(monitoring.logs_stmt(big_id), 50000),
        ),
        "logs_level": (
            f"{big}/logs?level=error",
            _page_sql(monitoring.logs_stmt(big_id, "error"), 0),
        ),
        "logs_q": (
            f"{big}/logs?q=line%2012345",
            _page_sql(monitoring.logs_stmt(big_id, None, None, "line 12345"), 0),
        ),
        "validations": (
            f"{base}/validations?state=pending",
            _page_sql(monitoring.validations_stmt(org, "pending"), 0),
        ),
        "throughput_60": (f"{base}/throughput?minutes=60", []),
        "throughput_1440": (f"{base}/throughput?minutes=1440", []),
        "technical": ("/monitoring/api/technical", []),
        "metrics": ("/metrics", []),
    }


def _times(call: Callable[[], Any], n: int) -> tuple[float, float]:
    found = []
    for _ in range(n):
        began = time.perf_counter()
        call()
        found.append((time.perf_counter() - began) * 1000)
    found.sort()
    p99 = found[min(len(found) - 1, round(0.99 * (len(found) - 1)))]
    return statistics.median(found), p99


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workflows", type=int, default=10_000)
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--explain", action="store_true", help="print the PG plan of each case")
    args = parser.parse_args()
    if not 20 <= args.workflows <= 100_000 or not 1_000 <= args.tasks <= 5_000_000:
        parser.error("--workflows 20..100000, --tasks 1000..5000000")

    base = make_url(os.environ.get("CARILLON_DATABASE_URL") or DEFAULT_URL)
    if not base.drivername.startswith("postgresql"):
        parser.error("CARILLON_DATABASE_URL must be a PostgreSQL URL")
    admin = create_engine(base.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{DATABASE}"'))
    url = base.set(database=DATABASE).render_as_string(hide_password=False)
    try:
        run(url, args)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)'))
        admin.dispose()


def run(url: str, args: argparse.Namespace) -> None:
    from api import create_app
    from worker import schema
    from worker.config import Settings
    from worker.db import make_engine

    engine = make_engine(url)
    schema.upgrade(engine)  # the tables and the indexes of migration 0005 come first
    began = time.perf_counter()
    raw = engine.raw_connection()
    try:
        facts = seed(raw.driver_connection, args.workflows, args.tasks)
    finally:
        raw.close()
    seed_s = time.perf_counter() - began
    print(f"seeded {args.workflows} workflows, {args.tasks} tasks in {seed_s:.1f} s", flush=True)

    with tempfile.TemporaryDirectory() as home:
        settings = Settings(
            home=Path(home),
            database_url=url,
            broker_url="memory://",
            result_backend="cache+memory://",
            admin_token=ADMIN_TOKEN,
        ).resolved()
        app = create_app(settings, dispatcher=_NoDispatch())
        client = app.test_client()
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        baseline = engine.raw_connection()
        results: dict[str, dict[str, float]] = {}
        print(f"{'case':<18}{'p50 ms':>9}{'p99 ms':>9}{'SQL p50':>9}{'ratio':>7}  url")
        for name, (path, statements) in cases(facts).items():

            def call(path: str = path) -> None:
                response = client.get(path, headers=headers)
                assert response.status_code == 200, (path, response.get_data(as_text=True))

            call()  # warm: caches, first plan
            p50, p99 = _times(call, args.calls)
            sql_p50 = 0.0
            if statements:
                cursor = baseline.cursor()

                def sql(cursor: Any = cursor, statements: list[str] = statements) -> None:
                    for statement in statements:
                        cursor.execute(statement)
                        cursor.fetchall()

                sql()
                sql_p50, _ = _times(sql, args.calls)
                if args.explain:
                    cursor.execute(f"EXPLAIN {statements[0]}")
                    print("\n".join(f"    {row[0]}" for row in cursor.fetchall()))
                cursor.close()
            ratio = p50 / sql_p50 if sql_p50 else 0.0
            results[name] = {
                "p50_ms": round(p50, 2),
                "p99_ms": round(p99, 2),
                "sql_p50_ms": round(sql_p50, 2),
                "ratio": round(ratio, 2),
            }
            print(f"{name:<18}{p50:>9.1f}{p99:>9.1f}{sql_p50:>9.1f}{ratio:>7.1f}  {path[:70]}")
        baseline.close()
        app.extensions["carillon"].db.dispose()
    engine.dispose()
    print(
        json.dumps(
            {
                "endpoints": results,
                "worst_p99_ms": max(r["p99_ms"] for r in results.values()),
                "seed_s": round(seed_s, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
