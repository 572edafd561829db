"""The migrations build exactly the tables the models and Core tables declare."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from worker import marketing, messaging, models, schema  # noqa: F401  (register their tables)
from worker.db import Base, make_engine
from worker.technical import tables  # noqa: F401


def test_migrations_match_the_declared_tables(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'm.sqlite'}")
    schema.upgrade(engine)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection)
        differences = compare_metadata(context, Base.metadata)
    assert differences == []


def test_messaging_tables_are_installed(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'm.sqlite'}")
    schema.upgrade(engine)
    with engine.connect() as connection:
        names = set(engine.dialect.get_table_names(connection))
    assert {"delivery", "delivery_log", "tracking_log", "message_template", "event"} <= names
    assert "validation" in names
