"""Progress of long work reaches the task row through the heartbeat, fenced by the attempt."""

from __future__ import annotations

import datetime as dt
import time

from sqlalchemy import select, update

from tests.conftest import Harness
from worker.db import utcnow
from worker.heartbeat import Heartbeat
from worker.models import Task, Workflow


def _running_task(harness: Harness, workflow: str = "slow") -> str:
    harness.start(
        """
        id: WORKFLOW
        activities:
          - {name: start1, type: start, transitions: {done: effect1}}
          - {name: effect1, type: effect, transitions: {done: end1}}
          - {name: end1, type: end}
        """.replace("WORKFLOW", workflow)
    )
    with harness.sessions() as s, s.begin():
        task_id = s.execute(
            select(Task.id)
            .join(Workflow, Workflow.id == Task.workflow_id)
            .where(Workflow.name == workflow, Task.activity == "start1")
        ).scalar_one()
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
        # A task beating correctly beside it: once its heartbeat moves past this point, a
        # beat has run since the fence, and it must have skipped the fenced task.
        witness = _running_task(harness, "witness")
        beat.add(witness, 1)
        fenced_at = utcnow()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not _beat_after(harness, witness, fenced_at):
            time.sleep(0.05)
        assert _beat_after(harness, witness, fenced_at)
        assert not _progress_of(harness, task_id)
    finally:
        beat.stop()


def _beat_after(harness: Harness, task_id: str, moment: dt.datetime) -> bool:
    beat_at = harness.query(select(Task.heartbeat_at).where(Task.id == task_id))[0].heartbeat_at
    return beat_at is not None and beat_at > moment
