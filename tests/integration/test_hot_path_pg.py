"""The engine's hot path on real PostgreSQL: a quick activity's writes folded into one
statement (complete_and_create), its fencing, and pinging only idle pooled connections."""

from __future__ import annotations

import dataclasses
import time
import uuid
from typing import Any

import pytest
from sqlalchemy import Engine, func, insert, select, text
from sqlalchemy.exc import DBAPIError

from tests.conftest import Harness
from tests.integration.statements import Statements
from worker.db import make_engine, utcnow
from worker.models import StateEvent, Task, Workflow, new_id
from worker.outage import is_outage
from worker.states import TaskState
from worker.transitions import FOLD_MAX_ROWS, TASK, claim_task, complete_and_create

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

NOOPS = 6


def chain_and_fork(name: str, branches: int) -> dict[str, Any]:
    """start -> noop1..NOOPS -> fork into `branches` noops -> each to its own end."""
    activities: list[dict[str, Any]] = [
        {"name": "start1", "type": "start", "transitions": {"done": "noop1"}}
    ]
    for index in range(1, NOOPS + 1):
        after = f"noop{index + 1}" if index < NOOPS else "fork1"
        activities.append({"name": f"noop{index}", "type": "noop", "transitions": {"done": after}})
    heads = [f"branch{i}" for i in range(branches)]
    activities.append({"name": "fork1", "type": "fork", "transitions": {"done": heads}})
    for index, head in enumerate(heads):
        end = f"end{index}"
        activities.append({"name": head, "type": "noop", "transitions": {"done": end}})
        activities.append({"name": end, "type": "end"})
    return {"id": name, "activities": activities}


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


@pytest.mark.parametrize("branches", [3, FOLD_MAX_ROWS + 2])
def test_chain_and_fork_record_every_transition_once(pg_harness: Harness, branches: int) -> None:
    # Wider than FOLD_MAX_ROWS: the fork takes the separate statements, same outcome.
    name = pg_harness.start(chain_and_fork(unique("hot"), branches), org=unique("org"))
    pg_harness.stub.drain()

    with pg_harness.sessions() as s:
        workflow = s.scalars(select(Workflow).where(Workflow.name == name)).one()
        rows = s.execute(select(Task).where(Task.workflow_id == workflow.id)).scalars().all()
        events = s.execute(
            select(StateEvent.entity_id, StateEvent.from_state, StateEvent.to_state).where(
                StateEvent.workflow_id == workflow.id, StateEvent.entity == "task"
            )
        ).all()
    assert workflow.state == "finished"
    assert len(rows) == 1 + NOOPS + 1 + 2 * branches
    assert {row.state for row in rows} == {TaskState.DONE}
    assert all(row.attempt == 1 and row.finished_at is not None for row in rows)
    by_task: dict[str, list[tuple[str | None, str]]] = {}
    for task_id, from_state, to_state in events:
        by_task.setdefault(task_id, []).append((from_state, to_state))
    expected = [(None, "pending"), ("pending", "running"), ("running", "done")]
    assert {row.id: sorted(by_task[row.id], key=str) for row in rows} == {
        row.id: sorted(expected, key=str) for row in rows
    }
    # Every successor row knows its parent, as the separate INSERTs wrote it.
    parents = {row.activity: row.parent_id for row in rows}
    ids = {row.activity: row.id for row in rows}
    assert parents["noop2"] == ids["noop1"]
    assert all(parents[f"branch{i}"] == ids["fork1"] for i in range(branches))


