"""Connectors against real loopback servers: SMTP (aiosmtpd), an HTTP provider, the file outbox."""

from __future__ import annotations

import dataclasses
import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.smtp_server import SmtpServer, _Handler, with_pipelining
from worker.channels import pipelining
from worker.channels.connectors import (
    Attachment,
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
    values: dict[str, Any] = {"subject": f"s{i}", "text": f"t{i}", **fields}
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
        connector.close()
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
        connector.connections = 4  # and over several connections: none opens, none in flight
        with pytest.raises(ConnectorError, match="cannot connect") as raised:
            connector.send([mail(i) for i in range(100)])
        connector.close()
    assert raised.value.in_flight is None and raised.value.results == []


class Gatekeeper(_Handler):
    """The test server's handler, also recording each message's connection, refusing the
    connections whose EHLO is numbered in `refuse_ehlo` (421), dropping the connection at
    RCPT of an address in `drop` (the message in flight is lost, its fate unknown),
    answering 421 at RCPT of an address in `shed` (that message fails, the client quits),
    dropping it once the content of a message to an address in `drop_data` has arrived
    (not accepted), and advertising PIPELINING when `pipelining`."""

    def __init__(
        self,
        server: SmtpServer,
        refuse_ehlo: frozenset[int] = frozenset(),
        drop: frozenset[str] = frozenset(),
        shed: frozenset[str] = frozenset(),
        drop_data: frozenset[str] = frozenset(),
        pipelining: bool = False,
    ) -> None:
        super().__init__(server)
        self.refuse_ehlo, self.drop, self.shed = refuse_ehlo, drop, shed
        self.drop_data, self.pipelining = drop_data, pipelining
        self.ehlos = 0
        self.refused: set[int] = set()
        self.peers: list[tuple[str, int]] = []  # the connection of each accepted message

    async def handle_EHLO(
        self, smtp: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        self.ehlos += 1
        if self.ehlos in self.refuse_ehlo:
            self.refused.add(id(session))
            return ["421 4.7.0 too many connections from your address"]
        session.host_name = hostname  # the hook's job when it takes over EHLO
        return with_pipelining(responses) if self.pipelining else responses

    async def handle_HELO(self, smtp: Any, session: Any, envelope: Any, hostname: str) -> str:
        if id(session) in self.refused:
            return "421 4.7.0 too many connections from your address"
        session.host_name = hostname
        return "250 localhost"

    async def handle_RCPT(
        self, smtp: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if address in self.drop:
            smtp.transport.close()
            return "250 OK"
        if address in self.shed:  # 421: the client closes this connection
            return "421 4.7.0 too busy, closing"
        return await super().handle_RCPT(smtp, session, envelope, address, options)

    async def handle_DATA(self, smtp: Any, session: Any, envelope: Any) -> str:
        if set(envelope.rcpt_tos) & self.drop_data:
            smtp.transport.close()  # the content arrived, the answer never leaves
            return "250 OK"
        self.peers.append(session.peer)
        return await super().handle_DATA(smtp, session, envelope)


@contextmanager
def gatekeeper(**options: Any) -> Iterator[tuple[SmtpServer, Gatekeeper]]:
    server = SmtpServer()
    handler = Gatekeeper(server, **options)
    server._controller.handler = handler  # before start: every session gets this handler
    with server:
        yield server, handler


def smtp(tmp_path: Path, server: SmtpServer, connections: int) -> SmtpConnector:
    return SmtpConnector(
        settings(
            tmp_path,
            smtp_host="127.0.0.1",
            smtp_port=server.port,
            smtp_connections=connections,
            connector_timeout=5.0,
        )
    )


def once_each(server: SmtpServer) -> list[str]:
    """The message ids the server received, sorted, checking none arrived twice."""
    ids = [received.message_id for received in server.messages]
    assert len(ids) == len(set(ids)), "a message arrived twice"
    return sorted(ids, key=lambda i: int(i[1:]))


def test_parallel_connections_deliver_each_message_once_in_batch_order(tmp_path: Path) -> None:
    with gatekeeper() as (server, handler):
        connector = smtp(tmp_path, server, 4)
        first = connector.send([mail(i) for i in range(200)])
        second = connector.send([mail(i) for i in range(200, 400)])
        connector.close()
        assert [r.message_id for r in first + second] == [f"m{i}" for i in range(400)]
        assert all(r.ok for r in first + second)
        assert once_each(server) == [f"m{i}" for i in range(400)]
        by_id = {received.message_id: received for received in server.messages}
        assert by_id["m321"].recipients == ("r321@example.org",)
        assert by_id["m321"].subject == "s321" and by_id["m321"].body().strip() == "t321"
        # Four connections shared both batches (kept open between them, NOOP-checked).
        assert len(set(handler.peers)) == 4 and handler.ehlos == 4
    assert connector._idle == []


def test_small_batches_use_one_connection(tmp_path: Path) -> None:
    with gatekeeper() as (server, handler):
        connector = smtp(tmp_path, server, 8)
        assert all(r.ok for r in connector.send([mail(i) for i in range(5)]))
        connector.close()
        assert once_each(server) == [f"m{i}" for i in range(5)] and handler.ehlos == 1


def test_a_connection_dropped_mid_batch_loses_only_the_message_it_was_sending(
    tmp_path: Path,
) -> None:
    with gatekeeper(drop=frozenset({"r37@example.org"})) as (server, _):
        connector = smtp(tmp_path, server, 4)
        with pytest.raises(ConnectorError, match="SMTPServerDisconnected") as raised:
            connector.send([mail(i) for i in range(100)])
        connector.close()
        others = [f"m{i}" for i in range(100) if i != 37]
        # The other connections took what the lost one did not reach.
        assert [r.message_id for r in raised.value.results] == others
        assert all(r.ok for r in raised.value.results)
        assert raised.value.in_flight == "m37"
        assert once_each(server) == others


def test_one_connection_dropped_leaves_the_rest_never_handed_over(tmp_path: Path) -> None:
    with gatekeeper(drop=frozenset({"r5@example.org"})) as (server, _):
        connector = smtp(tmp_path, server, 1)
        with pytest.raises(ConnectorError) as raised:
            connector.send([mail(i) for i in range(10)])
        connector.close()
        assert [r.message_id for r in raised.value.results] == [f"m{i}" for i in range(5)]
        assert raised.value.in_flight == "m5"
        assert once_each(server) == [f"m{i}" for i in range(5)]


def test_several_connections_lost_none_of_their_messages_is_resent(tmp_path: Path) -> None:
    with gatekeeper(drop=frozenset({"r10@example.org", "r90@example.org"})) as (server, _):
        connector = smtp(tmp_path, server, 4)
        with pytest.raises(ConnectorError) as raised:
            connector.send([mail(i) for i in range(100)])
        connector.close()
        results = {r.message_id: r for r in raised.value.results}
        lost = {"m10", "m90"}
        # Both lost messages are in flight (fate unknown): the sending pass marks them
        # `unknown` and never hands them over again; nothing else is unanswered.
        assert raised.value.in_flight_ids == lost and raised.value.in_flight in lost
        assert not lost & set(results)
        sent = [f"m{i}" for i in range(100) if f"m{i}" not in lost]
        assert [m for m, r in results.items() if r.ok] == sent
        assert once_each(server) == sent


def test_a_refused_connection_leaves_its_share_to_the_others(tmp_path: Path) -> None:
    with gatekeeper(refuse_ehlo=frozenset({2})) as (server, handler):
        connector = smtp(tmp_path, server, 4)
        results = connector.send([mail(i) for i in range(100)])
        assert [(r.message_id, r.ok) for r in results] == [(f"m{i}", True) for i in range(100)]
        assert once_each(server) == [f"m{i}" for i in range(100)]
        # A server limiting connections: the connector keeps to the three it got.
        assert connector.connections == 3 and len(set(handler.peers)) == 3
        assert all(r.ok for r in connector.send([mail(i) for i in range(100, 200)]))
        connector.close()
        assert handler.ehlos == 4 and len(set(handler.peers)) == 3  # no new connection


@pytest.mark.parametrize("pipelining", [False, True], ids=["plain", "pipelined"])
def test_a_421_fails_its_message_and_the_other_connections_send_the_rest(
    tmp_path: Path, pipelining: bool
) -> None:
    with gatekeeper(pipelining=pipelining, shed=frozenset({"r20@example.org"})) as (server, _):
        connector = smtp(tmp_path, server, 4)
        results = connector.send([mail(i) for i in range(100)])
        connector.close()
        assert [r.message_id for r in results] == [f"m{i}" for i in range(100)]
        assert [r.message_id for r in results if not r.ok] == ["m20"]
        assert results[20].reason.startswith("temporary: 421")
        assert once_each(server) == [f"m{i}" for i in range(100) if i != 20]
        assert connector.connections == 3


@pytest.mark.parametrize("pipelining", [False, True], ids=["plain", "pipelined"])
def test_a_reused_connection_the_server_closed_is_replaced(
    tmp_path: Path, pipelining: bool
) -> None:
    with gatekeeper(pipelining=pipelining) as (server, handler):
        connector = smtp(tmp_path, server, 1)
        assert connector.send([mail(0)])[0].ok
        for kept in connector._idle:
            assert kept.sock is not None
            kept.sock.shutdown(socket.SHUT_RDWR)  # as if the server had timed it out
        assert connector.send([mail(1)])[0].ok
        connector.close()
        assert once_each(server) == ["m0", "m1"] and handler.ehlos == 2


def test_email_bytes_parse_back_to_what_was_rendered(tmp_path: Path) -> None:
    long_subject = "Bonjour Zoé, voici votre offre " + "très spéciale " * 12
    with gatekeeper() as (server, _):
        connector = smtp(tmp_path, server, 1)
        results = connector.send(
            [
                mail(0, subject=long_subject, html="<p>é</p>", text="é\n.line starting with a dot"),
                mail(1, html="<p>only html</p>", text=""),
                mail(2, subject="x" * 1200, text="only text"),
                mail(3, address="zoé@example.org"),
                mail(4, sender="Zoé <z@example.org>"),
                mail(5),
            ]
        )
        connector.close()
        assert [r.ok for r in results] == [True, True, True, False, False, True]
        assert results[3].reason == results[4].reason == "invalid address: not ASCII"
        got = {received.message_id: received for received in server.messages}
        assert sorted(got) == ["m0", "m1", "m2", "m5"]
        assert got["m0"].subject == long_subject
        assert got["m0"].body() == "é\n.line starting with a dot"
        assert got["m0"].body("html") == "<p>é</p>"
        assert got["m1"].message.get_content_type() == "text/html"
        assert got["m1"].body("html") == "<p>only html</p>"
        assert got["m2"].subject == "x" * 1200 and got["m2"].body() == "only text"
        assert got["m5"].message["Message-ID"] == "<m5@localhost>"
        assert got["m5"].message["Date"] is not None


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


def test_attachments_still_go_out_through_the_email_package(tmp_path: Path) -> None:
    report = Attachment("report.pdf", "application/pdf", b"%PDF-1.4 not really")
    message = dataclasses.replace(mail(0, html="<p>see attached</p>"), attachments=(report,))
    with gatekeeper() as (server, _):
        connector = smtp(tmp_path, server, 4)
        assert connector.send([message])[0].ok
        connector.close()
        (got,) = server.messages
    (part,) = got.message.iter_attachments()
    assert part.get_filename() == "report.pdf"
    assert part.get_content() == b"%PDF-1.4 not really"
    assert got.body("html").strip() == "<p>see attached</p>" and got.message_id == "m0"


def test_smtp_connections_default_to_four_and_one_keeps_a_single_connection(
    tmp_path: Path,
) -> None:
    assert Settings.from_env({"CARILLON_HOME": str(tmp_path)}).smtp_connections == 4
    env = {"CARILLON_HOME": str(tmp_path), "CARILLON_SMTP_CONNECTIONS": "1"}
    with gatekeeper() as (server, handler):
        connector = smtp(tmp_path, server, Settings.from_env(env).smtp_connections)
        assert all(r.ok for r in connector.send([mail(i) for i in range(100)]))
        connector.close()
        assert len(set(handler.peers)) == 1 and handler.ehlos == 1


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CARILLON_SMTP_TLS", "maybe"),
        ("CARILLON_SMTP_PORT", "70000"),
        ("CARILLON_SMTP_PORT", "x"),
        ("CARILLON_SMS_URL", "file:///etc/passwd"),
        ("CARILLON_PUSH_URL", "gopher://127.0.0.1:6379/"),
        ("CARILLON_CONNECTOR_TIMEOUT", "0"),
        ("CARILLON_SMTP_CONNECTIONS", "0"),
        ("CARILLON_SMTP_CONNECTIONS", "65"),
        ("CARILLON_SMTP_CONNECTIONS", "four"),
        ("CARILLON_SMTP_CONNECTIONS", "9" * 400),
    ],
)
def test_bad_connector_settings_fail_at_startup(tmp_path: Path, name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({"CARILLON_HOME": str(tmp_path), name: value})


# ------------------------------------------------------------------ PIPELINING (RFC 2920)


def test_pipelined_connections_deliver_each_message_once_in_batch_order(tmp_path: Path) -> None:
    with gatekeeper(pipelining=True) as (server, handler):
        connector = smtp(tmp_path, server, 4)
        first = connector.send([mail(i) for i in range(200)])
        assert all(kept.has_extn("pipelining") for kept in connector._idle)
        second = connector.send([mail(i) for i in range(200, 400)])
        connector.close()
        assert [r.message_id for r in first + second] == [f"m{i}" for i in range(400)]
        assert all(r.ok for r in first + second)
        assert once_each(server) == [f"m{i}" for i in range(400)]
        by_id = {received.message_id: received for received in server.messages}
        assert by_id["m321"].recipients == ("r321@example.org",)
        assert by_id["m321"].subject == "s321" and by_id["m321"].body().strip() == "t321"
        assert len(set(handler.peers)) == 4 and handler.ehlos == 4


def test_pipelined_refusals_fail_only_their_message_and_reset_the_transaction(
    tmp_path: Path,
) -> None:
    hostile = [
        "Name <r9@example.org>",
        "r9@example.org>\r\nRCPT TO:<evil@example.org",
        "r9@example.org\nDATA",
        "two words@example.org",
        "no-at-sign",
        "x" * 300 + "@example.org",
    ]
    with SmtpServer(refuse={"r1@example.org", "r2@example.org"}, pipelining=True) as server:
        connector = SmtpConnector(settings(tmp_path, smtp_host="127.0.0.1", smtp_port=server.port))
        batch = [mail(0), mail(1), mail(2), mail(3, subject="bad\r\nBcc: x@y.org"), mail(4)]
        batch += [mail(10 + i, address=address) for i, address in enumerate(hostile)]
        batch += [mail(5, sender="s@example.org>\r\nRCPT TO:<evil@example.org"), mail(6)]
        results = connector.send(batch)
        connector.close()
    by_id = {r.message_id: r for r in results}
    assert [r.message_id for r in results] == [m.message_id for m in batch]
    assert [m for m, r in by_id.items() if r.ok] == ["m0", "m4", "m6"]
    # Two refusals in a row: each left a transaction open, RSET before the next MAIL.
    assert by_id["m1"].reason.startswith("refused: 550")
    assert by_id["m2"].reason.startswith("refused: 550")
    assert by_id["m3"].reason.startswith("invalid message")
    for i in range(len(hostile)):
        assert by_id[f"m{10 + i}"].reason.startswith("invalid address"), hostile[i]
    assert by_id["m5"].reason.startswith("invalid address")
    assert sorted(r for received in server.messages for r in received.recipients) == [
        "r0@example.org",
        "r4@example.org",
        "r6@example.org",
    ]


def test_pipelined_content_parses_back_with_dots_and_non_ascii(tmp_path: Path) -> None:
    subject = "Bonjour Zoé, voici votre offre " + "très spéciale " * 12
    text = ".starts with a dot\n..two\n.\nend é"
    with gatekeeper(pipelining=True) as (server, _):
        connector = smtp(tmp_path, server, 1)
        results = connector.send(
            [mail(0, subject=subject, html="<p>é</p>", text=text), mail(1, text=".")]
        )
        connector.close()
    assert all(r.ok for r in results)
    got = {received.message_id: received for received in server.messages}
    assert got["m0"].subject == subject and got["m0"].body() == text
    assert got["m0"].body("html") == "<p>é</p>" and got["m1"].body() == "."


def test_content_is_dot_stuffed_with_crlf_line_ends() -> None:
    assert pipelining.content(b"a\r\n.b\r\n") == b"a\r\n..b\r\n.\r\n"
    assert pipelining.content(b".x") == b"..x\r\n.\r\n"
    # Bare LF and CR (never from email_bytes) become CRLF before stuffing.
    assert pipelining.content(b"a\n.b\rc") == b"a\r\n..b\r\nc\r\n.\r\n"
    assert pipelining.content(b"") == b"\r\n.\r\n"


def test_a_pipelined_connection_dropped_at_rcpt_hands_its_message_to_another(
    tmp_path: Path,
) -> None:
    # The envelope went out without the content: never handed over, so another connection
    # takes it (with smtplib, where the dialogue is not known to be cut before the content,
    # it is left unknown). This server drops every connection at that address: the second
    # connection it ends fails it rather than passing it on until none is left.
    with gatekeeper(pipelining=True, drop=frozenset({"r37@example.org"})) as (server, _):
        connector = smtp(tmp_path, server, 4)
        results = connector.send([mail(i) for i in range(100)])
        assert connector.send([mail(i) for i in range(100, 120)])  # two connections left
        connector.close()
        assert [r.message_id for r in results] == [f"m{i}" for i in range(100)]
        assert [r.message_id for r in results if not r.ok] == ["m37"]
        assert results[37].reason.startswith("two connections failed at its envelope")
        assert once_each(server) == [f"m{i}" for i in range(120) if i != 37]


def test_a_single_pipelined_connection_dropped_at_rcpt_leaves_nothing_in_flight(
    tmp_path: Path,
) -> None:
    with gatekeeper(pipelining=True, drop=frozenset({"r5@example.org"})) as (server, _):
        connector = smtp(tmp_path, server, 1)
        with pytest.raises(ConnectorError, match="ProtocolError") as raised:
            connector.send([mail(i) for i in range(10)])
        connector.close()
    assert [r.message_id for r in raised.value.results] == [f"m{i}" for i in range(5)]
    assert raised.value.in_flight is None and not raised.value.in_flight_ids
    assert once_each(server) == [f"m{i}" for i in range(5)]


@pytest.mark.parametrize("pipelined", [True, False])
def test_a_connection_dropped_after_a_content_leaves_that_message_unknown(
    tmp_path: Path, pipelined: bool
) -> None:
    options = {"pipelining": pipelined, "drop_data": frozenset({"r37@example.org"})}
    with gatekeeper(**options) as (server, _):
        connector = smtp(tmp_path, server, 4)
        with pytest.raises(ConnectorError) as raised:
            connector.send([mail(i) for i in range(100)])
        connector.close()
        others = [f"m{i}" for i in range(100) if i != 37]
        assert raised.value.in_flight == "m37" and raised.value.in_flight_ids == {"m37"}
        assert [r.message_id for r in raised.value.results] == others
        assert all(r.ok for r in raised.value.results)
        assert once_each(server) == others


@contextmanager
def scripted_smtp(answer: bytes) -> Iterator[tuple[int, bytearray]]:
    """A one-connection server advertising PIPELINING that answers `answer` to the first
    envelope, then closes; yields its port and everything it received."""
    received = bytearray()
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(5)

    def serve() -> None:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(5)
            conn.sendall(b"220 scripted\r\n")
            try:
                for _ in range(50):  # bounded: EHLO, then the envelope up to DATA
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    received.extend(chunk)
                    if received[:4].upper() == b"EHLO" and received.count(b"\r\n") == 1:
                        conn.sendall(b"250-scripted\r\n250 PIPELINING\r\n")
                    if b"DATA\r\n" in received:
                        conn.sendall(answer)
                        return
            except OSError:
                return

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], received
    finally:
        listener.close()
        thread.join(10)


@pytest.mark.parametrize(
    "answer",
    [
        b"hello there\r\n",  # not a reply
        b"250 " + b"x" * 10_000 + b"\r\n",  # a line past smtplib's limit
        b"250-more\r\n" * 150,  # a reply that never ends
        b"25",  # cut short, then closed
        b"",  # closed without a word
    ],
)
def test_hostile_replies_to_a_pipelined_envelope_send_nothing_and_leave_nothing_in_flight(
    tmp_path: Path, answer: bytes
) -> None:
    with scripted_smtp(answer) as (port, received):
        connector = SmtpConnector(
            settings(tmp_path, smtp_host="127.0.0.1", smtp_port=port, connector_timeout=5.0)
        )
        with pytest.raises(ConnectorError) as raised:
            connector.send([mail(0)])
        connector.close()
    assert raised.value.results == [] and raised.value.in_flight is None
    assert b"MAIL FROM:<carillon@localhost>\r\nRCPT TO:<r0@example.org>\r\nDATA\r\n" in received
    assert b"\r\n.\r\n" not in received  # no content ever left


def test_read_reply_takes_multi_line_replies_and_refuses_anything_else() -> None:
    import io

    assert pipelining.read_reply(io.BytesIO(b"250-a\r\n250 b\r\n")) == (250, b"a\nb")
    for bad in (b"", b"abc\r\n", b"250-a\r\n", b"2" * 9000 + b"\r\n"):
        with pytest.raises(pipelining.ProtocolError):
            pipelining.read_reply(io.BytesIO(bad))
    assert pipelining.plain_address("a.b+c@example.org") == b"a.b+c@example.org"
    for address in ("a b@x.org", "<a@x.org>", "a@x.org\r\n", "zoé@x.org", "@x.org", "a@"):
        assert pipelining.plain_address(address) is None, address
