"""Dead tasks and requeue, the attempt cap, and database outages inside a task (SQLite)."""

from __future__ import annotations

import datetime as dt
import sqlite3
from typing import Any

import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import select, update

from tests.conftest import Harness
from worker.activities.base import ActivityType, Context, Outcome
from worker.errors import CommandRefused
from worker.models import LogLine, StateEvent, Task, Workflow
from worker.outage import full_jitter, is_outage
from worker.registry import register
from worker.states import TASK_TRANSITIONS, TaskState
from worker.tasks import DB_RETRIES, outage_countdown

#: Raised by the `flaky` activity while set: a database that went away mid-run.
OUTAGES: list[Exception] = []


@register
class Flaky(ActivityType):
    """Raises the queued database error once per run, else succeeds."""

    name = "flakyDb"

    def run(self, ctx: Context) -> Outcome:
        if OUTAGES:
            raise OUTAGES.pop(0)
        return Outcome(vars={"flaky": ctx.attempt})


#: What the `stoppedMidRun` activity does while it runs: commands on its own workflow, then
#: "raise" or "done".
MID_RUN: dict[str, Any] = {"commands": [], "then": "done"}


@register
class StoppedMidRun(ActivityType):
    """Sends commands to its own workflow while running (an operator's stop racing it)."""

    name = "stoppedMidRun"

    def run(self, ctx: Context) -> Outcome:
        for method in MID_RUN["commands"]:
            ENGINES[-1].command(None, "chain", method)
        if MID_RUN["then"] == "raise":
            raise RuntimeError("sending stopped halfway")
        return Outcome(vars={"late": True})


#: The engine the running activity commands (set by the test).
ENGINES: list[Any] = []


def chain(kind: str = "noop", name: str = "chain") -> dict[str, Any]:
    return {
        "id": name,
        "activities": [
            {"name": "start1", "type": "start", "transitions": {"done": "a1"}},
            {"name": "a1", "type": kind, "transitions": {"done": "end1"}},
            {"name": "end1", "type": "end"},
        ],
    }


def task(harness: Harness, task_id: str) -> Any:
    return harness.query(
        select(Task.id, Task.state, Task.attempt, Task.attempt_base, Task.error).where(
            Task.id == task_id
        )
    )[0]


def workflow_state(harness: Harness, name: str = "chain") -> str:
    return str(harness.query(select(Workflow.state).where(Workflow.name == name))[0][0])


def lose_worker(harness: Harness, task_id: str) -> None:
    """The task's worker died mid-run: running, its heartbeat older than the lease."""
    stale = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=60)
    with harness.sessions() as s, s.begin():
        s.execute(
            update(Task)
            .where(Task.id == task_id)
            .values(state="running", attempt=Task.attempt + 1, heartbeat_at=stale)
        )


def up_to_a1(harness: Harness, kind: str = "effect", name: str = "chain") -> str:
    """Start the chain and run start1 only: a1 is pending, its message dropped."""
    harness.start(chain(kind, name))
    start1 = harness.query(
        select(Task.id).join(Workflow).where(Workflow.name == name, Task.activity == "start1")
    )[0][0]
    harness.stub.queue.clear()
    assert harness.engine.run(start1).status == "done"
    harness.stub.queue.clear()
    return str(
        harness.query(
            select(Task.id).join(Workflow).where(Workflow.name == name, Task.activity == "a1")
        )[0][0]
    )


def kill_until_dead(harness: Harness, task_id: str) -> int:
    """Lose the worker of every attempt until the reaper gives up; returns the reaps."""
    reaps = 0
    for _ in range(harness.settings.max_attempts + 2):  # bounded: the cap must stop it first
        lose_worker(harness, task_id)
        harness.stub.queue.clear()
        reaps += harness.engine.tick()["reaped"]
        if task(harness, task_id).state == "dead":
            return reaps
    raise AssertionError("the task never went dead")


# ------------------------------------------------------------------ dead and requeue


def test_a_task_losing_its_worker_max_attempts_times_goes_dead_and_the_workflow_errors(
    harness: Harness,
) -> None:
    a1_id = up_to_a1(harness)

    reaps = kill_until_dead(harness, a1_id)

    row = task(harness, a1_id)
    cap = harness.settings.max_attempts
    assert (row.state, row.attempt, reaps) == ("dead", cap, cap)
    assert f"attempts {cap}/{cap}" in row.error and "poison" in row.error
    assert workflow_state(harness) == "error"
    errors = [m for (m,) in harness.query(select(LogLine.message).where(LogLine.level == "error"))]
    assert any(f"attempts {cap}/{cap}" in m for m in errors)
    assert any("workflow suspended in error" in m for m in errors)


