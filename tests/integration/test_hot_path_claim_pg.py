"""The quick path's claim on real PostgreSQL: a locking read whose columns the completion
writes, and every other way out of the run (failure, park, long activity) taking it for real."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select, text

from tests.conftest import Harness
from worker import registry
from worker.activities.base import ActivityType, Context, Outcome
from worker.db import utcnow
from worker.errors import ActivityError
from worker.models import StateEvent, Task, Workflow, new_id
from worker.states import TaskState
from worker.transitions import FOLD_MAX_ROWS, claim_locked, claim_task, complete_and_create

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

BOOM = "hotPathBoom"


class _Boom(ActivityType):
    """A quick activity that always fails (registered by the `boom` fixture only)."""

    name = BOOM
    quick = True

    def run(self, ctx: Context) -> Outcome:
        raise ActivityError("boom: it's <b>'; DROP TABLE task; --")


@pytest.fixture
def boom() -> Iterator[str]:
    registry.load()
    registry._TYPES[BOOM] = _Boom()  # a test-only type, removed below
    try:
        yield BOOM
    finally:
        registry._TYPES.pop(BOOM, None)


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def started(h: Harness, body: dict[str, Any]) -> tuple[int, str]:
    """Start `body` without running anything: (workflow id, start1's task id)."""
    name = h.start(body, org=unique("org"))
    h.stub.queue.clear()
    with h.sessions() as s:
        workflow_id = s.scalar(select(Workflow.id).where(Workflow.name == name))
        task_id = s.scalar(select(Task.id).where(Task.workflow_id == workflow_id))
    assert workflow_id is not None and task_id is not None
    return workflow_id, task_id


def chain(*kinds: str) -> dict[str, Any]:
    names = [f"a{i}" for i in range(len(kinds))]
    activities: list[dict[str, Any]] = [
        {"name": "start1", "type": "start", "transitions": {"done": names[0]}}
    ]
    for index, (name, kind) in enumerate(zip(names, kinds, strict=True)):
        after = names[index + 1] if index + 1 < len(names) else "end1"
        activity: dict[str, Any] = {"name": name, "type": kind, "transitions": {"done": after}}
        activities.append(activity)
    activities.append({"name": "end1", "type": "end"})
    return {"id": unique("claim"), "activities": activities}


def transitions(h: Harness, task_id: str) -> list[tuple[str | None, str, int | None]]:
    with h.sessions() as s:
        rows = s.execute(
            select(StateEvent.from_state, StateEvent.to_state, StateEvent.attempt)
            .where(StateEvent.entity_id == task_id)
            .order_by(StateEvent.id)
        ).all()
    return [(r.from_state, r.to_state, r.attempt) for r in rows]


def next_task(h: Harness, workflow_id: int, activity: str) -> Task:
    with h.sessions() as s:
        task = s.scalars(
            select(Task).where(Task.workflow_id == workflow_id, Task.activity == activity)
        ).one()
    return task


def test_a_failing_quick_activity_commits_its_claim_then_fails(
    pg_harness: Harness, boom: str
) -> None:
    workflow_id, start_id = started(pg_harness, chain(boom))
    a0 = new_id()
    assert pg_harness.engine.run(start_id, {"a0": a0}).continue_chain
    result = pg_harness.engine.run(a0)
    assert result.status == "failed"
    task = next_task(pg_harness, workflow_id, "a0")
    assert task.state == TaskState.FAILED and task.attempt == 1 and task.worker == "test"
    assert task.error is not None and "DROP TABLE" in task.error
    assert sorted(transitions(pg_harness, a0), key=str) == sorted(
        [(None, "pending", None), ("pending", "running", 1), ("running", "failed", 1)], key=str
    )


def test_a_quick_activity_that_parks_takes_its_claim_first(pg_harness: Harness) -> None:
    # A validation is quick (database writes only) and parks until someone decides.
    body = {
        "id": unique("park"),
        "activities": [
            {"name": "start1", "type": "start", "transitions": {"done": "validation1"}},
            {
                "name": "validation1",
                "type": "validation",
                "subject": "it's <b>ok</b>?",
                "assignee": "alice",
                "transitions": {"approved": "end1", "rejected": "end1"},
            },
            {"name": "end1", "type": "end"},
        ],
    }
    workflow_id, start_id = started(pg_harness, body)
    assert pg_harness.engine.run(start_id, {}).status == "done"
    pending = next_task(pg_harness, workflow_id, "validation1")
    assert pending.state == TaskState.PENDING
    assert pg_harness.engine.run(pending.id).status == "done"
    task = next_task(pg_harness, workflow_id, "validation1")
    assert task.state == TaskState.WAITING and task.attempt == 1 and task.worker == "test"
    assert sorted((t[:2] for t in transitions(pg_harness, task.id)), key=str) == sorted(
        [(None, "pending"), ("pending", "running"), ("running", "waiting")], key=str
    )


def test_a_long_activity_is_claimed_for_real_before_it_runs(pg_harness: Harness) -> None:
    workflow_id, start_id = started(pg_harness, chain("effect"))
    a0 = new_id()
    assert pg_harness.engine.run(start_id, {"a0": a0}).continue_chain
    assert pg_harness.engine.run(a0).status == "done"
    task = next_task(pg_harness, workflow_id, "a0")
    assert task.state == TaskState.DONE and task.attempt == 1 and task.worker == "test"
    assert task.started_at is not None and task.heartbeat_at is not None
    assert sorted((t[:2] for t in transitions(pg_harness, a0)), key=str) == sorted(
        [(None, "pending"), ("pending", "running"), ("running", "done")], key=str
    )


def test_a_stale_running_quick_task_is_taken_over_with_the_next_attempt(
    pg_harness: Harness,
) -> None:
    workflow_id, start_id = started(pg_harness, chain("noop"))
    long_ago = utcnow().replace(year=2000)
    with pg_harness.sessions() as s, s.begin():  # a worker claimed it, then died
        assert claim_task(s, start_id, long_ago, long_ago, "dead-worker") is not None
    assert pg_harness.engine.run(start_id, {}).status == "done"
    task = next_task(pg_harness, workflow_id, "start1")
    assert task.state == TaskState.DONE and task.attempt == 2 and task.worker == "test"
    assert task.started_at is not None and task.started_at.year > 2000
    # One statement writes a hop's events: their ids need not follow the transitions' order.
    assert sorted(transitions(pg_harness, start_id), key=str) == sorted(
        [
            (None, "pending", None),
            ("pending", "running", 1),
            (None, "running", 2),
            ("running", "done", 2),
        ],
        key=str,
    )


def test_a_duplicate_message_waits_for_the_lock_then_is_skipped(pg_harness: Harness) -> None:
    workflow_id, start_id = started(pg_harness, chain("noop"))
    outcome: dict[str, Any] = {}
    with pg_harness.sessions() as s, s.begin():
        now = utcnow()
        row = claim_task(s, start_id, now, now, "first", lock_only=True)
        assert row is not None and row.attempt == 1
        backend = s.execute(text("SELECT pg_backend_pid()")).scalar_one()

        def duplicate() -> None:
            outcome["result"] = pg_harness.engine.run(start_id, {})

        thread = threading.Thread(target=duplicate, daemon=True)
        thread.start()
        # Bounded poll: the duplicate's claim is blocked on our lock, not refused at once.
        waiting = _wait_for_lock_waiter(pg_harness, backend)
        assert waiting, "the duplicate claim never waited for the lock"
        claim_locked(s, start_id, row.attempt, now, now, "first")
    thread.join(30)
    assert not thread.is_alive()
    assert outcome["result"].status == "skipped"  # running with a fresh heartbeat: not its turn
    task = next_task(pg_harness, workflow_id, "start1")
    assert task.state == TaskState.RUNNING and task.attempt == 1 and task.worker == "first"


def _wait_for_lock_waiter(h: Harness, holder: int) -> bool:
    import time

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with h.db.connect() as connection:
            blocked = connection.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE :holder = ANY(pg_blocking_pids(pid))"
                ),
                {"holder": holder},
            ).scalar_one()
        if blocked:
            return True
        time.sleep(0.01)
    return False


def test_lock_only_and_claiming_refuse_what_they_cannot_do(
    pg_harness: Harness, harness: Harness
) -> None:
    workflow_id, start_id = started(pg_harness, chain("noop"))
    with harness.sessions() as s, pytest.raises(ValueError, match="PostgreSQL"):
        claim_task(s, "any", utcnow(), utcnow(), "w", lock_only=True)
    rows = [{"id": new_id()} for _ in range(FOLD_MAX_ROWS + 1)]
    with pg_harness.sessions() as s, pytest.raises(ValueError, match="FOLD_MAX_ROWS"):
        complete_and_create(
            s,
            start_id,
            workflow_id,
            1,
            outlets=["done"],
            vars={},
            counts={},
            rows=rows,
            events=[],
            claiming=(utcnow(), "w"),
        )
    with pg_harness.sessions() as s, pytest.raises(RuntimeError, match="could not be taken"):
        # Nothing locked it (it is running already): the real claim must not pass silently.
        claim_task(s, start_id, utcnow(), utcnow(), "w")
        claim_locked(s, start_id, 1, utcnow(), utcnow(), "w")
