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
        messages = prerender(args.count, tag)
        bare1_s = bare_smtplib(sink.port, messages, 1)
        cpu = time.process_time()
        bare_s = bare_smtplib(sink.port, messages, args.connections)
        bare_cpu = time.process_time() - cpu
    finally:
        accepted = sink.stop()
    # The bare loops hand over exactly `count` each (no retry): the rest came from the
    # activity, so with `count` rows logged sent, nobody got a message twice or none.
    if accepted != 3 * args.count or logged != args.count:
        raise SystemExit(
            f"the sink accepted {accepted:,} messages, expected {3 * args.count:,}; "
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
    print(
        f"sink accepted {accepted:,} messages = 3 x {args.count:,} and the delivery log has "
        f"{logged:,} sent: none lost, none twice"
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
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
