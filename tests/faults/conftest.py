"""Fixtures of the fault tests: private servers for the session, one stack per module.

By default the harness starts its own Redis and PostgreSQL (in a temporary folder, on free
loopback ports, with passwords) and stops them by PID. CARILLON_TEST_FAULTS_EXTERNAL=1 uses
CARILLON_TEST_DATABASE_URL / CARILLON_TEST_REDIS_URL instead, and the scenarios that restart
a server skip; under CI the private servers are always used.
"""

from __future__ import annotations

import os
import random
import secrets
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.faults.harness import TIMINGS, FaultStack, Servers
from tests.faults.servers import ExternalPostgres, ExternalRedis, PrivatePostgres, PrivateRedis
from tests.faults.sinks import ProviderSink
from tests.smtp_server import SmtpServer
from worker.config import Settings


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "faults: fault-injection scenario (tests/faults)")
    config.addinivalue_line("markers", "soak: heavier fault scenario, run by `make soak` only")


def _external() -> bool:
    return os.environ.get("CARILLON_TEST_FAULTS_EXTERNAL") == "1" and not os.environ.get("CI")


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"fault-test servers unavailable under CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def servers() -> Iterator[Servers]:
    folder = Path(tempfile.mkdtemp(prefix="carillon-faults-"))
    folder.chmod(0o711)  # the postgres user must traverse it to reach its own data dir
    redis_password, pg_password = secrets.token_hex(16), secrets.token_hex(16)
    if _external():
        redis_server: PrivateRedis = ExternalRedis(
            os.environ.get("CARILLON_TEST_REDIS_URL", "redis://127.0.0.1:6379/7")
        )
        pg: PrivatePostgres = ExternalPostgres(
            os.environ.get(
                "CARILLON_TEST_DATABASE_URL",
                "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres",
            )
        )
    else:
        if not shutil.which("redis-server") or not Path("/usr/lib/postgresql").is_dir():
            _unavailable("redis-server or PostgreSQL binaries are not installed")
        redis_server = PrivateRedis(folder / "redis", redis_password)
        pg = PrivatePostgres(folder / "postgres", pg_password)
    # Advertising PIPELINING as Postfix does: the faults hit the connector's production path.
    smtp = SmtpServer(pipelining=True).start()
    sink = ProviderSink().start()
    built = Servers(redis_server, pg, smtp, sink, secrets=[redis_password, pg_password])
    try:
        try:
            if not _external():
                pg.init()
                pg.start()
                redis_server.start()
        except Exception as exc:
            _unavailable(f"could not start the private servers: {exc}")
        yield built
    finally:
        sink.stop()
        smtp.stop()
        redis_server.stop()
        pg.destroy()
        shutil.rmtree(folder, ignore_errors=True)


def _database(pg: PrivatePostgres) -> Iterator[str]:
    name = f"carillon_faults_{uuid.uuid4().hex[:10]}"
    admin = create_engine(pg.url(), isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        yield pg.url(name)
    finally:
        try:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        finally:
            admin.dispose()


@pytest.fixture(scope="module")
def stack(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultStack]:
    """API, worker w1 and beat on a fresh database of the private PostgreSQL."""
    home = tmp_path_factory.mktemp("faults")
    database = _database(servers.pg)
    url = next(database)
    if isinstance(servers.redis, ExternalRedis):
        servers.redis.client().flushdb()
    else:
        servers.redis.client().flushall()
    secret_key = secrets.token_urlsafe(32)
    servers.secrets.append(secret_key)
    settings = Settings(
        home=home,
        database_url=url,
        broker_url=servers.redis.url,
        result_backend=servers.redis.url,
        secret_key=secret_key,
        **TIMINGS,  # type: ignore[arg-type]
    ).resolved()
    built = FaultStack(settings, home, servers)
    try:
        built.start_all()
        yield built
    finally:
        try:
            built.ensure_servers()
        finally:
            built.stop_all()
            built.close()
            next(database, None)


@pytest.fixture
def live(stack: FaultStack) -> FaultStack:
    """The module's stack with every server and process up (an earlier fault may have left
    one down), its API history and outage windows reset for this scenario."""
    stack.ensure_running()
    stack.history.clear()
    stack.outages.clear()
    client = stack.servers.redis.client()
    try:
        stack.unacked_baseline = {
            tag if isinstance(tag, bytes) else tag.encode() for tag in client.hkeys("unacked")
        }
    finally:
        client.close()
    return stack


def require_restartable(stack: FaultStack) -> None:
    if not (stack.servers.redis.restartable and stack.servers.pg.restartable):
        pytest.skip("CARILLON_TEST_FAULTS_EXTERNAL=1: the harness does not restart servers")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """`fault_seed`: CARILLON_FAULT_SEEDS (comma-separated; default 1, `make soak` 1,2,3)."""
    if "fault_seed" in metafunc.fixturenames:
        raw = os.environ.get("CARILLON_FAULT_SEEDS", "1")
        seeds = [int(part) for part in raw.split(",") if part.strip()]
        metafunc.parametrize("fault_seed", seeds, ids=[f"seed{s}" for s in seeds])


@pytest.fixture
def rng(fault_seed: int, request: pytest.FixtureRequest) -> random.Random:
    """The scenario's randomness: its seed and its name with its parameters (scenarios, and
    the variants of one, share a database)."""
    return random.Random(f"{fault_seed}:{request.node.name}")
