"""A fake SMS/push provider on loopback: records every send attempt with its Idempotency-Key.

It behaves as an idempotent provider does: the first POST of a key is accepted (a message
leaves), a later POST with the same key is answered 200 again but sends nothing. `attempts`
is every request; `accepted` the messages that really left: the oracle's ground truth.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

#: Largest request body the sink reads (a provider would refuse bigger ones too).
MAX_BODY = 64 * 1024


@dataclass(frozen=True)
class Attempt:
    """One POST as the provider received it."""

    key: str
    to: str
    at: float
    replay: bool


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        length = min(int(self.headers.get("Content-Length") or 0), MAX_BODY)
        raw = self.rfile.read(length)
        try:
            body: dict[str, Any] = json.loads(raw or b"{}")
        except ValueError:
            body = {}
        key = self.headers.get("Idempotency-Key", "")
        if self.server.sink.delay:
            # A slow provider, so a scenario can strike mid-batch; bounded per message.
            time.sleep(min(self.server.sink.delay, 1.0))
        self.server.sink.record(key, str(body.get("to", "")))
        answer = json.dumps({"id": key}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the attempts list is the log."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    sink: ProviderSink


class ProviderSink:
    """Start with `start()`; `url` is what CARILLON_SMS_URL points at."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self._lock = threading.Lock()
        self._attempts: list[Attempt] = []
        self._keys: set[str] = set()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.sink = self
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/messages"

    def start(self) -> ProviderSink:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

    def record(self, key: str, to: str) -> None:
        with self._lock:
            replay = bool(key) and key in self._keys
            self._keys.add(key)
            self._attempts.append(Attempt(key, to, time.time(), replay))

    @property
    def attempts(self) -> list[Attempt]:
        with self._lock:
            return list(self._attempts)

    @property
    def accepted(self) -> list[Attempt]:
        """Messages that left the provider: first sight of each key (or no key at all)."""
        return [a for a in self.attempts if not a.replay]