@pytest.mark.parametrize("prepared", [True, False], ids=["prepared", "plain"])
def test_a_quick_hop_sends_two_statements(pg_harness: Harness, prepared: bool) -> None:
    """The claim (a locking read), then the completion with the claim's columns, its successor
    and events: the regression guard of the hot path (five statements and a ping before they
    were folded; the claim was an UPDATE, a second write of the row, before it only locked).
    Prepared (the default), each is an EXECUTE of what the connection prepared once."""
    pg_harness.engine.settings = dataclasses.replace(
        pg_harness.settings, prepared_statements=prepared
    )
    name = pg_harness.start(chain_and_fork(unique("count"), 2), org=unique("org"))
    pg_harness.stub.queue.clear()  # run the links by hand, as a worker would, one at a time
    with pg_harness.sessions() as s:
        start_id = s.scalar(select(Task.id).join(Workflow).where(Workflow.name == name))
    noop1, noop2 = new_id(), new_id()
    assert pg_harness.engine.run(start_id, {"noop1": noop1}).continue_chain  # warms the caches
    with Statements(pg_harness.db) as seen:
        result = pg_harness.engine.run(noop1, {"noop2": noop2})
    assert result.status == "done" and result.continue_chain
    assert len(seen.sent) == 2, seen.sent
    claim, completion = seen.sent
    if prepared:
        assert claim.startswith("EXECUTE carillon_claim_lock(")
        assert completion.startswith("EXECUTE carillon_fold_1_3_claiming(")
        with pg_harness.db.connect() as connection:  # the pool's one connection: the same
            texts = {
                row.name: row.statement
                for row in connection.execute(
                    text("SELECT name, statement FROM pg_prepared_statements")
                )
            }
        claim, completion = texts["carillon_claim_lock"], texts["carillon_fold_1_3_claiming"]
        assert claim.startswith("PREPARE carillon_claim_lock(") and completion.startswith("PREPARE")
        claim = claim.partition(" AS ")[2]
        completion = completion.partition(" AS ")[2]
    assert claim.lstrip().startswith("SELECT task.")
    assert claim.rstrip().endswith("FOR NO KEY UPDATE OF task")
    assert completion.lstrip().startswith("WITH")
    with pg_harness.sessions() as s:
        done = s.get(Task, noop1)
        assert done is not None and done.state == TaskState.DONE and done.attempt == 1
        # The claim's columns, written by the completion's UPDATE.
        assert done.worker == "test" and done.reason is None
        assert done.started_at is not None and done.heartbeat_at == done.started_at
        assert done.finished_at is not None and done.finished_at >= done.started_at
        assert s.scalar(select(Task.state).where(Task.id == noop2)) == TaskState.PENDING


def running_task(h: Harness, org: str) -> tuple[str, int, int]:
    """A claimed (running) noop task: (task id, workflow id, attempt)."""
    name = h.start(chain_and_fork(unique("fence"), 2), org=org)
    h.stub.queue.clear()  # nothing runs: start1 stays pending for us to claim
    with h.sessions() as s, s.begin():
        workflow_id = s.scalar(select(Workflow.id).where(Workflow.name == name))
        task_id = s.scalar(select(Task.id).where(Task.workflow_id == workflow_id))
        now = utcnow()
        row = claim_task(s, task_id, now, now, "test")
        assert row is not None
    return task_id, workflow_id, row.attempt


def successor_row(workflow_id: int, job_id: str, parent_id: str) -> dict[str, Any]:
    now = utcnow()
    return {
        "id": new_id(),
        "workflow_id": workflow_id,
        "job_id": job_id,
        "parent_id": parent_id,
        "activity": "noop1",
        "activity_type": "noop",
        "version": 1,
        "state": TaskState.PENDING.value,
        "attempt": 0,
        "vars": {"quote": "it's", "nested": {"list": [1, None, "x"]}},
        "counts": {},
        "created_at": now,
        "updated_at": now,
        "fired": 0,
    }


def test_a_fenced_completion_writes_nothing(pg_harness: Harness) -> None:
    task_id, workflow_id, attempt = running_task(pg_harness, unique("org"))
    with pg_harness.sessions() as s:
        job_id = s.scalar(select(Task.job_id).where(Task.id == task_id))
    row = successor_row(workflow_id, job_id, task_id)
    with pg_harness.sessions() as s:
        done = complete_and_create(
            s,
            task_id,
            workflow_id,
            attempt + 1,  # a stale token: another attempt owns the task
            outlets=["done"],
            vars={},
            counts={},
            rows=[row],
            events=[],
        )
        assert done is False
        s.rollback()  # what the engine does on False (_Fenced)
    with pg_harness.sessions() as s:
        assert s.get(Task, row["id"]) is None
        assert s.scalar(select(Task.state).where(Task.id == task_id)) == TaskState.RUNNING
        assert not s.scalar(
            select(func.count()).where(
                StateEvent.entity_id.in_([task_id, row["id"]]), StateEvent.to_state == "done"
            )
        )