def test_a_message_for_a_dead_task_is_acked_and_ignored(harness: Harness) -> None:
    a1_id = up_to_a1(harness)
    kill_until_dead(harness, a1_id)

    # A redelivery (reject_on_worker_lost, visibility timeout) finds nothing to run.
    assert harness.engine.run(a1_id).status == "skipped"
    assert task(harness, a1_id).state == "dead"


def test_a_stale_running_task_at_the_cap_is_not_taken_over_by_a_redelivery(
    harness: Harness,
) -> None:
    a1_id = up_to_a1(harness)
    stale = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=60)
    with harness.sessions() as s, s.begin():
        s.execute(
            update(Task)
            .where(Task.id == a1_id)
            .values(state="running", attempt=harness.settings.max_attempts, heartbeat_at=stale)
        )

    assert harness.engine.run(a1_id).status == "skipped"
    assert task(harness, a1_id).attempt == harness.settings.max_attempts
    harness.engine.tick()
    assert task(harness, a1_id).state == "dead"


def test_requeue_resets_the_attempts_and_runs_the_task_to_the_end(harness: Harness) -> None:
    a1_id = up_to_a1(harness)
    kill_until_dead(harness, a1_id)
    harness.stub.queue.clear()

    assert harness.engine.requeue(a1_id) == "pending"

    row = task(harness, a1_id)
    cap = harness.settings.max_attempts
    assert (row.state, row.attempt_base, row.error) == ("pending", cap, None)
    assert workflow_state(harness) == "started"
    harness.stub.drain()
    row = task(harness, a1_id)
    # The fencing token goes on from where it was: attempt cap + 1.
    assert (row.state, row.attempt) == ("done", cap + 1)
    assert workflow_state(harness) == "finished"


def test_after_a_requeue_the_task_gets_the_full_cap_again(harness: Harness) -> None:
    a1_id = up_to_a1(harness)
    kill_until_dead(harness, a1_id)
    harness.engine.requeue(a1_id)

    reaps = kill_until_dead(harness, a1_id)

    assert reaps == harness.settings.max_attempts
    assert task(harness, a1_id).attempt == 2 * harness.settings.max_attempts


def test_only_a_dead_task_can_be_requeued(harness: Harness) -> None:
    a1_id = up_to_a1(harness)
    with pytest.raises(CommandRefused, match="only a dead task"):
        harness.engine.requeue(a1_id)


def test_resume_runs_a_dead_task_again_with_its_attempts_reset(harness: Harness) -> None:
    a1_id = up_to_a1(harness)
    kill_until_dead(harness, a1_id)
    harness.stub.queue.clear()

    harness.engine.command(None, "chain", "resume")
    harness.stub.drain()

    assert task(harness, a1_id).state == "done"
    assert workflow_state(harness) == "finished"


def test_stop_aborts_a_dead_task_and_skip_passes_it(harness: Harness) -> None:
    a1_id = up_to_a1(harness)
    kill_until_dead(harness, a1_id)
    harness.engine.command(None, "chain", "stop")
    assert task(harness, a1_id).state == "aborted"

    other = up_to_a1(harness, name="other")
    lose = harness.settings.max_attempts
    for _ in range(lose):
        lose_worker(harness, other)
        harness.stub.queue.clear()
        harness.engine.tick()
    harness.engine.skip(other)
    harness.stub.drain()
    assert workflow_state(harness, "other") == "finished"


def test_dead_moves_are_allowed_transitions_only(harness: Harness) -> None:
    a1_id = up_to_a1(harness)
    kill_until_dead(harness, a1_id)
    harness.engine.requeue(a1_id)
    harness.stub.drain()

    moves = harness.query(
        select(StateEvent.from_state, StateEvent.to_state).where(StateEvent.entity_id == a1_id)
    )
    for from_state, to_state in moves:
        if from_state is not None:
            assert TaskState(to_state) in TASK_TRANSITIONS[TaskState(from_state)]
    assert ("running", "dead") in moves and ("dead", "pending") in moves


def test_explain_says_a_dead_task_waits_for_a_requeue(harness: Harness) -> None:
    a1_id = up_to_a1(harness)
    kill_until_dead(harness, a1_id)
    assert "requeue" in harness.engine.explain(a1_id)


