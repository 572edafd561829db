"""Connectors against real loopback servers: SMTP (aiosmtpd), an HTTP provider, the file outbox."""

from __future__ import annotations

import dataclasses
import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.smtp_server import SmtpServer
from worker.channels.connectors import (
    ConnectorError,
    FileConnector,
    HttpConnector,
    Message,
    SmtpConnector,
    connector_for,
    is_idempotent,
)
from worker.config import ConfigError, Settings


def settings(tmp_path: Path, **values: Any) -> Settings:
    return dataclasses.replace(Settings(home=tmp_path).resolved(), **values)


def mail(i: int, address: str | None = None, **fields: str) -> Message:
    values = {"subject": f"s{i}", "text": f"t{i}", **fields}
    return Message(message_id=f"m{i}", address=address or f"r{i}@example.org", **values)


def test_smtp_sends_a_batch_on_one_connection_and_fails_only_refused_recipients(
    tmp_path: Path,
) -> None:
    with SmtpServer(refuse={"r1@example.org"}) as server:
        connector = SmtpConnector(settings(tmp_path, smtp_host="127.0.0.1", smtp_port=server.port))
        results = connector.send(
            [mail(0, html="<p>h</p>"), mail(1), mail(2, subject="bad\r\nBcc: x@y.org")]
        )
        assert [(r.message_id, r.ok) for r in results] == [
            ("m0", True),
            ("m1", False),
            ("m2", False),
        ]
        assert results[1].reason.startswith("refused: 550")
        assert results[2].reason.startswith("invalid message")
        (got,) = server.messages
        assert got.recipients == ("r0@example.org",)
        assert got.message_id == "m0"
        assert got.message["Message-ID"] == "<m0@localhost>"
        assert got.body().strip() == "t0" and got.body("html").strip() == "<p>h</p>"
        assert "Bcc" not in str(got.message)
    assert not is_idempotent(connector)


def test_smtp_unreachable_raises_with_nothing_in_flight(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        connector = SmtpConnector(
            settings(tmp_path, smtp_host="127.0.0.1", smtp_port=port, connector_timeout=2.0)
        )
        with pytest.raises(ConnectorError) as raised:
            connector.send([mail(0)])
    assert raised.value.in_flight is None and raised.value.results == []


class Provider(BaseHTTPRequestHandler):
    """Answers by the recipient: 'refuse' 400, 'busy' 503, else 202; records every request."""

    received: list[tuple[str, dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Provider.received.append((self.headers["Idempotency-Key"], body))
        status = {"refuse": 400, "busy": 503}.get(body["to"], 202)
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def provider() -> Iterator[str]:
    Provider.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Provider)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/send"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_http_provider_gets_one_post_per_message_keyed_by_message_id(provider: str) -> None:
    connector = HttpConnector("sms", provider, 5)
    results = connector.send([mail(0, "+331"), mail(1, "refuse"), mail(2, "+332")])
    assert [(r.message_id, r.ok) for r in results] == [("m0", True), ("m1", False), ("m2", True)]
    assert [key for key, _ in Provider.received] == ["m0", "m1", "m2"]
    assert Provider.received[0][1] == {
        "messageId": "m0",
        "channel": "sms",
        "to": "+331",
        "text": "t0",
    }
    assert is_idempotent(connector)


def test_http_provider_error_raises_with_the_message_in_flight(provider: str) -> None:
    connector = HttpConnector("push", provider, 5)
    with pytest.raises(ConnectorError) as raised:
        connector.send([mail(0, "tok"), mail(1, "busy"), mail(2, "tok2")])
    assert [r.message_id for r in raised.value.results] == ["m0"]
    assert raised.value.in_flight == "m1"
    assert Provider.received[0][1]["title"] == "" and "body" in Provider.received[0][1]


def test_file_outbox_appends_one_json_line_per_message(tmp_path: Path) -> None:
    connector = connector_for("sms", settings(tmp_path))
    assert isinstance(connector, FileConnector)
    connector.send([mail(0, "+331")])
    connector.send([mail(1, "+332"), mail(2, "+333")])
    lines = (tmp_path / "outbox" / "sms.jsonl").read_text().splitlines()
    assert [json.loads(line)["to"] for line in lines] == ["+331", "+332", "+333"]


def test_connector_choice_follows_the_configuration(tmp_path: Path) -> None:
    assert isinstance(connector_for("email", settings(tmp_path)), FileConnector)
    assert isinstance(connector_for("email", settings(tmp_path, smtp_host="h")), SmtpConnector)
    assert isinstance(
        connector_for("push", settings(tmp_path, push_url="http://p/x")), HttpConnector
    )
    with pytest.raises(Exception, match="unknown channel"):
        connector_for("fax", settings(tmp_path))


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CARILLON_SMTP_TLS", "maybe"),
        ("CARILLON_SMTP_PORT", "70000"),
        ("CARILLON_SMTP_PORT", "x"),
        ("CARILLON_SMS_URL", "file:///etc/passwd"),
        ("CARILLON_PUSH_URL", "gopher://127.0.0.1:6379/"),
        ("CARILLON_CONNECTOR_TIMEOUT", "0"),
    ],
)
def test_bad_connector_settings_fail_at_startup(tmp_path: Path, name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({"CARILLON_HOME": str(tmp_path), name: value})
