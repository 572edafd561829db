"""One thread per worker process refreshing `heartbeat_at` of the tasks it is running."""

from __future__ import annotations

import logging
import random
import threading
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from worker import dbclock
from worker.models import Task
from worker.outage import is_outage

#: Jitter from a generator of our own: a background thread drawing from the shared
#: `random` module would change its state under anyone else (Hypothesis refuses that).
_JITTER = random.Random()

log = logging.getLogger(__name__)


class Heartbeat:
    """Keeps the lease of running tasks fresh, fenced by their attempt number."""

    def __init__(self, session_factory: sessionmaker[Session], interval: float) -> None:
        self._session_factory = session_factory
        self._interval = interval
        self._running: dict[str, int] = {}
        self._progress: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def add(self, task_id: str, attempt: int) -> None:
        with self._lock:
            self._running[task_id] = attempt
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="carillon-heartbeat")
                self._thread.daemon = True
                self._thread.start()

    def discard(self, task_id: str) -> None:
        with self._lock:
            self._running.pop(task_id, None)
            self._progress.pop(task_id, None)

    def set_progress(self, task_id: str, progress: dict[str, Any]) -> None:
        """Remember a running task's progress; the next beat writes it to the task row."""
        with self._lock:
            if task_id in self._running:
                self._progress[task_id] = progress

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        failing = False
        # Jittered waits: the workers a database restart hit together do not beat together.
        while not self._stop.wait(self._interval * _JITTER.uniform(0.8, 1.0)):
            with self._lock:
                beats = list(self._running.items())
                progress = dict(self._progress)
            if not beats:
                continue
            try:
                with self._session_factory() as session, session.begin():
                    now = dbclock.now(session)  # compared with leases by other hosts
                    for task_id, attempt in beats:
                        values: dict[str, Any] = {"heartbeat_at": now}
                        if task_id in progress:
                            values["progress"] = progress[task_id]
                        session.execute(
                            update(Task)
                            .where(
                                Task.id == task_id, Task.attempt == attempt, Task.state == "running"
                            )
                            .values(**values)
                        )
            except Exception as exc:  # the database may be restarting; the next beat tries again
                if not failing:  # one line per outage, not one per beat
                    log.warning(
                        "heartbeat failed (%s); retrying",
                        type(exc).__name__,
                        exc_info=not is_outage(exc),
                    )
                failing = True
            else:
                if failing:
                    log.warning("heartbeat recovered")
                failing = False
