"""A real SMTP server on loopback for tests (aiosmtpd): what it received, optionally slowed.

`SmtpServer(delay=..., refuse={...}, pipelining=...)` starts on a free port; `.messages` is a
thread-safe snapshot of what arrived, `.count()` how many; addresses in `refuse` get a 550 at
RCPT; `pipelining=True` advertises PIPELINING (RFC 2920) as Postfix does, so the connector
pipelines its transactions (aiosmtpd reads pipelined commands in order).
"""

from __future__ import annotations

import email
import email.policy
import threading
import time
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller

#: The longest a slowed server waits per message (tests bound their runs).
MAX_DELAY = 1.0


@dataclass(frozen=True)
class Received:
    """One message as the server got it."""

    sender: str
    recipients: tuple[str, ...]
    message: EmailMessage

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    @property
    def message_id(self) -> str:
        return str(self.message["X-Carillon-Message-Id"])

    def body(self, subtype: str = "plain") -> str:
        part = self.message.get_body((subtype,))
        return "" if part is None else str(part.get_content())


def with_pipelining(responses: list[str]) -> list[str]:
    """EHLO's reply lines with PIPELINING before the last one."""
    return [*responses[:-1], "250-PIPELINING", responses[-1]]


class _Handler:
    def __init__(self, server: SmtpServer) -> None:
        self.server = server

    async def handle_EHLO(
        self, smtp: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname  # the hook's job when it takes over EHLO
        return with_pipelining(responses) if self.server.pipelining else responses

    async def handle_RCPT(
        self, smtp: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if address.lower() in self.server.refuse:
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, smtp: Any, session: Any, envelope: Any) -> str:
        if self.server.delay:
            # A slow server, so a test can kill a worker mid-batch; bounded per message.
            time.sleep(min(self.server.delay, MAX_DELAY))
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        self.server._add(Received(envelope.mail_from, tuple(envelope.rcpt_tos), parsed))
        return "250 Message accepted"


class SmtpServer:
    """Start with `start()` (or as a context manager), stop with `stop()`."""

    def __init__(
        self,
        delay: float = 0.0,
        refuse: set[str] | frozenset[str] = frozenset(),
        pipelining: bool = False,
    ):
        self.delay = delay
        self.pipelining = pipelining
        self.refuse = {address.lower() for address in refuse}
        self._lock = threading.Lock()
        self._received: list[Received] = []
        self._controller = Controller(_Handler(self), hostname="127.0.0.1", port=0)
        self.port = 0

    def start(self) -> SmtpServer:
        self._controller.port = _free_port()
        self._controller.start()
        self.port = self._controller.port
        return self

    def stop(self) -> None:
        self._controller.stop()

    def __enter__(self) -> SmtpServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _add(self, received: Received) -> None:
        with self._lock:
            self._received.append(received)

    @property
    def messages(self) -> list[Received]:
        with self._lock:
            return list(self._received)

    def count(self) -> int:
        with self._lock:
            return len(self._received)

    def clear(self) -> None:
        with self._lock:
            self._received.clear()

    def by_recipient(self) -> dict[str, list[Received]]:
        found: dict[str, list[Received]] = {}
        for received in self.messages:
            for recipient in received.recipients:
                found.setdefault(recipient, []).append(received)
        return found


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Sink:
    """Accepts every message, keeps only the count (the benchmark's server); advertises
    PIPELINING like Postfix's smtp-sink."""

    def __init__(self) -> None:
        self.accepted = 0

    async def handle_EHLO(
        self, smtp: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        return with_pipelining(responses)

    async def handle_DATA(self, smtp: Any, session: Any, envelope: Any) -> str:
        self.accepted += 1
        return "250 Message accepted"


def serve(port: int) -> None:
    """`python -m tests.smtp_server PORT`: a sink in its own process, so it does not share a
    GIL with what it measures; prints "ready", and on SIGTERM the count of messages."""
    import signal

    sink = _Sink()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    print("ready", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    controller.stop()
    print(sink.accepted, flush=True)


if __name__ == "__main__":
    import sys

    serve(int(sys.argv[1]))
