"""Shared fixtures: an engine on a throw-away SQLite database with the stub dispatcher."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import tests.plugins
from tests.stub import StubDispatcher
from worker import catalog, definitions, schema
from worker.config import Settings
from worker.db import make_engine, make_session_factory
from worker.engine import Engine


class Harness:
    """An engine, its sessions and its stub dispatcher, with helpers for tests."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db = make_engine(settings.database_url)
        schema.upgrade(self.db, settings.data_model)
        tests.plugins.create_tables(self.db)
        self.sessions = make_session_factory(self.db)
        self.stub = StubDispatcher()
        self.engine = Engine(settings, self.sessions, self.stub, worker_name="test")
        self.stub.engine = self.engine

    def save(self, body: dict[str, Any] | str, org: str = "acme") -> str:
        if isinstance(body, str):
            body = definitions.load_text(body)
        with self.sessions() as s, s.begin():
            return catalog.save_definition(s, catalog.ensure_org(s, org), body).name

    def start(self, body: dict[str, Any] | str, org: str = "acme") -> str:
        name = self.save(body, org)
        self.engine.command(None, name, "start")
        return name

    def query(self, stmt: Any) -> Any:
        with self.sessions() as s:
            return s.execute(stmt).all()


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    settings = Settings(
        home=tmp_path,
        database_url=f"sqlite:///{tmp_path / 'test.sqlite'}",
        broker_url="memory://",
        result_backend="cache+memory://",
        signal_min_interval=0,
        lease_seconds=2,
        republish_seconds=1,
    ).resolved()
    built = Harness(settings)
    yield built
    built.db.dispose()
