"""Real servers for integration tests: PostgreSQL + Redis, or the embedded default, and a
real Celery worker and beat spawned as processes (stopped by PID).

Servers come from CARILLON_TEST_DATABASE_URL / CARILLON_TEST_REDIS_URL, defaulting to the
local PostgreSQL and Redis. When they cannot be reached the tests skip, except under CI
(CI set), where they fail.
"""

from __future__ import annotations

import gc
import os
import signal
import socket
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import kombu.pools
import pytest
import redis
from celery import Celery
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url

import tests.plugins
from tests.conftest import Harness
from worker import catalog, definitions, schema
from worker.celery_app import create_celery
from worker.config import Settings
from worker.db import make_engine, make_session_factory
from worker.engine import Engine
from worker.models import Workflow
from worker.queues import CONTROL_QUEUE, QUEUES
from worker.stack import api_command, beat_command, worker_command
from worker.tasks import CeleryDispatcher

ROOT = Path(__file__).resolve().parents[2]
PG_ADMIN_URL = os.environ.get(
    "CARILLON_TEST_DATABASE_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("CARILLON_TEST_REDIS_URL", "redis://127.0.0.1:6379/12")


def unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"integration servers unavailable under CI: {reason}")
    pytest.skip(reason)


@pytest.fixture
def redis_broker(tmp_path: Path) -> Iterator[tuple[Celery, redis.Redis]]:
    """Carillon's Celery app on the test Redis (its database flushed before and after), and
    a client of that database."""
    try:
        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
        client.flushdb()
    except Exception as exc:
        unavailable(f"Redis at {REDIS_URL}: {exc}")
    settings = Settings(
        home=tmp_path, database_url="sqlite://", broker_url=REDIS_URL, result_backend=REDIS_URL
    ).resolved()
    app = create_celery(settings)
    yield app, client
    app.close()
    client.flushdb()
    client.close()


