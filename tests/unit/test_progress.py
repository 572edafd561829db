"""Progress of long work reaches the task row through the heartbeat, fenced by the attempt."""

from __future__ import annotations

import time

from sqlalchemy import select, update

from tests.conftest import Harness
from worker.heartbeat import Heartbeat
from worker.models import Task


def _running_task(harness: Harness) -> str:
    harness.start(
        """
        id: slow
        activities:
          - {name: start1, type: start, transitions: {done: effect1}}
          - {name: effect1, type: effect, transitions: {done: end1}}
          - {name: end1, type: end}
        """
    )
    with harness.sessions() as s, s.begin():
        task_id = s.execute(select(Task.id).where(Task.activity == "start1")).scalar_one()
        s.execute(update(Task).where(Task.id == task_id).values(state="running", attempt=1))
    return task_id


def _progress_of(harness: Harness, task_id: str) -> object:
    return harness.query(select(Task.progress).where(Task.id == task_id))[0].progress


def _poll(harness: Harness, task_id: str, seconds: float) -> object:
    """The task's progress once written, or None after `seconds` (bounded polling)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = _progress_of(harness, task_id)
        if found:
            return found
        time.sleep(0.05)
    return None


def test_reported_progress_is_written_by_the_next_beat(harness: Harness) -> None:
    task_id = _running_task(harness)
    beat = Heartbeat(harness.sessions, 0.1)
    try:
        beat.add(task_id, 1)
        beat.set_progress(task_id, {"done": 500, "total": 1000, "unit": "lines"})

        assert _poll(harness, task_id, 10) == {"done": 500, "total": 1000, "unit": "lines"}
    finally:
        beat.stop()


def test_progress_of_a_stale_attempt_is_not_written(harness: Harness) -> None:
    task_id = _running_task(harness)
    beat = Heartbeat(harness.sessions, 0.1)
    try:
        beat.add(task_id, 7)  # the row is at attempt 1: this execution was fenced off
        beat.set_progress(task_id, {"done": 1, "total": None, "unit": "records"})
        with harness.sessions() as s, s.begin():
            s.execute(update(Task).where(Task.id == task_id).values(attempt=7))
        # Once the attempts agree the next beat writes: proof that earlier beats ran and
        # were fenced, not skipped.
        assert _poll(harness, task_id, 10) == {"done": 1, "total": None, "unit": "records"}
        with harness.sessions() as s, s.begin():
            s.execute(update(Task).where(Task.id == task_id).values(attempt=8, progress=None))
        beat.set_progress(task_id, {"done": 2, "total": None, "unit": "records"})
        time_of_fence = time.monotonic()
        while time.monotonic() - time_of_fence < 0.5:  # five beat intervals, bounded
            assert not _progress_of(harness, task_id)
            time.sleep(0.05)
    finally:
        beat.stop()
