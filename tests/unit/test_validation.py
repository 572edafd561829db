"""Park/wake in the engine, and the validation activity on it: approve, reject, timeout."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from typing import Any

import pytest
from sqlalchemy import select, update

from tests.conftest import Harness
from worker import validations
from worker.activities.base import ActivityType, Context, Option, Outcome, Park
from worker.engine import _Claimed
from worker.errors import CommandRefused, DefinitionError, NotFound
from worker.messaging import validation
from worker.models import LogLine, StateEvent, Task, Workflow
from worker.registry import register
from worker.states import TASK_TRANSITIONS, TaskState


@register
class ParkProbe(ActivityType):
    """Parks on its first run (a timer when `seconds` is set), then says how it was woken."""

    name = "parkProbe"
    options = {"seconds": Option((int,))}

    def run(self, ctx: Context) -> Outcome:
        if ctx.parked == 0:
            seconds = ctx.activity.options.get("seconds")
            due = ctx.now + dt.timedelta(seconds=seconds) if seconds else None
            ctx.log("probe parks")
            return Outcome(park=Park("waiting for the probe's wake", due), vars={"stash": 1})
        return Outcome(vars={"wake": ctx.wake, "parked": ctx.parked, "attempt": ctx.attempt})


def probe_workflow(**options: Any) -> dict[str, Any]:
    return {
        "id": "probe",
        "activities": [
            {"name": "start1", "type": "start", "transitions": {"done": "probe1"}},
            {"name": "probe1", "type": "parkProbe", **options, "transitions": {"done": "end1"}},
            {"name": "end1", "type": "end"},
        ],
    }


def validation_workflow(**options: Any) -> dict[str, Any]:
    settings = {"subject": "Send the $(vars/campaign) newsletter?", "assignee": "alice"}
    return {
        "id": "approval",
        "activities": [
            {"name": "start1", "type": "start", "transitions": {"done": "validation1"}},
            {
                "name": "validation1",
                "type": "validation",
                **{**settings, **options},
                "transitions": {"approved": "sent", "rejected": "dropped", "timeout": "late"},
            },
            {"name": "sent", "type": "end"},
            {"name": "dropped", "type": "end"},
            {"name": "late", "type": "end"},
        ],
    }


def task_of(h: Harness, activity: str) -> Task:
    with h.sessions() as s:
        return s.scalars(
            select(Task).where(Task.activity == activity).order_by(Task.created_at.desc())
        ).first()


def workflow_state(h: Harness, name: str) -> str:
    with h.sessions() as s:
        return s.scalars(select(Workflow.state).where(Workflow.name == name)).one()


def states(h: Harness) -> dict[str, str]:
    return dict(h.query(select(Task.activity, Task.state).order_by(Task.created_at)))


def only_validation(h: Harness) -> dict[str, Any]:
    (row,) = h.query(select(validation))
    return {column.key: row._mapping[column] for column in validation.c}


def make_due(h: Harness, activity: str) -> None:
    """The timer passes: its due time is moved to the past rather than waited for."""
    past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    with h.sessions() as s, s.begin():
        s.execute(update(Task).where(Task.activity == activity).values(due_at=past))


def logs(h: Harness) -> list[str]:
    return [m for (m,) in h.query(select(LogLine.message).order_by(LogLine.id))]


def decide(h: Harness, decision: str, comment: str | None = None, user: str = "bob") -> Any:
    pkey = only_validation(h)["pkey"]
    return validations.decide(h.engine, None, f"@{pkey}", decision, comment, user)


# ------------------------------------------------------------------------- park and wake


def test_a_parked_task_waits_holding_no_worker_and_says_why(harness: Harness) -> None:
    harness.start(probe_workflow())
    harness.stub.drain()

    task = task_of(harness, "probe1")
    assert (task.state, task.fired, task.due_at, task.attempt) == ("waiting", 1, None, 1)
    assert task.vars == {"stash": 1}
    assert workflow_state(harness, "probe") == "started"
    assert harness.engine.explain(task.id) == (
        "waiting for the probe's wake; no timer: it runs again when it is woken"
    )
    assert "probe parks" in logs(harness)
    assert harness.engine.tick()["timers"] == 0


def test_a_wake_runs_the_task_once_and_a_second_wake_is_refused(harness: Harness) -> None:
    harness.start(probe_workflow())
    harness.stub.drain()
    task_id = task_of(harness, "probe1").id
    published = len(harness.stub.published)

    assert harness.engine.wake(task_id, by="a test") == "pending"
    with pytest.raises(CommandRefused, match="only a waiting task"):
        harness.engine.wake(task_id)
    assert len(harness.stub.published) == published + 1
    harness.stub.drain()

    task = task_of(harness, "probe1")
    assert task.state == "done"
    assert task.vars == {"stash": 1, "wake": "woken", "parked": 1, "attempt": 2}
    assert workflow_state(harness, "probe") == "finished"
    assert "woken by a test" in logs(harness)
    # A wake after the end is refused too: nothing runs twice.
    with pytest.raises(CommandRefused):
        harness.engine.wake(task_id)
    with pytest.raises(NotFound):
        harness.engine.wake("no-such-task")


def test_a_due_timer_wakes_a_parked_task_once_and_it_knows_it_is_due(harness: Harness) -> None:
    harness.start(probe_workflow(seconds=3600))
    harness.stub.drain()
    task_id = task_of(harness, "probe1").id
    assert "the timer is due at" in harness.engine.explain(task_id)
    assert harness.engine.tick()["timers"] == 0

    make_due(harness, "probe1")
    assert harness.engine.tick()["timers"] == 1
    assert harness.engine.tick()["timers"] == 0
    # The timer got there first: an explicit wake now is refused.
    with pytest.raises(CommandRefused):
        harness.engine.wake(task_id)
    harness.stub.drain()

    assert task_of(harness, "probe1").vars["wake"] == "due"
    assert workflow_state(harness, "probe") == "finished"


def test_a_wake_while_paused_is_kept_and_runs_after_resume(harness: Harness) -> None:
    harness.start(probe_workflow())
    harness.stub.drain()
    task_id = task_of(harness, "probe1").id
    harness.engine.command(None, "probe", "pause")
    published = len(harness.stub.published)

    assert harness.engine.wake(task_id) == "held"
    assert len(harness.stub.published) == published  # nothing runs while paused
    harness.engine.tick()
    harness.stub.drain()
    assert task_of(harness, "probe1").state == "held"
    assert "resume it" in harness.engine.explain(task_id)

    harness.engine.command(None, "probe", "resume")
    harness.stub.drain()
    task = task_of(harness, "probe1")
    assert (task.state, task.vars["wake"]) == ("done", "woken")
    assert workflow_state(harness, "probe") == "finished"


def test_a_due_timer_does_not_fire_while_paused_but_after_resume(harness: Harness) -> None:
    harness.start(probe_workflow(seconds=3600))
    harness.stub.drain()
    harness.engine.command(None, "probe", "pause")
    make_due(harness, "probe1")

    assert harness.engine.tick()["timers"] == 0
    harness.engine.command(None, "probe", "resume")
    assert harness.engine.tick()["timers"] == 1
    harness.stub.drain()
    assert task_of(harness, "probe1").vars["wake"] == "due"


def test_stop_aborts_a_parked_task_and_a_wake_is_then_refused(harness: Harness) -> None:
    harness.start(probe_workflow())
    harness.stub.drain()
    task_id = task_of(harness, "probe1").id

    harness.engine.command(None, "probe", "stop")

    assert task_of(harness, "probe1").state == "aborted"
    with pytest.raises(CommandRefused, match="it is aborted"):
        harness.engine.wake(task_id)


def test_a_signal_waiting_for_triggers_cannot_be_woken(harness: Harness) -> None:
    body = {
        "id": "sig",
        "activities": [
            {"name": "signal1", "type": "externalSignal", "transitions": {"done": "end1"}},
            {"name": "end1", "type": "end"},
        ],
    }
    harness.start(body)
    with pytest.raises(CommandRefused, match="cannot be woken"):
        harness.engine.wake(task_of(harness, "signal1").id)
    assert task_of(harness, "signal1").state == "waiting"


def test_a_stale_attempt_cannot_park_a_task_a_newer_attempt_owns(harness: Harness) -> None:
    # Given attempt 1 whose worker stalled mid-run: the reaper gave the task to attempt 2,
    # which parked
    harness.start(probe_workflow())
    harness.stub.drain()
    task = task_of(harness, "probe1")
    stale = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=60)
    with harness.sessions() as s, s.begin():
        s.execute(
            update(Task)
            .where(Task.id == task.id)
            .values(state="running", attempt=1, fired=0, vars={}, heartbeat_at=stale)
        )
    assert harness.engine.tick()["reaped"] == 1
    harness.stub.drain()
    assert (task_of(harness, "probe1").state, task_of(harness, "probe1").attempt) == ("waiting", 2)
    definition = harness.engine.definition(task.workflow_id, task.version)

    # When attempt 1 wakes up and finishes its run (it would park again)
    zombie = _Claimed(task.id, task.workflow_id, task.job_id, "probe1", task.version, {}, {}, 1, {})
    result = harness.engine._run_claimed(zombie, definition, {})

    # Then it is fenced: the task is still attempt 2's, parked once, untouched
    assert result.status == "fenced"
    after = task_of(harness, "probe1")
    assert (after.state, after.attempt, after.fired) == ("waiting", 2, 1)


def test_runs_that_parked_do_not_count_as_lost_workers(harness: Harness) -> None:
    harness.start(probe_workflow())
    harness.stub.drain()
    task_id = task_of(harness, "probe1").id
    harness.engine.wake(task_id)
    harness.stub.queue.clear()
    # The woken run's worker dies with the attempt at the cap, but one run parked: 4 lost.
    stale = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=60)
    with harness.sessions() as s, s.begin():
        s.execute(
            update(Task)
            .where(Task.id == task_id)
            .values(state="running", attempt=harness.settings.max_attempts, heartbeat_at=stale)
        )

    assert harness.engine.tick()["reaped"] == 1
    harness.stub.drain()
    assert task_of(harness, "probe1").state == "done"


def test_parking_and_waking_follow_allowed_transitions_only(harness: Harness) -> None:
    harness.start(probe_workflow())
    harness.stub.drain()
    harness.engine.wake(task_of(harness, "probe1").id)
    harness.stub.drain()

    events = harness.query(
        select(StateEvent.from_state, StateEvent.to_state).where(StateEvent.entity == "task")
    )
    for from_state, to_state in events:
        if from_state is not None:
            assert TaskState(to_state) in TASK_TRANSITIONS[TaskState(from_state)]
    assert ("running", "waiting") in events and ("waiting", "pending") in events


# ------------------------------------------------------------------------- the validation


def test_approved_the_workflow_continues_on_approved_with_the_decision_in_vars(
    harness: Harness,
) -> None:
    harness.start(validation_workflow(timeout="1d", group="marketing"))
    harness.stub.drain()

    row = only_validation(harness)
    task = task_of(harness, "validation1")
    assert (row["state"], row["assignee"], row["group"]) == ("pending", "alice", "marketing")
    assert row["subject"] == "Send the  newsletter?"  # a missing var reads as empty
    assert row["task_id"] == task.id and task.state == "waiting"
    due = row["dueAt"]
    assert abs((due - dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).total_seconds()) < 5
    why = harness.engine.explain(task.id)
    assert why.startswith("waiting for validation by alice or group marketing; the timer is due")
    assert "validation requested from alice (group marketing), due at" in " ".join(logs(harness))

    found = decide(harness, "approve", "fine", user="bob")
    assert (found["state"], found["decidedBy"], found["comment"]) == ("approved", "bob", "fine")
    harness.stub.drain()

    assert states(harness)["sent"] == "done" and "dropped" not in states(harness)
    assert task_of(harness, "sent").vars == {
        "validationDecision": "approved",
        "validationComment": "fine",
        "validationDecidedBy": "bob",
    }
    assert workflow_state(harness, "approval") == "finished"
    assert "approved by bob: fine" in logs(harness)


def test_the_subject_and_assignee_read_the_vars_of_the_job(harness: Harness) -> None:
    body = {
        "id": "fromSignal",
        "activities": [
            {
                "name": "signal1",
                "type": "externalSignal",
                "parameters": {"campaign": "string", "who": "string"},
                "transitions": {"done": "validation1"},
            },
            {
                "name": "validation1",
                "type": "validation",
                "subject": "Send $(vars/campaign)?",
                "assignee": "$(vars/who)",
                "instructions": "Check the $(vars/campaign) links",
                "transitions": {"approved": "end1", "rejected": "end1", "timeout": "end1"},
            },
            {"name": "end1", "type": "end"},
        ],
    }
    harness.start(body)
    harness.engine.trigger(
        None, "fromSignal", "signal1", "test", {"campaign": "spring", "who": "eve"}
    )
    harness.stub.drain()

    row = only_validation(harness)
    assert (row["subject"], row["assignee"], row["group"]) == ("Send spring?", "eve", "")
    with harness.sessions() as s:
        (described,) = validations.describe(harness.engine, s, [row["id"]])
    assert described["instructions"] == "Check the spring links"
    assert described["dueAt"] is None
    assert "no timer" in harness.engine.explain(row["task_id"])


def test_an_assignee_that_reads_as_empty_fails_the_task_and_creates_nothing(
    harness: Harness,
) -> None:
    harness.start(validation_workflow(assignee="$(vars/nobody)"))
    harness.stub.drain()

    assert task_of(harness, "validation1").state == "failed"
    assert "both empty" in (task_of(harness, "validation1").error or "")
    assert harness.query(select(validation)) == []


def test_rejected_needs_a_comment_and_continues_on_rejected(harness: Harness) -> None:
    harness.start(validation_workflow())
    harness.stub.drain()

    with pytest.raises(ValueError, match="needs a 'comment'"):
        decide(harness, "reject", "  ")
    assert only_validation(harness)["state"] == "pending"
    decide(harness, "reject", "wrong price", user="carol")
    harness.stub.drain()

    assert states(harness)["dropped"] == "done" and "sent" not in states(harness)
    assert task_of(harness, "dropped").vars["validationComment"] == "wrong price"
    assert task_of(harness, "dropped").vars["validationDecision"] == "rejected"
    assert workflow_state(harness, "approval") == "finished"


def test_without_a_decision_the_timeout_outlet_fires_and_a_late_decision_is_refused(
    harness: Harness,
) -> None:
    harness.start(validation_workflow(timeout="2h"))
    harness.stub.drain()
    assert harness.engine.tick()["timers"] == 0

    make_due(harness, "validation1")
    assert harness.engine.tick()["timers"] == 1
    harness.stub.drain()

    assert states(harness)["late"] == "done"
    assert task_of(harness, "late").vars["validationDecision"] == "timedOut"
    assert only_validation(harness)["state"] == "timedOut"
    with pytest.raises(validations.DecisionRefused, match="timed out") as refused:
        decide(harness, "approve")
    assert refused.value.details == {"state": "timedOut"}
    assert workflow_state(harness, "approval") == "finished"


def test_a_decision_racing_a_due_timer_loses_cleanly(harness: Harness) -> None:
    harness.start(validation_workflow(timeout="2h"))
    harness.stub.drain()
    make_due(harness, "validation1")
    harness.engine.tick()  # the timer fired: the task is pending, the row still pending

    with pytest.raises(validations.DecisionRefused, match="can no longer be decided"):
        decide(harness, "approve")
    harness.stub.drain()
    assert only_validation(harness)["state"] == "timedOut"
    assert states(harness)["late"] == "done"


def test_a_decision_while_paused_is_applied_after_resume(harness: Harness) -> None:
    harness.start(validation_workflow())
    harness.stub.drain()
    harness.engine.command(None, "approval", "pause")

    decide(harness, "approve")
    harness.stub.drain()
    assert only_validation(harness)["state"] == "approved"
    assert task_of(harness, "validation1").state == "held"
    assert "sent" not in states(harness)

    harness.engine.command(None, "approval", "resume")
    harness.stub.drain()
    assert states(harness)["sent"] == "done"
    assert workflow_state(harness, "approval") == "finished"


def test_a_second_decision_is_refused_and_changes_nothing(harness: Harness) -> None:
    harness.start(validation_workflow())
    harness.stub.drain()
    decide(harness, "approve", user="bob")

    with pytest.raises(validations.DecisionRefused, match="already approved by bob"):
        decide(harness, "reject", "too late", user="mallory")
    harness.stub.drain()
    row = only_validation(harness)
    assert (row["state"], row["decidedBy"], row["comment"]) == ("approved", "bob", "")
    assert "dropped" not in states(harness)


def test_stop_cancels_the_pending_validation_and_a_decision_is_then_refused(
    harness: Harness,
) -> None:
    harness.start(validation_workflow())
    harness.stub.drain()

    harness.engine.command(None, "approval", "stop")

    row = only_validation(harness)
    assert (row["state"], row["comment"]) == ("cancelled", "workflow stopped")
    with pytest.raises(validations.DecisionRefused, match="cancelled"):
        decide(harness, "approve")
    assert only_validation(harness)["state"] == "cancelled"


def test_a_restart_and_a_skip_also_cancel_the_pending_validation(harness: Harness) -> None:
    harness.start(validation_workflow())
    harness.stub.drain()
    harness.engine.skip(task_of(harness, "validation1").id)
    assert only_validation(harness)["state"] == "cancelled"

    harness.engine.command(None, "approval", "start")  # finished: a fresh run
    harness.stub.drain()
    harness.engine.command(None, "approval", "stop")
    harness.engine.command(None, "approval", "start")
    harness.stub.drain()
    pending = harness.query(select(validation.c.state).order_by(validation.c.id))
    assert [state for (state,) in pending] == ["cancelled", "cancelled", "pending"]


def test_an_operators_wake_without_decision_parks_the_validation_again(harness: Harness) -> None:
    harness.start(validation_workflow(timeout="1h"))
    harness.stub.drain()
    task_id = task_of(harness, "validation1").id
    due = task_of(harness, "validation1").due_at

    harness.engine.wake(task_id)
    harness.stub.drain()

    task = task_of(harness, "validation1")
    assert (task.state, task.due_at, task.fired) == ("waiting", due, 2)
    assert only_validation(harness)["state"] == "pending"
    decide(harness, "approve")
    harness.stub.drain()
    assert workflow_state(harness, "approval") == "finished"


def test_decisions_are_checked_before_anything_changes(harness: Harness) -> None:
    harness.start(validation_workflow())
    harness.stub.drain()
    pkey = "@" + only_validation(harness)["pkey"]
    bad: list[tuple[Any, Any, Any]] = [
        ("maybe", None, "bob"),
        (None, None, "bob"),
        ("approve", 12, "bob"),
        ("approve", "x" * (validations.MAX_COMMENT + 1), "bob"),
        ("approve", None, ""),
        ("approve", None, "u" * 129),
        ("approve", None, None),
    ]
    for decision, comment, user in bad:
        assert validations.check_decision(decision, comment, user)
        with pytest.raises(ValueError):
            validations.decide(harness.engine, None, pkey, decision, comment, user)
    for ref in ("", "@", "@../../etc", "@" + "a" * 70, "@DROP TABLE", pkey.upper()):
        with pytest.raises(NotFound):
            validations.decide(harness.engine, None, ref, "approve", None, "bob")
    assert only_validation(harness)["state"] == "pending"
    assert task_of(harness, "validation1").state == "waiting"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"assignee": None}, "give 'assignee', 'group' or both"),
        ({"subject": None}, "option 'subject' is required"),
        ({"subject": ""}, "must not be empty"),
        ({"subject": "s" * 256}, "at most 255"),
        ({"assignee": "  "}, "must not be empty"),
        ({"group": "g" * 129}, "at most 128"),
        ({"assignee": 7}, "option 'assignee' must be str"),
        ({"timeout": "1m"}, "ambiguous"),
        ({"timeout": "forever"}, "timeout"),
        ({"timeout": "0s"}, "zero"),
        ({"instructions": "i" * 4001}, "at most 4000"),
        ({"approver": "bob"}, "unknown option 'approver'"),
    ],
)
def test_a_bad_validation_definition_is_refused_when_saved(
    harness: Harness, options: dict[str, Any], message: str
) -> None:
    body = validation_workflow(**options)
    activity = body["activities"][1]
    for key, value in options.items():
        if value is None:
            activity.pop(key)
    with pytest.raises(DefinitionError, match=message) as refused:
        harness.save(body)
    assert refused.value.activity == "validation1"


def test_a_validation_outlet_must_be_one_of_approved_rejected_timeout(harness: Harness) -> None:
    body = validation_workflow()
    body["activities"][1]["transitions"] = {"done": "sent"}
    with pytest.raises(DefinitionError, match="done"):
        harness.save(body)


# ------------------------------------------------------------------------- the CLI


def cli(h: Harness, *args: str) -> subprocess.CompletedProcess[str]:
    """`carillon` as a user runs it, on the harness's database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARILLON_")}
    env.update(
        CARILLON_HOME=str(h.settings.home),
        CARILLON_DATABASE_URL=h.settings.database_url,
        COLUMNS="250",
        USER="operator",
    )
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_cli_lists_and_decides_validations(harness: Harness) -> None:
    harness.start(validation_workflow(group="marketing"))
    harness.stub.drain()
    pkey = "@" + only_validation(harness)["pkey"]

    listed = cli(harness, "validation", "list", "--org", "acme")
    assert listed.returncode == 0, listed.stderr
    assert pkey in listed.stdout and "marketing" in listed.stdout
    assert pkey not in cli(harness, "validation", "list", "--state", "approved").stdout

    no_comment = cli(harness, "validation", "reject", pkey)
    assert no_comment.returncode == 2 and "--comment" in no_comment.stderr
    assert only_validation(harness)["state"] == "pending"

    rejected = cli(harness, "validation", "reject", pkey, "--comment", "not now")
    assert rejected.returncode == 0, rejected.stderr
    assert f"{pkey}: rejected by operator" in rejected.stdout
    row = only_validation(harness)
    assert (row["state"], row["comment"], row["decidedBy"]) == ("rejected", "not now", "operator")

    again = cli(harness, "validation", "approve", pkey, "--user", "bob")
    assert again.returncode == 2 and "already rejected by operator" in again.stderr
    unknown = cli(harness, "validation", "approve", "@nope")
    assert unknown.returncode == 2 and "not found" in unknown.stderr