def count_new_clients(channel: Any) -> list[int]:
    """A one-element list counting the redis clients a kombu Redis `channel` creates from
    now on (kombu builds one per publish outside a batch)."""
    created = [0]
    create = channel._create_client

    def counting(*args: Any, **kwargs: Any) -> Any:
        created[0] += 1
        return create(*args, **kwargs)

    channel._create_client = counting
    return created


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Stack(Harness):
    """A harness whose engine publishes to a real broker consumed by real worker processes."""

    def __init__(self, settings: Settings, home: Path) -> None:
        self.settings = settings
        self.home = home
        self.db = make_engine(settings.database_url)
        schema.upgrade(self.db, settings.data_model)
        tests.plugins.create_tables(self.db)
        self.sessions = make_session_factory(self.db)
        self.celery = create_celery(settings)
        self.engine = Engine(
            settings, self.sessions, CeleryDispatcher(self.celery), worker_name="pytest"
        )
        self.env = {
            **os.environ,
            "CARILLON_HOME": str(home),
            "CARILLON_DATABASE_URL": settings.database_url,
            "CARILLON_BROKER_URL": settings.broker_url,
            "CARILLON_RESULT_BACKEND": settings.result_backend,
            "CARILLON_ACTIVITY_MODULES": "tests.plugins",
            "CARILLON_LEASE_SECONDS": str(settings.lease_seconds),
            "CARILLON_TICK_SECONDS": str(settings.tick_seconds),
            "CARILLON_REPUBLISH_SECONDS": str(settings.republish_seconds),
            "CARILLON_SIGNAL_MIN_INTERVAL": "0",
            "CARILLON_VISIBILITY_TIMEOUT": str(settings.visibility_timeout),
            # Data tests serve their files on loopback, which downloads refuse by default.
            "CARILLON_TRANSFER_ALLOW_HOSTS": "127.0.0.1",
            # Technical workflows fire only in the tests about them (their own beats).
            "CARILLON_TECHNICAL_WORKFLOWS": "0",
            "PYTHONPATH": str(ROOT),
        }
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def spawn(self, name: str, command: list[str], **extra_env: str) -> subprocess.Popen[bytes]:
        log = open(self.home / f"{name}.log", "ab")  # noqa: SIM115  (the child keeps it)
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env={**self.env, **extra_env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.processes[name] = process
        return process

    def start_worker(self, name: str = "w1", **extra_env: str) -> subprocess.Popen[bytes]:
        return self.spawn(name, worker_command(2, name=name), **extra_env)

    def kill(self, name: str, sig: int = signal.SIGKILL, *, group: bool = True) -> None:
        """Signal `name` and its children (`group`, as systemd's default KillMode does) or its
        main process alone (`kill $(cat pidfile)`, docker stop), then wait for it to exit."""
        process = self.processes.pop(name)
        if process.poll() is None:
            if group:
                os.killpg(process.pid, sig)
            else:
                os.kill(process.pid, sig)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:  # a warm shutdown that hangs: end it
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(15)

    def log_size(self, name: str) -> int:
        path = self.home / f"{name}.log"
        return path.stat().st_size if path.exists() else 0

    def task_errors(self, name: str, since: int) -> list[str]:
        """Lines of a worker's log, after byte `since`, where a task raised."""
        with open(self.home / f"{name}.log", "rb") as log:
            log.seek(since)
            text = log.read().decode("utf-8", "replace")
        return [line for line in text.splitlines() if "raised unexpected" in line]

    def children(self, name: str) -> list[int]:
        parent = self.processes[name].pid
        found = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == parent:
                found.append(int(stat.parent.name))
        return found

    def close(self) -> None:
        """Close every connection this process opened (warnings are errors in the tests)."""
        # Celery's group results unsubscribe from the Redis backend in __del__: let them do
        # it now, while the connections are open, then close the subscriber and the pools.
        gc.collect()
        backend = self.celery.backend
        consumer = getattr(backend, "result_consumer", None)
        if consumer is not None:
            consumer.stop()
            # A group result finalised later must find nothing to unsubscribe (it would
            # reconnect to a Redis this harness has closed).
            consumer.subscribed_to.clear()
        backend_client = getattr(backend, "client", None)
        if backend_client is not None:
            backend_client.connection_pool.disconnect()
        # kombu keeps connection pools in a global registry keyed by URL: the next stack's
        # app would get this (closed) pool back. reset() closes them and empties the registry.
        kombu.pools.reset()
        self.celery.close()
        self.db.dispose()

    def stop_all(self) -> None:
        for name in list(self.processes):
            self.kill(name, signal.SIGTERM)

    def activity_queues_drained(self) -> bool:
        """I5: no activity message left in the broker (the control queue ticks all the time)."""
        if not self.settings.broker_url.startswith("redis"):
            folder = self.settings.broker_folder / "queue"
            return not [p for p in folder.iterdir() if ".carillon.control." not in p.name]
        client = redis.Redis.from_url(self.settings.broker_url)
        try:
            return all(client.llen(q) == 0 for q in QUEUES if q != CONTROL_QUEUE)
        finally:
            client.close()

    def state(self, name: str) -> str:
        with self.sessions() as s:
            return s.scalars(select(Workflow.state).where(Workflow.name == name)).one()

    def wait_state(self, name: str, state: str, timeout: float = 60) -> None:
        wait_for(lambda: self.state(name) == state, timeout, f"{name} to be {state}")

    def save(self, body: dict[str, Any] | str, org: str = "acme") -> str:
        if isinstance(body, str):
            body = definitions.load_text(body)
        with self.sessions() as s, s.begin():
            return catalog.save_definition(s, catalog.ensure_org(s, org), body).name


def _postgres_database() -> Iterator[str]:
    try:
        admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:
        unavailable(f"PostgreSQL at {PG_ADMIN_URL}: {exc}")
    name = f"carillon_it_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _redis() -> str:
    try:
        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
        client.flushdb()
        client.close()
    except Exception as exc:
        unavailable(f"Redis at {REDIS_URL}: {exc}")
    return REDIS_URL


BACKENDS = ["postgres-redis", "embedded"]
#: The live stacks' compressed timings: leases, ticks and republishing in seconds.
LIVE_TIMINGS: dict[str, Any] = {
    "lease_seconds": 3,
    "tick_seconds": 0.3,
    "republish_seconds": 4,
    "signal_min_interval": 0,
    "visibility_timeout": 30,
}


@contextmanager
def running_stack(
    home: Path, backend: str = "postgres-redis", env: dict[str, str] | None = None, **overrides: Any
) -> Iterator[Stack]:
    """A Stack on `backend` (a fresh PostgreSQL database and the test Redis, or the embedded
    default) with a worker and beat running (`env`: extra environment for both); all stopped
    and the database dropped on exit. `overrides` replace LIVE_TIMINGS' settings."""
    values = {**LIVE_TIMINGS, **overrides}
    database: Iterator[str] | None = None
    if backend == "embedded":
        settings = Settings(home=home, **values).resolved()
    else:
        database = _postgres_database()
        url = next(database)
        broker = _redis()
        settings = Settings(
            home=home, database_url=url, broker_url=broker, result_backend=broker, **values
        ).resolved()
    built = Stack(settings, home)
    try:
        built.start_worker(**(env or {}))
        built.spawn("beat", beat_command(settings), **(env or {}))
        yield built
    finally:
        built.stop_all()
        built.close()
        if database is not None:
            built.db.dispose()
            next(database, None)


def api_healthy(base: str) -> bool:
    """True when the API at `base` answers /healthz with 200."""
    try:
        with urllib.request.urlopen(f"{base}/healthz", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_api(stack: Stack, workers: int = 1, name: str = "api", **env: str) -> str:
    """The API under gunicorn on a free loopback port, on the stack's database and broker;
    returns its base URL once it answers /healthz (stop it with `stack.kill(name)`). The
    first one ("api") also becomes the stack's CARILLON_PUBLIC_URL."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    if name == "api":
        stack.env["CARILLON_PUBLIC_URL"] = base
    stack.spawn(name, api_command("127.0.0.1", port, workers), CARILLON_PUBLIC_URL=base, **env)
    wait_for(lambda: api_healthy(base), 60, f"gunicorn ({name}) to answer /healthz")
    return base


@pytest.fixture(scope="module", params=BACKENDS)
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp(request.param), request.param) as built:
        yield built


@pytest.fixture(scope="module")
def pg_database() -> Iterator[str]:
    """A throw-away PostgreSQL database for the module, dropped at its end."""
    yield from _postgres_database()


@pytest.fixture
def pg_harness(pg_database: str, tmp_path: Path) -> Iterator[Harness]:
    """The unit-test harness (in-process stub dispatcher) on real PostgreSQL.

    For activity tests that need PostgreSQL's behaviour (COPY, unlogged tables, types)
    but not a worker process. The database is shared by the module's tests: seed rows
    under an organization of your own (`uuid` in its name) to stay independent.
    """
    settings = Settings(
        home=tmp_path,
        database_url=pg_database,
        broker_url="memory://",
        result_backend="cache+memory://",
        signal_min_interval=0,
        lease_seconds=5,
        republish_seconds=1,
    ).resolved()
    built = Harness(settings)
    try:
        yield built
    finally:
        built.db.dispose()
