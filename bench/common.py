"""What the benchmarks share: the engine on CARILLON_* servers and a worker they spawn and stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from worker.config import Settings
from worker.engine import Engine

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Bench:
    """Settings, sessions and an engine publishing through bench.app, plus the child processes."""

    home: Path
    settings: Settings
    sessions: sessionmaker[Session]
    engine: Engine
    env: dict[str, str]
    processes: list[subprocess.Popen[bytes]]

    def start_worker(self, concurrency: int) -> None:
        from worker.queues import QUEUES

        self.spawn(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "bench.app",
                "worker",
                "-c",
                str(concurrency),
                "--loglevel",
                "WARNING",
                "--without-gossip",
                "--without-mingle",
                "-Q",
                ",".join(QUEUES),
            ],
            "worker",
        )

    def spawn(self, command: list[str], name: str) -> subprocess.Popen[bytes]:
        log = open(self.home / f"{name}.log", "wb")  # noqa: SIM115  (the child keeps it)
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.processes.append(process)
        return process

    def stop(self) -> None:
        """SIGTERM every child's process group, then SIGKILL what did not stop in 20 s."""
        for process in self.processes:
            os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


def prepare(home: Path) -> Bench:
    """Settings from CARILLON_* (the database created if missing), schema, engine; test types."""
    os.environ.setdefault("CARILLON_HOME", str(home))
    os.environ["CARILLON_ACTIVITY_MODULES"] = "tests.plugins"
    os.environ["CARILLON_SIGNAL_MIN_INTERVAL"] = "0"  # benchmarks measure, not the 10-minute rule
    settings = Settings.from_env()
    ensure_database(settings.database_url)

    import tests.plugins  # noqa: F401  (the noop activity type)
    from bench.app import app
    from worker import schema
    from worker.db import make_engine, make_session_factory
    from worker.tasks import CeleryDispatcher

    db = make_engine(settings.database_url)
    schema.upgrade(db)
    sessions = make_session_factory(db)
    engine = Engine(settings, sessions, CeleryDispatcher(app), worker_name="bench")
    print(f"database {settings.database_url}\nbroker   {settings.broker_url}")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return Bench(home, settings, sessions, engine, env, [])


def ensure_database(url: str) -> None:
    """Create the PostgreSQL database of `url` when missing (benchmarks use their own)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if not parsed.drivername.startswith("postgresql"):
        return
    admin = create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        exists = conn.execute(
            text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": parsed.database}
        ).first()
        if not exists:
            conn.execute(text(f'CREATE DATABASE "{parsed.database}"'))
    admin.dispose()
