"""Delivery benchmark: personalised emails per second to a local SMTP sink vs bare smtplib.

One email activity runs in-process (the engine with the stub dispatcher, in this process: one
worker's worth of work, on the database of CARILLON_DATABASE_URL, default SQLite in a
temporary CARILLON_HOME) and sends `--count` personalised emails over `--connections` SMTP
connections (CARILLON_SMTP_CONNECTIONS) to a sink in its own process: Postfix's C smtp-sink
when installed (`make bench` installs it), else the aiosmtpd one of tests/smtp_server.py.
Then, in the same run and to the same sink, a bare smtplib loop sends as many pre-rendered
messages over one connection, and again over the same number of parallel connections
(threads), so the ratio compares like with like. Both sides build the MIME message and do
the SMTP dialogue (with the connector's serialiser, `email_bytes`); ours adds claiming,
rendering, tracking links and per-batch commits.

Last line, JSON: {"emails_per_s", "smtplib_per_s", "ratio", "events_per_s", ...}; `ratio`
is ours over the bare loop with as many connections, `ratio_1` over the one-connection loop.
On a shared machine the wall-clock rates follow the load; `cpu_us_per_email` (this process's
CPU time per message, user + system: the sink is another process) and `smtplib_cpu_us_per_email`
(the same of the bare loop with as many connections) say what a message costs, and
`emails_per_cpu_s` what one free core would give.

With PostgreSQL and Redis (CARILLON_BROKER_URL), the same run then sends `--count` more
through a real worker it spawns (`celery worker -c 2`: the delivery's batches spread over
both pool processes, worker.channels.delivery_batch) and adds `worker_emails_per_s`,
`worker_ratio` (over the bare loop with as many connections), `worker_over_in_process` and
`worker_cpu_us_per_email` (the worker's processes' CPU for the workflow, per message);
`--no-worker` skips it. The sink must then have accepted 4 x count.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import smtplib
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.data import DataBench
from bench.smtp_sink import Sink, describe
from worker.channels.connectors import Message


def measure_events_per_s(count: int = 1000) -> float:
    """Events per second through the transactional pipeline (bench/events.py), same run."""
    from bench.events import measure_events_per_s as measure

    return round(measure(count), 1)


def seed(bench: DataBench, count: int, tag: str) -> None:
    from sqlalchemy import insert

    from worker.marketing import profile

    rows = [
        {
            "org_id": bench.org_id,
            "crmId": f"{tag}-{i}",
            "email": f"user{i}.{tag}@example.org",
            "firstName": f"First{i}",
            "city": "Lyon",
            "segmentCode": tag,
        }
        for i in range(count)
    ]
    with bench.sessions() as s, s.begin():
        for start in range(0, count, 5000):
            s.execute(insert(profile), rows[start : start + 5000])


CONTENT = {
    "subject": "Hello {{ profile.firstName }}",
    "html": (
        "<html><body><p>Dear {{ profile.firstName }} of {{ profile.city }},</p>"
        '<p><a href="https://example.org/offer?u={{ profile.firstName }}">our offer</a></p>'
        "</body></html>"
    ),
    "text": "Dear {{ profile.firstName }} of {{ profile.city }}: https://example.org/offer",
}


def workflow(tag: str, batch: int) -> dict[str, Any]:
    return {
        "id": "benchmail",
        "activities": [
            {"name": "start1", "type": "start", "transitions": {"done": "query1"}},
            {
                "name": "query1",
                "type": "query",
                "filter": {"field": "segmentCode", "op": "eq", "value": tag},
                "transitions": {"result": "email1"},
            },
            {
                "name": "email1",
                "type": "email",
                **CONTENT,
                "batchSize": batch,
                "transitions": {"done": "end1"},
            },
            {"name": "end1", "type": "end"},
        ],
    }


def sent_rows(bench: DataBench) -> int:
    """Delivery log rows `sent` in the benchmark's organisation (its own, made for the run)."""
    from sqlalchemy import func, select

    from worker.messaging import delivery_log

    query = select(func.count()).where(
        delivery_log.c.org_id == bench.org_id, delivery_log.c.status == "sent"
    )
    with bench.sessions() as s:
        return int(s.execute(query).scalar_one())


def prerender(count: int, tag: str) -> list[Message]:
    """The bare loops' messages, rendered from the same templates before the clock starts."""
    from worker.channels.templates import compile_content

    content = compile_content(CONTENT)
    rendered = []
    for i in range(count):
        fields = content.render(
            {"profile": {"firstName": f"First{i}", "city": "Lyon"}, "vars": {"code": ""}}
        )
        rendered.append(
            Message(
                f"bare-{tag}-{i}",
                f"user{i}.{tag}@example.org",
                fields["subject"],
                fields["html"],
                fields["text"],
            )
        )
    return rendered


