"""kpiSharing and kpiReconciliation against a real local HTTP sink and the file default."""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import update

from tests.conftest import Harness
from tests.technical import run_technical
from worker import catalog
from worker.errors import ActivityError
from worker.messaging import delivery
from worker.technical import analytics


class Sink:
    """An analytics service on loopback: keeps every POST, answers GET with the last records."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, list[dict[str, Any]]]] = []
        self.latest: dict[int, dict[str, Any]] = {}
        self.lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with sink.lock:
                    sink.posts.append((self.headers["Idempotency-Key"], body["records"]))
                    for record in body["records"]:
                        sink.latest[record["deliveryId"]] = record
                self.send_response(204)
                self.end_headers()

            def do_GET(self) -> None:
                wanted = parse_qs(urlsplit(self.path).query)["deliveryId"][0].split(",")
                with sink.lock:
                    records = [sink.latest[int(i)] for i in wanted if int(i) in sink.latest]
                payload = json.dumps({"records": records}).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def sink() -> Iterator[Sink]:
    found = Sink()
    yield found
    found.close()


def _deliveries(harness: Harness, *figures: dict[str, Any]) -> list[int]:
    with harness.sessions() as s, s.begin():
        org_id = catalog.ensure_org(s, "acme").id
        return [
            s.execute(
                delivery.insert()
                .values(org_id=org_id, channel="email", name=f"email{i}", content={}, indicators=f)
                .returning(delivery.c.id)
            ).scalar_one()
            for i, f in enumerate(figures)
        ]


def _run(harness: Harness, name: str) -> None:
    assert run_technical(harness, name) == "finished"


@pytest.fixture
def with_sink(harness: Harness, sink: Sink) -> Harness:
    harness.settings = dataclasses.replace(harness.settings, analytics_url=sink.url)
    harness.engine.settings = harness.settings
    return harness


def test_kpi_sharing_posts_changed_deliveries_to_the_connector(
    with_sink: Harness, sink: Sink
) -> None:
    first, second, _ = _deliveries(with_sink, {"sent": 10}, {"sent": 3}, {})
    _run(with_sink, "kpiSharing")
    shared = {r["deliveryId"]: r["indicators"] for _, records in sink.posts for r in records}
    assert shared == {first: {"sent": 10}, second: {"sent": 3}}  # the empty one is not sent
    key = sink.posts[0][0]
    assert key.startswith("share-")
    with with_sink.sessions() as s, s.begin():
        s.execute(update(delivery).where(delivery.c.id == first).values(indicators={"sent": 11}))
    _run(with_sink, "kpiSharing")
    assert sink.latest[first]["indicators"] == {"sent": 11}


def test_kpi_reconciliation_sends_only_what_differs(with_sink: Harness, sink: Sink) -> None:
    first, second = _deliveries(with_sink, {"sent": 10}, {"sent": 3})
    sink.latest[first] = {"deliveryId": first, "indicators": {"sent": 10}}
    sink.latest[second] = {"deliveryId": second, "indicators": {"sent": 2}}
    _run(with_sink, "kpiReconciliation")
    assert [[r["deliveryId"] for r in records] for _, records in sink.posts] == [[second]]
    assert sink.latest[second]["indicators"] == {"sent": 3}
    _run(with_sink, "kpiReconciliation")
    assert len(sink.posts) == 1  # nothing differs any more


def test_the_file_connector_is_the_default_and_plays_the_same_part(
    harness: Harness, tmp_path: Path
) -> None:
    first, second = _deliveries(harness, {"sent": 1}, {"sent": 2})
    _run(harness, "kpiSharing")
    connector = analytics.connector_for(harness.settings)
    assert isinstance(connector, analytics.FileAnalytics)
    held = connector.fetch([first, second])
    assert {i: r["indicators"] for i, r in held.items()} == {
        first: {"sent": 1},
        second: {"sent": 2},
    }
    _run(harness, "kpiReconciliation")
    lines = connector.path.read_text().splitlines()
    assert len(lines) == 1  # reconciliation found nothing to send


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "ftp://127.0.0.1/", "http://", "javascript:alert(1)"]
)
def test_a_bad_connector_url_is_refused(url: str) -> None:
    with pytest.raises(ActivityError, match="http"):
        analytics.HttpAnalytics(url)


def test_an_unreachable_or_failing_connector_fails_the_run_and_moves_no_pointer(
    harness: Harness, sink: Sink
) -> None:
    _deliveries(harness, {"sent": 1})
    url = sink.url
    sink.close()
    connector = analytics.HttpAnalytics(url)
    with pytest.raises(ActivityError, match="unreachable"), harness.sessions() as s, s.begin():
        analytics.share(s, connector)
    with harness.sessions() as s, s.begin():
        assert analytics.read_pointer(s, "kpiSharing") == 0
