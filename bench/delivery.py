"""Delivery benchmark: personalised emails per second to a local SMTP server vs bare smtplib.

One email activity run in-process (the engine with the stub dispatcher, on the database of
CARILLON_DATABASE_URL, default SQLite in a temporary CARILLON_HOME) sends `--count`
personalised emails to an aiosmtpd sink running in its own process; then, in the same run,
a bare smtplib loop sends the same number of pre-rendered messages over one connection to
the same sink. Both sides pay for MIME building and the SMTP dialogue; ours adds claiming,
rendering, tracking links and per-batch commits.

Last line, JSON: {"emails_per_s", "smtplib_per_s", "ratio", "events_per_s", ...}.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import smtplib
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import ROOT
from bench.data import DataBench


def measure_events_per_s(count: int = 1000) -> float:
    """Events per second through the transactional pipeline (bench/events.py), same run."""
    from bench.events import measure_events_per_s as measure

    return round(measure(count), 1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Sink:
    """tests/smtp_server.py's counting sink in a child process."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.smtp_server", str(self.port)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        if self.process.stdout.readline().strip() != "ready":
            raise SystemExit("the SMTP sink did not start")

    def stop(self) -> int:
        """Stop it; returns how many messages it accepted."""
        self.process.terminate()
        out, _ = self.process.communicate(timeout=30)
        return int(out.strip().splitlines()[-1])


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


def bare_smtplib(port: int, count: int, tag: str) -> float:
    """Seconds for smtplib to send `count` pre-rendered messages over one connection."""
    from worker.channels.connectors import Message, build_email
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
    started = time.perf_counter()
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        for message in rendered:
            sender = "carillon@localhost"
            smtp.send_message(build_email(message, sender), sender, [message.address])
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--count", type=int, default=10_000, help="emails per side (10,000)")
    parser.add_argument("--batch", type=int, default=500, help="email batchSize (500)")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="carillon-bench-delivery-"))
    bench = DataBench(home)
    print(f"database {bench.settings.database_url}")
    sink = Sink()
    try:
        bench.engine.settings = dataclasses.replace(
            bench.settings, smtp_host="127.0.0.1", smtp_port=sink.port
        )
        tag = f"b{time.time_ns() % 10**9}"
        seed(bench, args.count, tag)
        times = bench.run(workflow(tag, args.batch))
        ours_s = times["email1"]
        bare_s = bare_smtplib(sink.port, args.count, tag)
    finally:
        accepted = sink.stop()
    if accepted != 2 * args.count:
        raise SystemExit(f"the sink accepted {accepted:,} messages, expected {2 * args.count:,}")
    ours, bare = args.count / ours_s, args.count / bare_s
    print(f"email activity: {args.count:,} personalised emails in {ours_s:.2f} s ({ours:,.0f}/s)")
    print(f"bare smtplib:   {args.count:,} pre-rendered emails in {bare_s:.2f} s ({bare:,.0f}/s)")
    events = measure_events_per_s()
    figures = {
        "emails_per_s": round(ours, 1),
        "smtplib_per_s": round(bare, 1),
        "ratio": round(ours / bare, 3),
        "events_per_s": events,
        "count": args.count,
        "batch": args.batch,
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
