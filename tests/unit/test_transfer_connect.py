"""socket.connect never reaches a non-allowed address from a transferFile activity.

Every socket.connect of the process is recorded while a workflow's transferFile runs with
hostile URLs; only the allowed test server (127.0.0.1 on its own port) may appear.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from tests.conftest import Harness
from tests.unit.test_transfer import FileServer, body, redirect
from worker import transfer
from worker.config import Settings
from worker.models import Task, Workflow
from worker.transfer import AllowList


@pytest.fixture
def server() -> Iterator[FileServer]:
    built = FileServer()
    yield built
    built.close()


@pytest.fixture
def connects(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Every address any socket of this process connects to from now on."""
    seen: list[tuple[str, int]] = []
    real = socket.socket.connect

    def recording(self: socket.socket, address: Any) -> None:
        if isinstance(address, tuple):
            seen.append((str(address[0]), int(address[1])))
        real(self, address)

    monkeypatch.setattr(socket.socket, "connect", recording)
    return seen


@pytest.fixture
def harness(tmp_path: Path, server: FileServer) -> Iterator[Harness]:
    settings = Settings(
        home=tmp_path,
        database_url=f"sqlite:///{tmp_path / 'test.sqlite'}",
        broker_url="memory://",
        result_backend="cache+memory://",
        # The test server only: its address *and* port.
        transfer_allow_hosts=(f"127.0.0.1:{server.port}",),
        transfer_timeout=3.0,
    ).resolved()
    built = Harness(settings)
    yield built
    built.db.dispose()


def run_transfer(harness: Harness, url: str, name: str) -> Any:
    harness.start(
        {
            "id": name,
            "activities": [
                {"name": "start1", "type": "start", "transitions": {"done": "get1"}},
                {
                    "name": "get1",
                    "type": "transferFile",
                    "url": url,
                    "retries": 0,
                    "transitions": {"done": "end1"},
                },
                {"name": "end1", "type": "end"},
            ],
        }
    )
    harness.stub.drain()
    return harness.query(
        select(Task.state, Task.error)
        .join(Workflow)
        .where(Workflow.name == name, Task.activity == "get1")
    )[0]


HOSTILE = [
    "http://127.0.0.1:6379/",  # Redis on loopback: the allowed address, another port
    "http://169.254.169.254/latest/meta-data/",  # cloud metadata
    "http://[::1]:5432/",  # PostgreSQL over IPv6 loopback
    "http://0x7f000001:6379/",  # loopback written in hex
    "http://2130706433:6379/",  # loopback written as one integer
    "http://017700000001:6379/",  # loopback written in octal
    "http://127.1:6379/",  # loopback, short form
    "http://[::ffff:127.0.0.1]:6379/",  # IPv4-mapped loopback
    "http://localhost:6379/",
    "http://0.0.0.0:6379/",
]


@pytest.mark.parametrize("url", HOSTILE)
def test_hostile_urls_never_connect(
    harness: Harness, server: FileServer, connects: list[tuple[str, int]], url: str
) -> None:
    state, error = run_transfer(harness, url, "hostile")

    assert state == "failed"
    assert "refused" in error or "cannot resolve" in error
    assert connects == []
    assert server.requests == []


def test_the_allowed_server_is_reached_on_its_port_only(
    harness: Harness, server: FileServer, connects: list[tuple[str, int]]
) -> None:
    server.routes["/ok.csv"] = body(b"a,b\n")

    state, _error = run_transfer(harness, server.url("/ok.csv"), "allowed")

    assert state == "done"
    assert set(connects) == {("127.0.0.1", server.port)}


@pytest.mark.parametrize(
    "target",
    [
        "http://127.0.0.1:6379/",
        "http://[::1]:6379/",
        "http://localhost:5432/",
        "http://169.254.169.254/",
        "http://0x7f000001:6379/",
    ],
)
def test_a_redirect_from_the_allowed_server_to_loopback_is_not_followed(
    harness: Harness, server: FileServer, connects: list[tuple[str, int]], target: str
) -> None:
    server.routes["/jump"] = redirect(target)

    state, error = run_transfer(harness, server.url("/jump"), "jump")

    assert state == "failed" and "refused" in error
    assert set(connects) == {("127.0.0.1", server.port)}
    assert [r["path"] for r in server.requests] == ["/jump"]


def test_dns_rebinding_to_loopback_never_connects(
    harness: Harness,
    server: FileServer,
    connects: list[tuple[str, int]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = socket.getaddrinfo

    def rebinding(host: str, port: int, *args: Any, **kwargs: Any) -> Any:
        return real("127.0.0.1", port, *args, **kwargs)  # every name is loopback now

    monkeypatch.setattr(transfer.socket, "getaddrinfo", rebinding)

    state, error = run_transfer(harness, "http://files.example.com:6379/x.csv", "rebind")

    assert state == "failed" and "resolves to 127.0.0.1" in error
    assert connects == []


def test_a_resolver_flipping_after_the_check_cannot_move_the_connection(
    harness: Harness,
    server: FileServer,
    connects: list[tuple[str, int]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # First answer: the allowed server; any later lookup would say 127.0.0.2.
    answers = iter(["127.0.0.1"])
    real = socket.getaddrinfo

    def flipping(host: str, port: int, *args: Any, **kwargs: Any) -> Any:
        return real(next(answers, "127.0.0.2"), port, *args, **kwargs)

    monkeypatch.setattr(transfer.socket, "getaddrinfo", flipping)
    server.routes["/x.csv"] = body(b"x\n")

    state, _error = run_transfer(harness, f"http://files.example.com:{server.port}/x.csv", "flip")

    assert state == "done"
    assert set(connects) == {("127.0.0.1", server.port)}


def test_allow_entries_with_a_port_allow_that_port_only() -> None:
    allow = AllowList.parse(["127.0.0.1:8443", "[::1]:9000", "files.lan:8080", "10.0.0.0/8"])
    loopback = transfer.ipaddress.ip_address("127.0.0.1")
    assert allow.covers_address(loopback, 8443)
    assert not allow.covers_address(loopback, 6379)
    assert allow.covers_address(transfer.ipaddress.ip_address("::1"), 9000)
    assert not allow.covers_address(transfer.ipaddress.ip_address("::1"), 5432)
    assert allow.covers_host("FILES.lan", 8080) and not allow.covers_host("files.lan", 22)
    assert allow.covers_address(transfer.ipaddress.ip_address("10.1.2.3"), 22)  # no port: any
