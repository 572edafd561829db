"""Database schema: Alembic migrations applied programmatically, once per process start."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, text

MIGRATIONS = Path(__file__).parent / "migrations"
# Any constant works: it only serialises concurrent upgrades on PostgreSQL.
_ADVISORY_LOCK = 4_717_001


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def upgrade(engine: Engine, data_model: str = "") -> None:
    """Bring the database to the latest revision, then add what CARILLON_DATA_MODEL declares.

    Safe to call from several processes.
    """
    config = alembic_config()
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ADVISORY_LOCK})
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
    if data_model:
        # Imported here: resources reads the marketing tables, which need the models loaded.
        from worker import resources

        resources.catalog_for(data_model).install(engine)
