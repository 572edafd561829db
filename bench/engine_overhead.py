"""Engine overhead per activity vs. a raw Celery chain hop, and trigger-to-first-activity latency.

Both run through the same worker process on the broker and database of CARILLON_* (the
Makefile points them at the local Redis and PostgreSQL). Per hop = (completion of the
10th task - publication of the 1st) / 10, from stored timestamps, not from polling.

    python bench/engine_overhead.py [--runs 50] [--triggers 200]

--poll-ms (10) sets how often the harness looks for a finished run, on both sides.

On PostgreSQL a third side runs too, interleaved with the two: the durable floor, a raw
Celery chain whose every task commits one row (one INSERT, no wait for the WAL flush, as a
hop commits). No engine that writes each activity's state before the next one runs can go
below it; its ratio to the raw chain says how much of the goal that write alone takes.

The last line is JSON: engine_hop_ms, celery_hop_ms, ratio, trigger_p50_ms, trigger_p99_ms.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from itertools import pairwise
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import prepare

HOPS = 10
#: Per engine run, where its time went (link_times).
links: list[tuple[float, float, float, float]] = []
#: Milliseconds between the harness's checks for a finished run, on both sides (--poll-ms).
#: The figures come from stored timestamps, not from these checks; checking every 2 ms (as
#: before) kept the harness busy on one of the machine's 2 cores, querying PostgreSQL on the
#: engine's side and Redis on Celery's, and slowed both sides down by 10-30%. Both sides wait
#: before their first check: one right after the start ran a query while the first task's
#: message was being picked up (a PostgreSQL query on the engine's side, heavier than
#: Celery's Redis read).
POLL_MS = 10.0


def chain_body(name: str) -> dict[str, Any]:
    middle = [f"noop{i}" for i in range(1, HOPS - 1)]
    names = ["start1", *middle, "end1"]
    activities: list[dict[str, Any]] = []
    for index, activity in enumerate(names):
        kind = "start" if index == 0 else "end" if index == len(names) - 1 else "noop"
        entry: dict[str, Any] = {"name": activity, "type": kind}
        if index < len(names) - 1:
            entry["transitions"] = {"done": names[index + 1]}
        activities.append(entry)
    return {"id": name, "activities": activities}


def signal_body(name: str) -> dict[str, Any]:
    return {
        "id": name,
        "activities": [
            {
                "name": "signal1",
                "type": "externalSignal",
                "parameters": {"n": "number"},
                "transitions": {"done": "noop1"},
            },
            {"name": "noop1", "type": "noop", "transitions": {"done": "end1"}},
            {"name": "end1", "type": "end"},
        ],
    }


def link_times(rows: Sequence[Any]) -> tuple[float, float, float, float]:
    """Where a chain's time went, ms: the first activity's wait (created -> started, the start
    command's commit and publish and the worker's pick-up included), the first hop, the
    median of the middle hops and the last hop (finished -> finished, the end finishing the
    workflow)."""
    done = sorted(rows, key=lambda row: row.finished_at)
    hops = [(b.finished_at - a.finished_at).total_seconds() * 1000 for a, b in pairwise(done)]
    start = done[0]
    waited = (start.started_at - start.created_at).total_seconds() * 1000
    return waited, hops[0], statistics.median(hops[1:-1]), hops[-1]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        epilog="On PostgreSQL a third side runs, interleaved: the durable floor, a raw Celery "
        "chain whose every task commits one row (the least any engine that records each "
        "activity's state must do); its ratio to the raw chain is printed with the others.",
    )
    parser.add_argument("--runs", type=int, default=50, help="chains of 10 per side (50)")
    parser.add_argument("--triggers", type=int, default=200, help="signal triggers (200)")
    parser.add_argument("--concurrency", type=int, default=2, help="worker processes (2)")
    parser.add_argument(
        "--poll-ms",
        type=float,
        default=POLL_MS,
        help=f"ms between checks for a finished run, both sides ({POLL_MS:g}; 0.1-1000)",
    )
    args = parser.parse_args()
    if not 0.1 <= args.poll_ms <= 1000:
        parser.error("--poll-ms must be between 0.1 and 1000")
    poll = args.poll_ms / 1000

    bench = prepare(Path(tempfile.mkdtemp(prefix="carillon-bench-")))
    from celery import chain
    from sqlalchemy import bindparam, delete, select

    from bench.app import raw_insert, raw_noop
    from worker import catalog
    from worker.models import Task, Workflow

    sessions, engine, home = bench.sessions, bench.engine, bench.home
    floored = engine.settings.database_url.startswith("postgresql")
    if floored:
        with sessions.kw["bind"].begin() as conn:
            conn.exec_driver_sql(
                "CREATE TABLE IF NOT EXISTS bench_floor (run text NOT NULL, at timestamptz)"
            )
            conn.exec_driver_sql("TRUNCATE bench_floor")
    bench.start_worker(args.concurrency)
    try:
        stamp = f"{int(time.time())}"
        with sessions() as s, s.begin():
            org = catalog.ensure_org(s, "bench")
            chain_name = catalog.save_definition(s, org, chain_body(f"chain{stamp}")).name
            signal_name = catalog.save_definition(s, org, signal_body(f"sig{stamp}")).name

        # The harness's checks run on one connection, each statement its own transaction:
        # a check through a new ORM session cost ~0.5 ms of CPU and three round trips (pool
        # ping, query, rollback) on the 2 cores the run itself needs, where the raw side's
        # check is one Redis GET.
        watch = sessions.kw["bind"].connect().execution_options(isolation_level="AUTOCOMMIT")
        workflow_state = select(Workflow.state).where(Workflow.name == bindparam("name"))
        first_started = select(Task.started_at).where(
            Task.job_id == bindparam("job_id"), Task.activity == "noop1"
        )

        def wait_finished(name: str, timeout: float = 60) -> None:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                time.sleep(poll)  # first: nothing finishes at once (see POLL_MS)
                if watch.scalar(workflow_state, {"name": name}) == "finished":
                    return
            raise SystemExit(f"{name} did not finish; see {home / 'worker.log'}")

        def engine_run() -> float:
            engine.command(None, chain_name, "start")
            wait_finished(chain_name)
            with sessions() as s:
                wf_id = s.scalar(select(Workflow.id).where(Workflow.name == chain_name))
                rows = s.execute(
                    select(Task.activity, Task.created_at, Task.started_at, Task.finished_at)
                    .where(Task.workflow_id == wf_id)
                    .order_by(Task.created_at)
                ).all()
                s.execute(delete(Task).where(Task.workflow_id == wf_id))
                s.commit()
            links.append(link_times(rows))
            first = min(r.created_at for r in rows if r.activity == "start1")
            last = max(r.finished_at for r in rows if r.activity == "end1")
            return (last - first).total_seconds() * 1000 / HOPS

        def celery_run(floor: bool = False) -> float:
            if floor:
                links = [raw_insert.si(stamp) for _ in range(HOPS)]
            else:
                links = [raw_noop.si() for _ in range(HOPS)]
            links[-1] = links[-1].set(ignore_result=False)
            published = dt.datetime.now(dt.UTC)
            result = chain(*links).apply_async()
            deadline = time.monotonic() + 60
            while True:
                time.sleep(poll)  # first, as wait_finished does
                if result.ready():
                    break
                if time.monotonic() > deadline:
                    raise SystemExit("raw chain did not finish")
            done = result.date_done
            if done.tzinfo is None:
                done = done.replace(tzinfo=dt.UTC)
            result.forget()
            return (done - published).total_seconds() * 1000 / HOPS

        # Warm up every path (connections, imports, definition caches) before measuring.
        for _ in range(3):
            engine_run()
            celery_run()
            if floored:
                celery_run(floor=True)
        engine_hops, celery_hops, floor_hops = [], [], []
        links.clear()  # the warm-up runs' are not figures
        for _ in range(args.runs):  # interleaved, so all see the same machine load
            engine_hops.append(engine_run())
            celery_hops.append(celery_run())
            if floored:
                floor_hops.append(celery_run(floor=True))

        engine.command(None, signal_name, "start")
        latencies = []
        for i in range(args.triggers + 5):
            before = dt.datetime.now(dt.UTC)
            trigger = engine.trigger(None, signal_name, "signal1", "bench", {"n": i})
            deadline = time.monotonic() + 30
            started = None
            while started is None and time.monotonic() < deadline:
                started = watch.scalar(first_started, {"job_id": trigger.job_id})
                if started is None:
                    time.sleep(poll)
            if started is None:
                raise SystemExit("a trigger never reached its first activity")
            if i >= 5:  # the first few warm the path
                latencies.append((started - before).total_seconds() * 1000)
        engine.command(None, signal_name, "stop")
        watch.close()
    finally:
        bench.stop()

    engine_hop = statistics.median(engine_hops)
    celery_hop = statistics.median(celery_hops)
    figures = {
        "engine_hop_ms": round(engine_hop, 3),
        "celery_hop_ms": round(celery_hop, 3),
        "ratio": round(engine_hop / celery_hop, 3),
        "trigger_p50_ms": round(percentile(latencies, 0.50), 3),
        "trigger_p99_ms": round(percentile(latencies, 0.99), 3),
    }
    print(f"runs: {args.runs} chains of {HOPS} per side, {args.triggers} triggers")
    print(f"engine hop  median {engine_hop:.2f} ms  (p90 {percentile(engine_hops, 0.9):.2f})")
    waited, first_hop, middle_hop, last_hop = (
        statistics.median(c) for c in zip(*links, strict=True)
    )
    print(
        f"  of which: first activity waits {waited:.2f} ms from its creation, first hop "
        f"{first_hop:.2f}, middle hops {middle_hop:.2f}, last hop (finishing) {last_hop:.2f}"
    )
    print(f"celery hop  median {celery_hop:.2f} ms  (p90 {percentile(celery_hops, 0.9):.2f})")
    print(f"ratio engine/celery {figures['ratio']:.2f}  (goal <= 1.5)")
    if floor_hops:
        floor_hop = statistics.median(floor_hops)
        print(
            f"durable floor (raw chain, one committed INSERT per task) median {floor_hop:.2f} ms:"
            f" {floor_hop / celery_hop:.2f}x the raw hop; the engine is "
            f"{engine_hop / floor_hop:.2f}x the floor"
        )
    print(
        f"trigger -> first activity p50 {figures['trigger_p50_ms']:.1f} ms, "
        f"p99 {figures['trigger_p99_ms']:.1f} ms  (goal p99 < 50)"
    )
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
