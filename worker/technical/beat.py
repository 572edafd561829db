"""Celery beat entries for the technical workflows, re-reading admins' settings as they change.

Each technical workflow is one beat entry whose schedule object asks the database (at most
every `refresh` seconds) for the admin's schedule and enabled flag, so an edit takes effect at
the next tick without restarting beat. The entry's `slot` argument is computed when beat sends
it, from the schedule only; the worker's fire task keeps one fire per (name, slot).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from celery import Celery
from celery.beat import BeatLazyFunc
from celery.schedules import BaseSchedule, schedstate
from sqlalchemy import select
from sqlalchemy.orm import Session

from worker.queues import CONTROL_QUEUE
from worker.technical import timing
from worker.technical.tables import technical_setting

log = logging.getLogger(__name__)

FIRE_TASK = "carillon.technical.fire"


class _Settings:
    """The admins' settings of every technical workflow, cached for `refresh` seconds."""

    def __init__(self, sessions: Callable[[], Session] | None = None) -> None:
        #: None: the process's own database (worker.runtime), read when first needed.
        self._sessions = sessions
        self._lock = threading.Lock()
        self._read_at = float("-inf")
        self._rows: dict[str, tuple[bool, Mapping[str, Any] | None]] = {}

    def get(self, name: str, refresh: float) -> tuple[bool, Mapping[str, Any]]:
        with self._lock:
            if time.monotonic() - self._read_at >= refresh:
                self._reload()
            enabled, schedule = self._rows.get(name, (True, None))
        return enabled, schedule if schedule is not None else timing.default_options(name)

    def _reload(self) -> None:
        from worker import runtime

        sessions = self._sessions or runtime.sessions()
        try:
            with sessions() as s:
                rows = s.execute(
                    select(
                        technical_setting.c.name,
                        technical_setting.c.enabled,
                        technical_setting.c.schedule,
                    )
                ).all()
        except Exception as exc:  # database down or not migrated yet: keep what we knew
            log.warning("technical settings unavailable, keeping the last known: %s", exc)
            return
        self._rows = {name: (bool(enabled), schedule) for name, enabled, schedule in rows}
        self._read_at = time.monotonic()


SETTINGS = _Settings()


class TechnicalSchedule(BaseSchedule):
    """Due when the technical workflow's current schedule has a fire since the last run."""

    def __init__(self, name: str, refresh: float = 5.0, every_seconds: int = 0) -> None:
        super().__init__()
        self.name, self.refresh, self.every_seconds = name, refresh, every_seconds

    def __reduce__(self) -> tuple[Any, ...]:
        # Beat pickles its entries into the schedule file: keep only plain arguments.
        return (self.__class__, (self.name, self.refresh, self.every_seconds))

    def __repr__(self) -> str:
        return f"<technical {self.name}>"

    def remaining_estimate(self, last_run_at: dt.datetime) -> dt.timedelta:
        return dt.timedelta(seconds=self.refresh)

    def is_due(self, last_run_at: dt.datetime) -> schedstate:
        enabled, options = SETTINGS.get(self.name, self.refresh)
        now = dt.datetime.now(dt.UTC)
        if last_run_at.tzinfo is None:
            last_run_at = last_run_at.replace(tzinfo=dt.UTC)
        try:
            is_due, until_next = timing.due(options, last_run_at, now, self.every_seconds)
        except Exception as exc:  # a bad admin schedule must not stop the other entries
            log.warning("technical workflow %s: unusable schedule: %s", self.name, exc)
            return schedstate(False, self.refresh)
        # Re-evaluate at least every `refresh` seconds so admins' edits are seen quickly.
        next_check = self.refresh if until_next is None else min(until_next, self.refresh)
        return schedstate(is_due and enabled, max(next_check, 0.1))


def current_slot(name: str, every_seconds: int = 0) -> str:
    """The slot of a fire sent now (evaluated by beat at send time)."""
    _, options = SETTINGS.get(name, 5.0)
    return timing.slot(options, dt.datetime.now(dt.UTC), every_seconds).isoformat()


def beat_entries(refresh: float, every_seconds: int = 0) -> dict[str, dict[str, Any]]:
    """One beat entry per technical workflow of beat_schedule.py."""
    return {
        f"technical:{name}": {
            "task": FIRE_TASK,
            "schedule": TechnicalSchedule(name, refresh, every_seconds),
            "args": (name,),
            "kwargs": {"slot": BeatLazyFunc(current_slot, name, every_seconds)},
            "options": {"queue": CONTROL_QUEUE, "expires": 3600},
        }
        for name in timing.names()
    }


def register_tasks(app: Celery) -> None:
    """The worker side: fire a technical workflow for a slot, once."""

    @app.task(name=FIRE_TASK, ignore_result=True, shared=False, acks_late=True)
    def fire_technical(name: str, slot: str) -> str:
        from worker import runtime
        from worker.technical import fire

        result = fire.fire(runtime.engine(), name, dt.datetime.fromisoformat(slot))
        if result.status != "duplicate":
            log.info("technical %s slot %s: %s %s", name, slot, result.status, result.detail)
        return result.status
