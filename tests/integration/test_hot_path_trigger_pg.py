"""The trigger and start paths on real PostgreSQL: the statements a trigger sends (each one a
round trip on the way to the first activity), and a start skipping the aborts of an idle run."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, select, update

from tests.conftest import Harness
from tests.integration.statements import Statements
from worker.models import Command, Job, LogLine, StateEvent, Task, Trigger, Workflow
from worker.states import TaskState
from worker.transitions import FOLD_MAX_ROWS

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def entry_signal(name: str) -> dict[str, Any]:
    return {
        "id": name,
        "activities": [
            {
                "name": "signal1",
                "type": "externalSignal",
                "parameters": {"n": "number", "s": "string"},
                "transitions": {"done": "noop1"},
            },
            {"name": "noop1", "type": "noop", "transitions": {"done": "end1"}},
            {"name": "end1", "type": "end"},
        ],
    }


def mid_signal(name: str) -> dict[str, Any]:
    return {
        "id": name,
        "activities": [
            {"name": "start1", "type": "start", "transitions": {"done": "signal1"}},
            {
                "name": "signal1",
                "type": "externalSignal",
                "parameters": {"s": "string"},
                "transitions": {"done": "noop1"},
            },
            {"name": "noop1", "type": "noop", "transitions": {"done": "end1"}},
            {"name": "end1", "type": "end"},
        ],
    }


def events_of(h: Harness, task_id: str) -> list[tuple[str | None, str]]:
    with h.sessions() as s:
        return [
            (r.from_state, r.to_state)
            for r in s.execute(
                select(StateEvent.from_state, StateEvent.to_state).where(
                    StateEvent.entity_id == task_id
                )
            )
        ]


def test_a_trigger_sends_six_statements_and_writes_everything(pg_harness: Harness) -> None:
    """The regression guard of trigger latency (ten statements before: a separate lock, one
    INSERT per task and per event, an UPDATE of the trigger for its job id)."""
    org = unique("org")
    name = pg_harness.start(entry_signal(unique("trig")), org=org)
    engine = pg_harness.engine
    engine.trigger(None, name, "signal1", "warm", {"n": 0, "s": "x"})  # warms the caches
    hostile = "'); DROP TABLE task; -- %(n)s %s"
    with Statements(pg_harness.db) as seen:
        trigger = engine.trigger(None, name, "signal1", hostile, {"n": 1.5, "s": hostile})
    kinds = [" ".join(sent.split()[:3]) for sent in seen.sent]
    assert kinds[0] == "SELECT workflow.id, workflow.pkey,", kinds
    # The unit of work orders the last two inserts as it likes.
    assert sorted(kinds[1:]) == [
        "INSERT INTO job",
        "INSERT INTO log_line",
        "INSERT INTO state_event",
        "INSERT INTO task",
        "INSERT INTO trigger",
    ], kinds
    assert kinds.index("INSERT INTO job") < kinds.index("INSERT INTO task")  # foreign key
    assert seen.sent[0].rstrip().endswith("FOR NO KEY UPDATE")
    with pg_harness.sessions() as s:
        stored = s.get(Trigger, trigger.id)
        assert stored is not None and stored.job_id == trigger.job_id and stored.source == hostile
        tasks = {
            t.activity: t for t in s.scalars(select(Task).where(Task.job_id == trigger.job_id))
        }
        logged = s.scalars(select(LogLine.message).where(LogLine.job_id == trigger.job_id)).all()
    assert set(tasks) == {"signal1", "noop1"}
    assert tasks["signal1"].state == TaskState.DONE and tasks["signal1"].outlets == ["done"]
    assert tasks["noop1"].state == TaskState.PENDING and tasks["noop1"].vars == {
        "n": 1.5,
        "s": hostile,
    }
    assert tasks["noop1"].parent_id == tasks["signal1"].id
    assert events_of(pg_harness, tasks["signal1"].id) == [(None, "done")]
    assert events_of(pg_harness, tasks["noop1"].id) == [(None, "pending")]
    assert logged == [f"signal triggered by '{hostile}'"]
    # What it published runs to the end.
    pg_harness.stub.drain()
    with pg_harness.sessions() as s:
        ended = s.scalars(
            select(Task.state).where(Task.job_id == trigger.job_id, Task.activity == "end1")
        ).all()
    assert ended == [TaskState.DONE]


def test_a_signal_waiting_mid_graph_is_woken_with_buffered_events(pg_harness: Harness) -> None:
    name = pg_harness.start(mid_signal(unique("mid")), org=unique("org"))
    pg_harness.stub.drain()  # start1 runs, signal1 waits
    with pg_harness.sessions() as s:
        waiting = s.scalars(
            select(Task).join(Workflow).where(Workflow.name == name, Task.activity == "signal1")
        ).one()
    assert waiting.state == TaskState.WAITING
    trigger = pg_harness.engine.trigger(None, name, "signal1", "crm", {"s": "v"})
    assert trigger.job_id == waiting.job_id
    assert sorted(events_of(pg_harness, waiting.id), key=str) == sorted(
        [(None, "waiting"), ("waiting", "done")], key=str
    )
    pg_harness.stub.drain()
    with pg_harness.sessions() as s:
        states = dict(
            s.execute(select(Task.activity, Task.state).where(Task.job_id == waiting.job_id)).all()
        )
        finished = s.scalar(select(Workflow.state).where(Workflow.name == name))
    assert states == {a: TaskState.DONE for a in ("start1", "signal1", "noop1", "end1")}
    assert finished == "finished"


def start_then_end(prefix: str) -> dict[str, Any]:
    return {
        "id": unique(prefix),
        "activities": [
            {"name": "start1", "type": "start", "transitions": {"done": "end1"}},
            {"name": "end1", "type": "end"},
        ],
    }


def test_a_start_after_a_finished_run_skips_the_aborts(pg_harness: Harness) -> None:
    name = pg_harness.start(start_then_end("again"), org=unique("org"))
    pg_harness.stub.drain()
    with Statements(pg_harness.db) as seen:
        pg_harness.engine.command(None, name, "start")
    assert not [sent for sent in seen.sent if sent.lstrip().startswith("UPDATE task")]
    pg_harness.stub.drain()
    assert pg_harness.query(select(Workflow.state).where(Workflow.name == name)) == [("finished",)]


def test_a_command_is_applied_in_one_transaction(pg_harness: Harness) -> None:
    """Submitting locks the workflow once, applying once: no second transaction comes to
    look for another command (the one that applied saw whether one was pending)."""
    name = pg_harness.save(start_then_end("once"), org=unique("org"))
    with Statements(pg_harness.db) as seen:
        command = pg_harness.engine.command(None, name, "start")
    assert command.state == "applied" and command.method == "start"
    locks = [sent for sent in seen.sent if sent.rstrip().endswith("FOR NO KEY UPDATE")]
    assert len(locks) == 2  # submit, apply
    assert sum(sent.startswith("SELECT command.id") for sent in seen.sent) == 1


def test_a_restart_with_open_tasks_still_aborts_them(pg_harness: Harness) -> None:
    name = pg_harness.start(mid_signal(unique("open")), org=unique("org"))
    pg_harness.stub.drain()  # signal1 waits: an open task
    pg_harness.engine.command(None, name, "stop")
    with pg_harness.sessions() as s:
        wf = s.scalars(select(Workflow).where(Workflow.name == name)).one()
        states = s.scalars(
            select(Task.state).where(Task.workflow_id == wf.id, Task.activity == "signal1")
        ).all()
    assert wf.state == "stopped" and states == [TaskState.ABORTED]


def test_a_start_writes_its_first_task_last_with_its_event(pg_harness: Harness) -> None:
    """Only the COMMIT separates a start's first task from its publication, and the start's
    writes after its workflow's update take one statement: the job, the log line, the
    workflow's event, the task and its event (before: one statement each but the last two).
    Nothing was aborted: that COMMIT does not wait for the WAL flush."""
    name = pg_harness.save(start_then_end("last"), org=unique("org"))
    pg_harness.stub.published.clear()
    with Statements(pg_harness.db) as seen:
        command = pg_harness.engine.command(None, name, "start")
    assert command.state == "applied" and command.applied_at is not None
    sent = [statement for statement in seen.sent if not statement.startswith("PREPARE")]
    assert sent[-1].startswith("EXECUTE carillon_new_1_2_1_1_relaxed("), sent[-1]
    for table in ("task", "job", "log_line", "state_event"):
        assert not [statement for statement in sent if statement.startswith(f"INSERT INTO {table}")]
    prepared = [statement for statement in seen.sent if statement.startswith("PREPARE")]
    assert all("set_config('synchronous_commit', 'off', true)" in text for text in prepared)
    # submit: lock, pending commands, insert; apply: lock, pending, command, open tasks, the
    # definition (read once per process), workflow, then job, log line, events and task.
    assert len(sent) == 10, [" ".join(statement.split()[:3]) for statement in sent]
    assert len(pg_harness.stub.published) == 1
    with pg_harness.sessions() as s:
        start1 = s.scalars(
            select(Task).join(Workflow).where(Workflow.name == name, Task.activity == "start1")
        ).one()
        job = s.get(Job, start1.job_id)
        logged = s.scalars(select(LogLine.message).where(LogLine.job_id == start1.job_id)).all()
        workflow_events = s.execute(
            select(StateEvent.from_state, StateEvent.to_state, StateEvent.at).where(
                StateEvent.entity == "workflow", StateEvent.entity_id == str(start1.workflow_id)
            )
        ).all()
    assert job is not None and job.origin == "start" and job.version == 1 and job.vars == {}
    assert job.created_at <= start1.created_at  # the start, then its first tasks
    assert start1.state == TaskState.PENDING
    assert events_of(pg_harness, start1.id) == [(None, "pending")]
    assert logged == ["workflow started (version 1)"]
    assert [(event[0], event[1]) for event in workflow_events] == [("edition", "started")]
    pg_harness.stub.drain()
    assert pg_harness.query(select(Workflow.state).where(Workflow.name == name)) == [("finished",)]


def test_a_start_the_database_lost_is_applied_again_by_the_tick(pg_harness: Harness) -> None:
    """What a crash of PostgreSQL that loses a relaxed start leaves behind: its command pending
    (the submit committed durably), no job, task, event or log line of it, and its first
    message published. That message changes nothing; the tick applies the command again."""
    name = pg_harness.save(start_then_end("lost"), org=unique("org"))
    pg_harness.stub.published.clear()
    command = pg_harness.engine.command(None, name, "start")
    assert len(pg_harness.stub.published) == 1
    with pg_harness.sessions() as s, s.begin():  # the apply's transaction, as if never written
        workflow = s.scalars(select(Workflow).where(Workflow.name == name)).one()
        s.execute(delete(Job).where(Job.workflow_id == workflow.id))  # its tasks cascade
        s.execute(delete(LogLine).where(LogLine.workflow_id == workflow.id))
        s.execute(delete(StateEvent).where(StateEvent.workflow_id == workflow.id))
        s.execute(
            update(Workflow)
            .where(Workflow.id == workflow.id)
            .values(state="edition", running_version=None, started_at=None)
        )
        s.execute(
            update(Command).where(Command.id == command.id).values(state="pending", applied_at=None)
        )
    assert pg_harness.stub.drain() == 1  # the lost start's first message: its task is missing
    assert pg_harness.query(select(Task.id).join(Workflow).where(Workflow.name == name)) == []
    assert pg_harness.engine.tick()["commands"] == 1
    pg_harness.stub.drain()
    assert pg_harness.query(select(Workflow.state).where(Workflow.name == name)) == [("finished",)]
    assert pg_harness.query(select(Command.state).where(Command.id == command.id)) == [("applied",)]


def test_a_restart_that_aborts_waits_for_the_wal_flush(pg_harness: Harness, tmp_path: Path) -> None:
    """A start that aborted an open run commits durably: lost, the old run would go on."""
    body = {
        "id": unique("durable"),
        "onError": "suspend",
        "activities": [
            {"name": "start1", "type": "start", "transitions": {"done": "flaky1"}},
            {"name": "flaky1", "type": "effect", "failUnlessFile": str(tmp_path / "never")},
        ],
    }
    name = pg_harness.start(body, org=unique("org"))
    pg_harness.stub.drain()  # flaky1 fails: the workflow is in error, its task failed (open)
    assert pg_harness.query(select(Workflow.state).where(Workflow.name == name)) == [("error",)]
    with Statements(pg_harness.db) as seen:
        pg_harness.engine.command(None, name, "start")
    sent = [statement for statement in seen.sent if not statement.startswith("PREPARE")]
    assert sent[-1].startswith("EXECUTE carillon_new_1_"), sent[-1]
    assert "_relaxed(" not in sent[-1]
    with pg_harness.sessions() as s:
        states = s.execute(
            select(Task.activity, Task.state)
            .join(Workflow)
            .where(Workflow.name == name)
            .order_by(Task.created_at)
        ).all()
    assert [tuple(row) for row in states] == [
        ("start1", TaskState.DONE),
        ("flaky1", TaskState.ABORTED),
        ("start1", TaskState.PENDING),
    ]


def test_a_start_with_more_entries_than_one_statement_takes_writes_them_all(
    pg_harness: Harness,
) -> None:
    """More first tasks than one statement folds (FOLD_MAX_ROWS): written the usual way."""
    starts = FOLD_MAX_ROWS + 1
    body = {
        "id": unique("wide"),
        "activities": [
            *(
                {"name": f"start{i}", "type": "start", "transitions": {"done": "end1"}}
                for i in range(1, starts + 1)
            ),
            {"name": "end1", "type": "end"},
        ],
    }
    name = pg_harness.save(body, org=unique("org"))
    pg_harness.engine.command(None, name, "start")
    with pg_harness.sessions() as s:
        ids = s.scalars(
            select(Task.id).join(Workflow).where(Workflow.name == name, Task.state == "pending")
        ).all()
    assert len(ids) == starts
    assert all(events_of(pg_harness, task_id) == [(None, "pending")] for task_id in ids)
