"""Seeded hops through a real Celery worker on PostgreSQL + Redis: each link of a chain takes
the one-statement path from the seed the previous link put in its message (worker.canvas
seed_next), the last one finishing the workflow, and the rows are those of the usual path."""

from __future__ import annotations

import signal
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from tests.integration.conftest import running_stack, wait_for
from worker.models import StateEvent, Task, Workflow
from worker.stack import worker_command

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

NOOPS = 6


def noop_chain(name: str) -> dict[str, Any]:
    names = [f"noop{i}" for i in range(1, NOOPS + 1)]
    activities: list[dict[str, Any]] = [
        {"name": "start1", "type": "start", "transitions": {"done": names[0]}}
    ]
    for index, activity in enumerate(names):
        after = names[index + 1] if index + 1 < len(names) else "end1"
        activities.append({"name": activity, "type": "noop", "transitions": {"done": after}})
    activities.append({"name": "end1", "type": "end"})
    return {"id": name, "activities": activities}


def test_a_chain_on_a_real_worker_takes_seeded_hops(tmp_path: Path) -> None:
    with running_stack(tmp_path, "postgres-redis") as stack:
        # One worker that says, at DEBUG, which hops were seeded.
        stack.kill("w1", signal.SIGTERM, group=False)
        command = worker_command(2, name="debug")
        command[command.index("--loglevel") + 1] = "DEBUG"
        stack.spawn("debug", command)
        runs = 3
        names = [f"seeded{uuid.uuid4().hex[:8]}" for _ in range(runs)]
        for name in names:
            stack.save(noop_chain(name))
            stack.engine.command(None, name, "start")
        for name in names:
            stack.wait_state(name, "finished", timeout=60)
        with stack.sessions() as s:
            ids = s.scalars(select(Workflow.id).where(Workflow.name.in_(names))).all()
            tasks = s.execute(
                select(Task.activity, Task.state, Task.attempt).where(Task.workflow_id.in_(ids))
            ).all()
            events = s.scalar(
                select(func.count())
                .select_from(StateEvent)
                .where(StateEvent.workflow_id.in_(ids), StateEvent.entity == "task")
            )
        assert len(tasks) == runs * (NOOPS + 2)
        assert {(t.state, t.attempt) for t in tasks} == {("done", 1)}
        assert events == 3 * len(tasks)  # created, claimed, done: once each
        # start1 got its seed from the start command, each noop and end1 from the link before
        # (end1's seeded hop finishes the workflow in the same round trip).
        log = stack.home / "debug.log"
        expected = runs * (2 + NOOPS)
        wait_for(lambda: log.read_text().count(": seeded hop") >= expected, 10, "the log")
        assert log.read_text().count(": seeded hop") == expected
