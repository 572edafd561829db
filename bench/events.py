"""Transactional events per second: POST through the API, then the pipeline to processed.

In process: the Flask test client posts the events, the pipeline function (what the
carillon.process_events task runs) delivers them in batches to a local SMTP server (aiosmtpd
on loopback), and the figure is events / (first POST -> last event processed).
`python -m bench.events [--count N]` prints it; bench/delivery.py imports
measure_events_per_s. Database: CARILLON_DATABASE_URL if set, else SQLite in a temp folder.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from sqlalchemy import func, select

from api import create_app
from worker import catalog, events
from worker.config import Settings
from worker.messaging import event


class _Sink:
    def __init__(self) -> None:
        self.received = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.received += 1
        return "250 OK"


class _NoPublish:
    """The API's dispatcher: the bench runs the pipeline itself, so nothing is published."""

    def dispatch(self, definition: Any, rows: Any, seeds: Any = None) -> None:
        raise AssertionError("no workflow runs in this bench")

    def apply_commands(self, workflow_id: int) -> None:
        raise AssertionError("no workflow runs in this bench")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def measure_events_per_s(count: int = 2000, home: Path | None = None) -> float:
    """Events per second from the first POST to the last `processed`, `count` events."""
    sink = _Sink()
    port = _free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    folder = tempfile.TemporaryDirectory(prefix="carillon-bench-events-")
    env = {
        **os.environ,
        "CARILLON_HOME": str(home or folder.name),
        "CARILLON_BROKER_URL": "memory://",
        "CARILLON_RESULT_BACKEND": "cache+memory://",
        "CARILLON_SMTP_HOST": "127.0.0.1",
        "CARILLON_SMTP_PORT": str(port),
    }
    try:
        settings = Settings.from_env(env)
        app = create_app(settings, dispatcher=_NoPublish())
        services = app.extensions["carillon"]
        with services.sessions() as s, s.begin():
            keys = catalog.create_credentials(s, f"bench{time.time_ns()}")
        org = keys["org"]
        headers = {"Authorization": f"Bearer {keys['token']}", "X-Api-Key": keys["apiKey"]}
        client = app.test_client()
        created = client.post(
            f"/{org}/campaign/messageTemplate",
            json={
                "name": "benchOrder",
                "eventType": "benchOrder",
                "content": {
                    "subject": "Order {{ ctx.orderId }}",
                    "html": '<p>Hi {{ ctx.firstName }}</p><a href="https://example.com/">o</a>',
                    "text": "Hi {{ ctx.firstName }}",
                },
            },
            headers=headers,
        )
        assert created.status_code == 201, created.json
        started = time.perf_counter()
        for n in range(count):
            response = client.post(
                f"/{org}/campaign/event/benchOrder",
                json={"email": f"u{n}@example.com", "ctx": {"firstName": f"U{n}", "orderId": n}},
                headers=headers,
            )
            assert response.status_code == 201
        for _ in range(count):  # bounded: every round processes at least one event
            if not events.process(services.sessions, services.settings).claimed:
                break
        elapsed = time.perf_counter() - started
        with services.sessions() as s:
            # This run's organization only: the bench database keeps earlier runs' events.
            org_id = catalog.org_by_name(s, org).id
            done = s.execute(
                select(func.count()).where(event.c.status == "processed", event.c.org_id == org_id)
            ).scalar_one()
        assert done == count, f"{done} of {count} processed"
        assert sink.received == count, f"the SMTP server received {sink.received}"
        services.db.dispose()
        return count / elapsed
    finally:
        controller.stop()
        folder.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000)
    args = parser.parse_args()
    rate = measure_events_per_s(args.count)
    print(f"events through POST -> processed: {rate:.0f}/s ({args.count} events)")
    print(json.dumps({"events_per_s": round(rate, 1)}))


if __name__ == "__main__":
    main()