def test_the_owner_completes_with_hostile_values_intact(pg_harness: Harness) -> None:
    task_id, workflow_id, attempt = running_task(pg_harness, unique("org"))
    with pg_harness.sessions() as s:
        job_id = s.scalar(select(Task.job_id).where(Task.id == task_id))
    rows = [successor_row(workflow_id, job_id, task_id) for _ in range(2)]
    hostile = {"sql": "'); DROP TABLE task; --", "percent": "%(b_vars)s %s", "deep": [[[[{}]]]]}
    events: list[dict[str, Any]] = []
    with pg_harness.sessions() as s, s.begin():
        assert complete_and_create(
            s,
            task_id,
            workflow_id,
            attempt,
            outlets=["done"],
            vars=hostile,
            counts={"n": 1},
            rows=rows,
            events=events,
        )
        assert events == []  # written by the statement
    with pg_harness.sessions() as s:
        task = s.get(Task, task_id)
        assert task is not None and task.state == TaskState.DONE and task.vars == hostile
        created = [s.get(Task, row["id"]) for row in rows]
        assert all(c is not None and c.vars == rows[0]["vars"] for c in created)
        assert all(c is not None and c.attempt_base == 0 for c in created)  # column default
        kinds = s.execute(
            select(StateEvent.entity_id, StateEvent.to_state).where(
                StateEvent.entity_id.in_([task_id, *(row["id"] for row in rows)])
            )
        ).all()
    assert sorted(to for _id, to in kinds) == ["done", "pending", "pending", "pending", "running"]


def test_a_successor_that_already_exists_is_refused(pg_harness: Harness) -> None:
    task_id, workflow_id, attempt = running_task(pg_harness, unique("org"))
    with pg_harness.sessions() as s:
        job_id = s.scalar(select(Task.job_id).where(Task.id == task_id))
    row = successor_row(workflow_id, job_id, task_id)
    with pg_harness.sessions() as s, s.begin():
        s.execute(insert(TASK), [row])
    with pytest.raises(RuntimeError, match="already exist"), pg_harness.sessions() as s, s.begin():
        complete_and_create(
            s,
            task_id,
            workflow_id,
            attempt,
            outlets=["done"],
            vars={},
            counts={},
            rows=[row],
            events=[],
        )
    with pg_harness.sessions() as s:  # rolled back: still running
        assert s.scalar(select(Task.state).where(Task.id == task_id)) == TaskState.RUNNING


# ------------------------------------------------------------------ pinging idle connections


def backend_pid(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(text("SELECT pg_backend_pid()")).scalar_one())


def terminate(pg_database: str, pid: int) -> None:
    admin = make_engine(pg_database)
    try:
        with admin.connect() as connection:
            connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            connection.commit()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # terminated once the backend is gone
            with admin.connect() as connection:
                gone = not connection.execute(
                    text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid}
                ).scalar_one()
            if gone:
                return
            time.sleep(0.05)
        raise AssertionError(f"backend {pid} still there")
    finally:
        admin.dispose()


def test_an_idle_connection_is_pinged_and_replaced(pg_database: str) -> None:
    engine = make_engine(pg_database, ping_idle_after=0.3, pool_size=1, max_overflow=0)
    try:
        first = backend_pid(engine)
        checked_in = time.monotonic()
        terminate(pg_database, first)
        # Idle for the threshold: the condition under test, not a race being waited out.
        time.sleep(max(0.0, checked_in + 0.35 - time.monotonic()))
        assert backend_pid(engine) != first  # no error: the ping found it dead
    finally:
        engine.dispose()


def test_a_recent_connection_is_not_pinged_and_fails_as_an_outage(pg_database: str) -> None:
    engine = make_engine(pg_database, ping_idle_after=60, pool_size=1, max_overflow=0)
    try:
        first = backend_pid(engine)
        terminate(pg_database, first)
        # Checked out again within the threshold: no ping, so the first statement meets the
        # dead connection. That is an outage (the task retries with backoff), and the pool
        # recovers at once.
        with pytest.raises(DBAPIError) as failed:
            backend_pid(engine)
        assert is_outage(failed.value)
        assert backend_pid(engine) != first
    finally:
        engine.dispose()


def test_the_task_table_keeps_only_the_indexes_a_hop_must_write(pg_harness: Harness) -> None:
    """Migration 0009: no index that another one's prefix covers, and the finished_at index
    without the rows every hop inserts (unfinished)."""
    with pg_harness.db.connect() as connection:
        indexes = {
            row.indexname: row.indexdef
            for row in connection.execute(
                text("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'task'")
            )
        }
    assert "ix_task_workflow_state" not in indexes
    assert indexes["ix_task_finished"].endswith("WHERE (finished_at IS NOT NULL)")
    assert len(indexes) == 7
    with pg_harness.db.connect() as connection:
        connection.execute(text("SET enable_seqscan = off"))  # a small table: ask for the index
        plan = "\n".join(
            connection.scalars(
                text(
                    "EXPLAIN SELECT id FROM task WHERE finished_at >= now() - interval '1 hour'"
                    " ORDER BY finished_at"
                )
            )
        )
    assert "ix_task_finished" in plan  # a range still finds the partial index