def bare_smtplib(port: int, messages: Sequence[Message], connections: int) -> float:
    """Seconds for smtplib to send `messages`, split over `connections` threads each with its
    own connection (opened inside the clock, as the connector does)."""
    from worker.channels.connectors import email_bytes

    errors: list[BaseException] = []

    def loop(share: Sequence[Message]) -> None:
        sender = "carillon@localhost"
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
                for message in share:
                    smtp.sendmail(sender, [message.address], email_bytes(message, sender))
        except BaseException as exc:  # reported after the join: a short count fails the run
            errors.append(exc)

    size = -(-len(messages) // connections)
    shares = [messages[i : i + size] for i in range(0, len(messages), size)]
    threads = [threading.Thread(target=loop, args=(share,)) for share in shares]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise SystemExit(f"bare smtplib failed: {errors[0]!r}")
    return elapsed


def group_cpu_s(pgid: int) -> float:
    """CPU seconds (user + system) of the live processes of a process group (a worker and
    its pool processes)."""
    ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        if int(fields[2]) == pgid:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def wait_ready(app: Any, timeout: float = 60) -> None:
    """Until the worker answers a ping (its pool processes forked)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if app.control.ping(timeout=0.5):
            return
    raise SystemExit(f"the worker did not answer within {timeout:.0f} s")


def through_worker(
    bench: DataBench, home: Path, port: int, count: int, batch: int, connections: int
) -> tuple[float, float] | None:
    """Seconds of the email activity run by a real worker (prefork, 2 pool processes) on the
    same database, its batches spread over both processes, and the worker's CPU seconds for
    the workflow; None without PostgreSQL and Redis (the batches need both). From the
    query's end to the email activity's end, as the database recorded them: publishing,
    coordinating and waking included."""
    settings = bench.settings
    if not (
        settings.database_url.startswith("postgresql") and settings.broker_url.startswith("redis")
    ):
        print("worker run skipped: it needs CARILLON_DATABASE_URL on PostgreSQL and Redis")
        return None
    from sqlalchemy import select

    from bench.common import prepare
    from worker import catalog
    from worker.models import Task, Workflow

    os.environ.update(
        CARILLON_SMTP_HOST="127.0.0.1",
        CARILLON_SMTP_PORT=str(port),
        CARILLON_SMTP_CONNECTIONS=str(connections),
    )
    (home / "worker").mkdir(exist_ok=True)
    runner = prepare(home / "worker")
    tag = f"w{time.time_ns() % 10**9}"
    seed(bench, count, tag)
    body = workflow(tag, batch)
    body["id"] = f"benchworker{tag}"
    runner.start_worker(2)
    from bench.app import app

    try:
        wait_ready(app)
        pgid = runner.processes[-1].pid  # spawned in a session of its own: its group id
        cpu = group_cpu_s(pgid)
        with bench.sessions() as s, s.begin():
            name = catalog.save_definition(s, catalog.ensure_org(s, bench.org_name), body).name
        runner.engine.command(None, name, "start")
        deadline = time.monotonic() + 600
        state = ""
        while time.monotonic() < deadline:
            with bench.sessions() as s:
                state = s.scalars(select(Workflow.state).where(Workflow.name == name)).one()
            if state in ("finished", "stopped", "error"):
                break
            runner.engine.tick()  # the beat's job: wakes a parked coordinator that is due
            time.sleep(0.2)
        cpu = group_cpu_s(pgid) - cpu
        if state != "finished":
            raise SystemExit(f"worker run: the workflow is {state or 'unknown'}")
        with bench.sessions() as s:
            ends = dict(
                s.execute(
                    select(Task.activity, Task.finished_at)
                    .join(Workflow, Workflow.id == Task.workflow_id)
                    .where(Workflow.name == name)
                ).all()
            )
        return float((ends["email1"] - ends["query1"]).total_seconds()), cpu
    finally:
        runner.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--count", type=int, default=10_000, help="emails per side (10,000)")
    parser.add_argument("--batch", type=int, default=500, help="email batchSize (500)")
    parser.add_argument(
        "--connections",
        type=int,
        default=int(os.environ.get("CARILLON_SMTP_CONNECTIONS") or 4),
        help="SMTP connections of the engine and of the parallel bare loop "
        "(CARILLON_SMTP_CONNECTIONS, else 4)",
    )
    parser.add_argument(
        "--worker",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run the email activity through a real worker, 2 pool processes "
        "(PostgreSQL and Redis only; default on)",
    )
    args = parser.parse_args()
    if not 1 <= args.connections <= 64:
        parser.error("--connections must be between 1 and 64")
    if not 1 <= args.count <= 1_000_000:
        parser.error("--count must be between 1 and 1,000,000")

    home = Path(tempfile.mkdtemp(prefix="carillon-bench-delivery-"))
    bench = DataBench(home)
    print(f"database {bench.settings.database_url}")
    print(describe())
    print(f"load average before: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}")
    sink = Sink()
    try:
        bench.engine.settings = dataclasses.replace(
            bench.settings,
            smtp_host="127.0.0.1",
            smtp_port=sink.port,
            smtp_connections=args.connections,
        )
        tag = f"b{time.time_ns() % 10**9}"
        seed(bench, args.count, tag)
        from worker import registry

        registry.load()  # the activity modules imported before the CPU clock starts
        cpu = time.process_time()
        times = bench.run(workflow(tag, args.batch))
        # The whole workflow's CPU (saving it, start, query, end: a few ms): an upper bound.
        ours_cpu = time.process_time() - cpu
        ours_s = times["email1"]
        logged = sent_rows(bench)
        worker_s = worker_cpu = None
        if args.worker:
            measured = through_worker(
                bench, home, sink.port, args.count, args.batch, args.connections
            )
            if measured is not None:
                worker_s, worker_cpu = measured
            logged_all = sent_rows(bench)
            expected_all = args.count * (2 if worker_s is not None else 1)
            if logged_all != expected_all:
                raise SystemExit(f"{logged_all:,} rows sent in all, expected {expected_all:,}")
        messages = prerender(args.count, tag)
        bare1_s = bare_smtplib(sink.port, messages, 1)
        cpu = time.process_time()
        bare_s = bare_smtplib(sink.port, messages, args.connections)
        bare_cpu = time.process_time() - cpu
    finally:
        accepted = sink.stop()
    # The bare loops hand over exactly `count` each (no retry): the rest came from the
    # activity, so with `count` rows logged sent, nobody got a message twice or none.
    sides = 4 if worker_s is not None else 3
    if accepted != sides * args.count or logged != args.count:
        raise SystemExit(
            f"the sink accepted {accepted:,} messages, expected {sides * args.count:,}; "
            f"the delivery log has {logged:,} sent, expected {args.count:,}"
        )
    ours, bare1, bare = args.count / ours_s, args.count / bare1_s, args.count / bare_s
    n = args.connections
    for label, seconds, what in (
        (f"email activity ({n} conn.)", ours_s, "personalised emails"),
        ("bare smtplib (1 conn.)", bare1_s, "pre-rendered emails"),
        (f"bare smtplib ({n} conn.)", bare_s, "pre-rendered emails"),
    ):
        rate = args.count / seconds
        print(f"{label:<26} {args.count:,} {what} in {seconds:.2f} s ({rate:,.0f}/s)")
    if worker_s is not None:
        rate = args.count / worker_s
        label = f"worker -c 2 ({n} conn.)"
        print(f"{label:<26} {args.count:,} personalised emails in {worker_s:.2f} s ({rate:,.0f}/s)")
    print(
        f"sink accepted {accepted:,} messages = {sides} x {args.count:,} and the delivery log "
        f"has {logged:,} sent: none lost, none twice"
    )
    events = measure_events_per_s()
    figures = {
        "emails_per_s": round(ours, 1),
        "smtplib_per_s": round(bare, 1),
        "ratio": round(ours / bare, 3),
        "smtplib_1_per_s": round(bare1, 1),
        "ratio_1": round(ours / bare1, 3),
        "events_per_s": events,
        "cpu_us_per_email": round(ours_cpu / args.count * 1e6, 1),
        "smtplib_cpu_us_per_email": round(bare_cpu / args.count * 1e6, 1),
        "emails_per_cpu_s": round(args.count / ours_cpu, 1),
        "connections": n,
        "count": args.count,
        "batch": args.batch,
        "sink": sink.kind,
        "load_average": round(os.getloadavg()[0], 2),
    }
    if worker_s is not None:
        figures["worker_emails_per_s"] = round(args.count / worker_s, 1)
        figures["worker_ratio"] = round(args.count / worker_s / bare, 3)
        figures["worker_over_in_process"] = round(ours_s / worker_s, 3)
        figures["worker_cpu_us_per_email"] = round((worker_cpu or 0) / args.count * 1e6, 1)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
