"""Per-process singletons built from the environment: settings, database, engine."""

from __future__ import annotations

import threading
from functools import cache
from pathlib import Path
from typing import Any

from sqlalchemy import Engine as SAEngine
from sqlalchemy.orm import Session, sessionmaker

from worker import registry
from worker.config import Settings
from worker.db import make_engine, make_session_factory
from worker.engine import Dispatcher, Engine

_lock = threading.Lock()
#: Worker connections are pinged at checkout only after this many idle seconds (worker.db):
#: a task's transactions follow each other within milliseconds, a ping each is one round
#: trip in every three or four of a quick activity.
PING_IDLE_AFTER = 1.0
_state: dict[str, Any] = {}


@cache
def settings() -> Settings:
    current = Settings.from_env()
    registry.load(current.activity_modules)
    return current


def db() -> SAEngine:
    with _lock:
        return _unlocked_db()


def sessions() -> sessionmaker[Session]:
    with _lock:
        if "sessions" not in _state:
            _state["sessions"] = make_session_factory(_unlocked_db())
        return _state["sessions"]


def _unlocked_db() -> SAEngine:
    if "db" not in _state:
        current = settings()
        if current.database_url.startswith("sqlite"):
            Path(current.home).mkdir(parents=True, exist_ok=True)
        _state["db"] = make_engine(current.database_url, ping_idle_after=PING_IDLE_AFTER)
    return _state["db"]


def engine(dispatcher: Dispatcher | None = None) -> Engine:
    """The process's engine; it publishes through the Celery app of worker.celery_app."""
    if "engine" not in _state:
        if dispatcher is None:
            from worker.celery_app import app
            from worker.tasks import CeleryDispatcher

            dispatcher = CeleryDispatcher(app)
        built = Engine(settings(), sessions(), dispatcher)
        with _lock:
            _state.setdefault("engine", built)
    return _state["engine"]


def reset_after_fork() -> None:
    """Forget connections inherited from a parent process (Celery prefork children)."""
    with _lock:
        found = _state.pop("db", None)
        if found is not None:
            found.dispose(close=False)
        _state.pop("sessions", None)
        _state.pop("engine", None)
