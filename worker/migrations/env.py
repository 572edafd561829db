"""Alembic environment: runs migrations on the connection handed over by worker.schema."""

from __future__ import annotations

from alembic import context

from worker import marketing, messaging, models  # noqa: F401  (register their tables on Base.metadata)
from worker.db import Base
from worker.technical import tables  # noqa: F401

config = context.config
connection = config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through worker.schema.upgrade(), not the alembic CLI")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