# ------------------------------------------------------------------ database outages


def _operational(message: str, orig: Exception | None = None) -> sa_exc.OperationalError:
    return sa_exc.OperationalError("SELECT 1", {}, orig or Exception(message))


def test_a_database_outage_during_an_activity_does_not_fail_it(harness: Harness) -> None:
    a1_id = up_to_a1(harness, "flakyDb")
    OUTAGES.append(_operational("server closed the connection unexpectedly"))

    with pytest.raises(sa_exc.OperationalError):
        harness.engine.run(a1_id)

    # Not failed: back to pending, the lost attempt forgiven; the retried message runs it.
    row = task(harness, a1_id)
    assert (row.state, row.attempt, row.attempt_base, row.error) == ("pending", 1, 1, None)
    assert workflow_state(harness) == "started"
    assert harness.engine.run(a1_id).status == "done"
    harness.stub.drain()
    assert workflow_state(harness) == "finished"


def test_a_real_error_still_fails_the_activity(harness: Harness) -> None:
    a1_id = up_to_a1(harness, "flakyDb")
    OUTAGES.append(_operational("no such table", sqlite3.OperationalError("no such table: x")))

    assert harness.engine.run(a1_id).status == "failed"

    assert task(harness, a1_id).state == "failed"
    assert workflow_state(harness) == "error"


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (_operational("could not connect to server: Connection refused"), True),
        (sa_exc.DisconnectionError("gone"), True),
        (sa_exc.TimeoutError("QueuePool limit reached"), True),
        (sa_exc.InterfaceError("SELECT 1", {}, Exception("connection already closed")), True),
        (_operational("", sqlite3.OperationalError("database is locked")), True),
        (_operational("", sqlite3.OperationalError("no such table: task")), False),
        (sa_exc.IntegrityError("INSERT", {}, Exception("duplicate key")), False),
        (ValueError("boom"), False),
    ],
)
def test_outages_are_told_from_real_errors(error: Exception, expected: bool) -> None:
    assert is_outage(error) is expected


def test_backoff_is_full_jitter_bounded_by_the_cap() -> None:
    for retries in range(40):
        delay = full_jitter(retries, 0.5, 30.0)
        assert 0 <= delay <= min(30.0, 0.5 * 2**retries)
    # Two workers retrying together do not come back together.
    assert len({round(full_jitter(6, 0.5, 30.0), 6) for _ in range(20)}) > 1


def test_task_countdowns_stay_well_under_the_visibility_timeout() -> None:
    for retries in range(DB_RETRIES):
        assert outage_countdown(retries, 3600) <= 30.0
        assert outage_countdown(retries, 30) <= 3.0


# ------------------------------------------------------------ stop races a running task


@pytest.mark.parametrize("then", ["raise", "done"])
def test_a_stop_fences_out_the_running_task_whatever_it_ends_with(
    harness: Harness, then: str
) -> None:
    """F14: the execution a stop overtook neither fails into the error policy nor completes
    into successors: its task is aborted, its attempt moved on."""
    ENGINES[:] = [harness.engine]
    MID_RUN.update(commands=["stop"], then=then)
    a1_id = up_to_a1(harness, kind="stoppedMidRun")
    claimed = task(harness, a1_id).attempt + 1  # the claim takes the next attempt

    assert harness.engine.run(a1_id).status == "fenced"

    row = task(harness, a1_id)
    assert (row.state, row.attempt, row.error) == ("aborted", claimed + 1, None)
    assert workflow_state(harness) == "stopped"
    ends = harness.query(select(Task.id).join(Workflow).where(Task.activity == "end1"))
    assert ends == []  # no successor from the stale completion


def test_a_stop_then_start_does_not_let_the_old_execution_into_the_new_run(
    harness: Harness,
) -> None:
    """The old execution fails after the restart: the new run stays started, not in error."""
    ENGINES[:] = [harness.engine]
    MID_RUN.update(commands=["stop", "start"], then="raise")
    a1_id = up_to_a1(harness, kind="stoppedMidRun")

    assert harness.engine.run(a1_id).status == "fenced"

    assert task(harness, a1_id).state == "aborted"
    assert workflow_state(harness) == "started"
    moves = harness.query(
        select(StateEvent.from_state, StateEvent.to_state).where(StateEvent.entity_id == a1_id)
    )
    assert ("running", "aborted") in moves and ("running", "failed") not in moves
