"""Execution semantics of DESIGN section 4, run through the stub dispatcher on SQLite."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update

from tests.conftest import Harness
from tests.plugins import effects
from worker.errors import CommandRefused, NotFound, TooManyTriggers, TriggerRefused
from worker.models import Job, JoinArrival, LogLine, StateEvent, Task, Trigger, Workflow
from worker.states import TASK_TRANSITIONS, TaskState

FORK_JOIN: dict[str, Any] = {
    "id": "forkJoin",
    "activities": [
        {"name": "start1", "type": "start", "transitions": {"done": "fork1"}},
        {"name": "fork1", "type": "fork", "transitions": {"done": ["a1", "b1"]}},
        {"name": "a1", "type": "effect", "transitions": {"done": "join1"}},
        {"name": "b1", "type": "effect", "transitions": {"done": "join1"}},
        {"name": "join1", "type": "andJoin", "transitions": {"done": "end1"}},
        {"name": "end1", "type": "end"},
    ],
}


def signal_workflow(**signal: Any) -> dict[str, Any]:
    return {
        "id": "sig",
        "activities": [
            {
                "name": "signal1",
                "type": "externalSignal",
                "parameters": {"n": "number", "flag": "boolean", "when": "datetime", "s": "string"},
                "transitions": {"done": "test1"},
                **signal,
            },
            {
                "name": "test1",
                "type": "test",
                "conditions": [
                    {"name": "big", "when": {"field": "vars.n", "op": "gt", "value": 10}}
                ],
                "transitions": {"big": "endBig", "default": "endSmall"},
            },
            {"name": "endBig", "type": "end"},
            {"name": "endSmall", "type": "end"},
        ],
    }


def wf(h: Harness, name: str) -> Workflow:
    with h.sessions() as s:
        return s.scalars(select(Workflow).where(Workflow.name == name)).one()


def tasks(h: Harness, name: str) -> dict[str, list[str]]:
    """activity -> states of its tasks, in creation order."""
    found: dict[str, list[str]] = {}
    rows = h.query(
        select(Task.activity, Task.state)
        .join(Workflow)
        .where(Workflow.name == name)
        .order_by(Task.created_at)
    )
    for activity, state in rows:
        found.setdefault(activity, []).append(state)
    return found


def effect_count(h: Harness) -> dict[str, int]:
    return dict(h.query(select(effects.c.activity, func.count()).group_by(effects.c.activity)))


def test_a_fork_join_workflow_runs_to_finished_with_each_effect_once(harness: Harness) -> None:
    harness.start(FORK_JOIN)
    harness.stub.drain()

    assert wf(harness, "forkJoin").state == "finished"
    assert tasks(harness, "forkJoin") == {
        "start1": ["done"],
        "fork1": ["done"],
        "a1": ["done"],
        "b1": ["done"],
        "join1": ["done"],
        "end1": ["done"],
    }
    assert effect_count(harness) == {"a1": 1, "b1": 1}


def test_the_join_merges_the_vars_of_its_branches(harness: Harness) -> None:
    harness.start(FORK_JOIN)
    harness.stub.drain()
    (join_vars,) = harness.query(select(Task.vars).where(Task.activity == "join1"))[0]
    assert join_vars == {"a1Done": True, "b1Done": True}
    assert (
        harness.query(
            select(func.count()).select_from(JoinArrival).where(JoinArrival.consumed_by.is_(None))
        )[0][0]
        == 0
    )


def test_a_duplicate_message_runs_nothing_twice(harness: Harness) -> None:
    harness.start(FORK_JOIN)
    first = list(harness.stub.queue)
    harness.stub.drain()
    # Given every message delivered again (a broker redelivery), when they run:
    harness.stub.queue.extend(first)
    harness.stub.drain()
    # Then no activity ran again and no state regressed.
    assert effect_count(harness) == {"a1": 1, "b1": 1}
    assert wf(harness, "forkJoin").state == "finished"


def test_state_events_only_follow_allowed_transitions(harness: Harness) -> None:
    harness.start(FORK_JOIN)
    harness.stub.drain()
    for from_state, to_state in harness.query(
        select(StateEvent.from_state, StateEvent.to_state).where(StateEvent.entity == "task")
    ):
        if from_state is not None:
            assert TaskState(to_state) in TASK_TRANSITIONS[TaskState(from_state)]


def test_pause_holds_pending_tasks_and_resume_continues(harness: Harness) -> None:
    # Given a started workflow whose first segment is published but not yet consumed
    harness.start(FORK_JOIN)
    # When it is paused, then the message is consumed
    harness.engine.command(None, "forkJoin", "pause")
    harness.stub.drain()
    # Then nothing ran and the start task is held
    assert tasks(harness, "forkJoin") == {"start1": ["held"]}
    assert effect_count(harness) == {}
    # When it is resumed, it runs to the end
    harness.engine.command(None, "forkJoin", "resume")
    harness.stub.drain()
    assert wf(harness, "forkJoin").state == "finished"
    assert effect_count(harness) == {"a1": 1, "b1": 1}


def test_stop_aborts_waiting_and_held_tasks_and_cannot_resume(harness: Harness) -> None:
    harness.start(signal_workflow())
    assert tasks(harness, "sig") == {"signal1": ["waiting"]}
    harness.engine.command(None, "sig", "stop")
    assert tasks(harness, "sig") == {"signal1": ["aborted"]}
    assert wf(harness, "sig").state == "stopped"
    with pytest.raises(CommandRefused, match="paused or failed"):
        harness.engine.command(None, "sig", "resume")


@pytest.mark.parametrize(
    ("state_commands", "method", "message"),
    [
        ([], "pause", "only a started workflow can be paused; it is edition"),
        ([], "resume", "only a paused or failed workflow can be resumed; it is edition"),
        ([], "stop", "not running; it is edition"),
        (["start"], "start", "already started"),
        (["start", "pause"], "pause", "only a started workflow can be paused; it is paused"),
        ([], "restart", "unknown method 'restart'"),
    ],
)
def test_a_command_that_does_not_apply_is_refused_saying_why(
    harness: Harness, state_commands: list[str], method: str, message: str
) -> None:
    harness.save(signal_workflow())
    for command in state_commands:
        harness.engine.command(None, "sig", command)
    before = wf(harness, "sig").state
    with pytest.raises(CommandRefused, match=message):
        harness.engine.command(None, "sig", method)
    assert wf(harness, "sig").state == before


def test_commands_are_checked_against_the_state_pending_commands_will_leave(
    harness: Harness,
) -> None:
    harness.save(signal_workflow())
    harness.engine.submit_command(None, "sig", "start")
    harness.engine.submit_command(None, "sig", "pause")
    with pytest.raises(CommandRefused, match="it is paused"):
        harness.engine.submit_command(None, "sig", "pause")
    applied = harness.engine.apply_commands(wf(harness, "sig").id)
    assert [(c.method, c.state) for c in applied] == [("start", "applied"), ("pause", "applied")]
    assert wf(harness, "sig").state == "paused"


def test_every_pending_command_is_applied_in_order_by_one_call(harness: Harness) -> None:
    """Each command in its own transaction, as many as are pending (a transaction looks at
    two, to know whether to go on)."""
    harness.save(signal_workflow())
    for method in ("start", "pause", "resume", "stop"):
        harness.engine.submit_command(None, "sig", method)
    applied = harness.engine.apply_commands(wf(harness, "sig").id)
    assert [(c.method, c.state) for c in applied] == [
        ("start", "applied"),
        ("pause", "applied"),
        ("resume", "applied"),
        ("stop", "applied"),
    ]
    assert wf(harness, "sig").state == "stopped"
    assert harness.engine.apply_commands(wf(harness, "sig").id) == []


def test_a_trigger_coerces_typed_parameters_into_the_jobs_vars(harness: Harness) -> None:
    harness.start(signal_workflow())
    trigger = harness.engine.trigger(
        None,
        "sig",
        "signal1",
        "cms",
        {"n": "42", "flag": "true", "when": "2019-04-03 08:17:19.100Z", "s": "hello"},
    )
    harness.stub.drain()
    (vars,) = harness.query(select(Job.vars).where(Job.id == trigger.job_id))[0]
    assert vars == {"n": 42, "flag": True, "when": "2019-04-03T08:17:19.100000+00:00", "s": "hello"}
    assert tasks(harness, "sig") == {
        "signal1": ["waiting", "done"],
        "test1": ["done"],
        "endBig": ["done"],
    }
    assert wf(harness, "sig").state == "started"  # the signal keeps listening


def test_the_first_true_condition_wins_and_default_catches_the_rest(harness: Harness) -> None:
    harness.start(signal_workflow())
    harness.engine.trigger(None, "sig", "signal1", "cms", {"n": 3})
    harness.stub.drain()
    assert tasks(harness, "sig")["endSmall"] == ["done"]


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"contentURL": "x"}, "'contentURL' parameter isn't defined in signal activity"),
        ({"n": "abc"}, "'n' parameter must be a number"),
        ({"flag": "yes"}, "'flag' parameter must be a boolean"),
        ({"when": "yesterday"}, "'when' parameter must be a datetime"),
        ([1, 2], "'parameters' must be an object"),
    ],
)
def test_a_bad_trigger_is_refused_and_changes_nothing(
    harness: Harness, parameters: Any, message: str
) -> None:
    harness.start(signal_workflow())
    with pytest.raises(TriggerRefused, match=message):
        harness.engine.trigger(None, "sig", "signal1", "cms", parameters)
    assert harness.query(select(func.count()).select_from(Trigger))[0][0] == 0
    assert harness.query(select(func.count()).select_from(Job))[0][0] == 1


def test_a_trigger_needs_a_source_and_a_started_workflow(harness: Harness) -> None:
    harness.save(signal_workflow())
    with pytest.raises(TriggerRefused, match="'source' is mandatory"):
        harness.engine.trigger(None, "sig", "signal1", "", {})
    with pytest.raises(TriggerRefused, match="not started") as refused:
        harness.engine.trigger(None, "sig", "signal1", "cms", {})
    assert refused.value.status == 409
    harness.engine.command(None, "sig", "start")
    with pytest.raises(NotFound):
        harness.engine.trigger(None, "sig", "nope", "cms", {})
    with pytest.raises(TriggerRefused, match="not an external signal"):
        harness.engine.trigger(None, "sig", "test1", "cms", {})


def test_a_second_trigger_inside_the_interval_is_refused_with_retry_after(
    harness: Harness,
) -> None:
    harness.engine.settings = type(harness.settings)(
        **{**harness.settings.__dict__, "signal_min_interval": 600}
    )
    harness.start(signal_workflow())
    harness.engine.trigger(None, "sig", "signal1", "cms", {})
    with pytest.raises(TooManyTriggers) as refused:
        harness.engine.trigger(None, "sig", "signal1", "cms", {})
    assert 590 <= refused.value.retry_after <= 600
    # Given the previous trigger is older than the interval, a new one is accepted.
    with harness.sessions() as s, s.begin():
        s.execute(
            update(Trigger).values(created_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=601))
        )
    harness.engine.trigger(None, "sig", "signal1", "cms", {})


def test_a_trigger_while_paused_is_queued_until_resume(harness: Harness) -> None:
    harness.start(signal_workflow())
    harness.engine.command(None, "sig", "pause")
    queued = harness.engine.trigger(None, "sig", "signal1", "cms", {"n": 99})
    assert queued.state == "queued" and queued.job_id is None
    harness.stub.drain()
    assert "test1" not in tasks(harness, "sig")
    harness.engine.command(None, "sig", "resume")
    harness.stub.drain()
    assert tasks(harness, "sig")["endBig"] == ["done"]
    assert harness.query(select(Trigger.state))[0][0] == "accepted"


def failing_workflow(flag: Path, on_error: str = "suspend", **workflow: Any) -> dict[str, Any]:
    return {
        "id": "failing",
        "onError": on_error,
        **workflow,
        "activities": [
            {"name": "start1", "type": "start", "transitions": {"done": "ok1"}},
            {"name": "ok1", "type": "effect", "transitions": {"done": "flaky1"}},
            {
                "name": "flaky1",
                "type": "effect",
                "failUnlessFile": str(flag),
                "transitions": {"done": "end1"},
            },
            {"name": "end1", "type": "end"},
        ],
    }


def test_suspend_puts_the_workflow_in_error_and_resume_reexecutes_only_the_failed_activity(
    harness: Harness, tmp_path: Path
) -> None:
    flag = tmp_path / "fixed"
    harness.start(failing_workflow(flag))
    harness.stub.drain()
    assert wf(harness, "failing").state == "error"
    assert tasks(harness, "failing")["flaky1"] == ["failed"]
    assert "flag file" in (wf(harness, "failing").error_message or "")
    # When the cause is fixed and the workflow resumed
    flag.write_text("ok")
    harness.engine.command(None, "failing", "resume")
    harness.stub.drain()
    # Then the failed activity ran again (attempt 2), the earlier one did not
    assert wf(harness, "failing").state == "finished"
    assert effect_count(harness) == {"ok1": 1, "flaky1": 1}
    assert harness.query(select(Task.attempt).where(Task.activity == "flaky1"))[0][0] == 2


def test_ignore_aborts_the_branch_and_the_workflow_finishes(
    harness: Harness, tmp_path: Path
) -> None:
    harness.start(failing_workflow(tmp_path / "never", on_error="ignore"))
    harness.stub.drain()
    assert tasks(harness, "failing")["flaky1"] == ["aborted"]
    assert "end1" not in tasks(harness, "failing")
    assert wf(harness, "failing").state == "finished"


def test_ignored_errors_past_the_threshold_put_the_workflow_in_error(
    harness: Harness, tmp_path: Path
) -> None:
    body = failing_workflow(tmp_path / "never", on_error="ignore", consecutiveErrors=1)
    harness.start(body)
    harness.stub.drain()
    assert wf(harness, "failing").state == "error"
    assert "1 consecutive errors" in (wf(harness, "failing").error_message or "")


def test_retry_skip_and_rerun_from_an_activity(harness: Harness, tmp_path: Path) -> None:
    flag = tmp_path / "fixed"
    harness.start(failing_workflow(flag))
    harness.stub.drain()
    (failed_id,) = harness.query(select(Task.id).where(Task.activity == "flaky1"))[0]
    # Skip: the failed task is marked done and the workflow goes on without running it.
    harness.engine.skip(failed_id)
    harness.stub.drain()
    assert wf(harness, "failing").state == "finished"
    assert effect_count(harness) == {"ok1": 1}
    with pytest.raises(CommandRefused):
        harness.engine.retry(failed_id)
    # Rerun from flaky1 on the finished workflow, now that the flag exists: it reopens.
    flag.write_text("ok")
    harness.engine.rerun_from(None, "failing", "flaky1")
    harness.stub.drain()
    assert effect_count(harness) == {"ok1": 1, "flaky1": 1}
    assert wf(harness, "failing").state == "finished"
    assert tasks(harness, "failing")["end1"] == ["done", "done"]


def test_a_wait_is_a_durable_timer_fired_by_the_tick(harness: Harness) -> None:
    body = {
        "id": "waiter",
        "activities": [
            {"name": "start1", "type": "start", "transitions": {"done": "wait1"}},
            {
                "name": "wait1",
                "type": "wait",
                "duration": "1d 8h 30mn",
                "transitions": {"done": "end1"},
            },
            {"name": "end1", "type": "end"},
        ],
    }
    harness.start(body)
    harness.stub.drain()
    (due_at, task_id) = harness.query(select(Task.due_at, Task.id).where(Task.activity == "wait1"))[
        0
    ]
    expected = dt.datetime.now(dt.UTC) + dt.timedelta(days=1, hours=8, minutes=30)
    assert abs((due_at - expected).total_seconds()) < 5
    assert harness.engine.tick()["timers"] == 0
    assert "timer is due at" in harness.engine.explain(task_id)
    # When the timer is due (moved to the past instead of sleeping), the tick fires it once.
    with harness.sessions() as s, s.begin():
        s.execute(
            update(Task)
            .where(Task.id == task_id)
            .values(due_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
        )
    assert harness.engine.tick()["timers"] == 1
    assert harness.engine.tick()["timers"] == 0
    harness.stub.drain()
    assert wf(harness, "waiter").state == "finished"


def test_a_scheduler_fires_a_new_job_per_slot_and_only_once_per_slot(harness: Harness) -> None:
    body = {
        "id": "sched",
        "activities": [
            {
                "name": "scheduler1",
                "type": "scheduler",
                "frequency": "daily",
                "times": ["04:00"],
                "transitions": {"done": "end1"},
            },
            {"name": "end1", "type": "end"},
        ],
    }
    harness.start(body)
    (task_id, due_at) = harness.query(select(Task.id, Task.due_at))[0]
    assert (due_at.hour, due_at.minute) == (4, 0)
    slot = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    with harness.sessions() as s, s.begin():
        s.execute(update(Task).where(Task.id == task_id).values(due_at=slot))
    # Two ticks (two beat processes) for the same slot: one job.
    assert harness.engine.tick()["timers"] == 1
    assert harness.engine.tick()["timers"] == 0
    harness.stub.drain()
    origins = [o for (o,) in harness.query(select(Job.origin))]
    assert sorted(origins) == ["scheduler", "start"]
    assert tasks(harness, "sched") == {"scheduler1": ["waiting", "done"], "end1": ["done"]}
    assert wf(harness, "sched").state == "started"


def test_the_reaper_reenqueues_a_task_whose_worker_died(harness: Harness) -> None:
    harness.start(FORK_JOIN)
    (start_id,) = harness.query(select(Task.id))[0]
    # Given a task claimed by a worker that then died (running, stale heartbeat)
    with harness.sessions() as s, s.begin():
        s.execute(
            update(Task)
            .where(Task.id == start_id)
            .values(
                state="running",
                attempt=1,
                heartbeat_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=60),
            )
        )
    harness.stub.queue.clear()
    assert harness.engine.tick()["reaped"] == 1
    harness.stub.drain()
    assert wf(harness, "forkJoin").state == "finished"
    assert harness.query(select(Task.attempt).where(Task.id == start_id))[0][0] == 2


def test_a_task_whose_worker_dies_too_often_goes_dead_and_suspends(harness: Harness) -> None:
    harness.start(FORK_JOIN)
    (start_id,) = harness.query(select(Task.id))[0]
    with harness.sessions() as s, s.begin():
        s.execute(
            update(Task)
            .where(Task.id == start_id)
            .values(
                state="running",
                attempt=harness.settings.max_attempts,
                heartbeat_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=60),
            )
        )
    harness.engine.tick()
    assert tasks(harness, "forkJoin") == {"start1": ["dead"]}
    assert wf(harness, "forkJoin").state == "error"


def test_a_lost_message_is_published_again_by_the_tick(harness: Harness) -> None:
    harness.start(FORK_JOIN)
    harness.stub.queue.clear()  # the broker lost it
    with harness.sessions() as s, s.begin():
        s.execute(update(Task).values(updated_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)))
    assert harness.engine.tick()["republished"] == 1
    harness.stub.drain()
    assert wf(harness, "forkJoin").state == "finished"


def test_a_fired_outlet_without_transition_pauses_the_workflow_with_a_warning(
    harness: Harness,
) -> None:
    body = {
        "id": "dangling",
        "activities": [
            {"name": "start1", "type": "start", "transitions": {"done": "test1"}},
            {
                "name": "test1",
                "type": "test",
                "conditions": [{"name": "yes", "when": {"field": "x", "op": "isEmpty"}}],
                "transitions": {"default": "end1"},
            },
            {"name": "end1", "type": "end"},
        ],
    }
    harness.start(body)
    harness.stub.drain()
    assert wf(harness, "dangling").state == "paused"
    levels = [level for (level,) in harness.query(select(LogLine.level))]
    assert "warning" in levels


def test_suspended_activities_wait_for_release_and_disabled_ones_end_the_branch(
    harness: Harness,
) -> None:
    body = {
        "id": "modes",
        "activities": [
            {"name": "start1", "type": "start", "transitions": {"done": ["a1", "b1"]}},
            {
                "name": "a1",
                "type": "effect",
                "execution": "suspended",
                "transitions": {"done": "end1"},
            },
            {
                "name": "b1",
                "type": "effect",
                "execution": "disabled",
                "transitions": {"done": "end2"},
            },
            {"name": "end1", "type": "end"},
            {"name": "end2", "type": "end"},
        ],
    }
    harness.start(body)
    harness.stub.drain()
    assert tasks(harness, "modes") == {"start1": ["done"], "a1": ["held"], "b1": ["aborted"]}
    (held_id,) = harness.query(select(Task.id).where(Task.activity == "a1"))[0]
    assert "suspended" in harness.engine.explain(held_id)
    harness.engine.release(held_id)
    harness.stub.drain()
    assert wf(harness, "modes").state == "finished"
    assert effect_count(harness) == {"a1": 1}


def test_an_end_activity_triggers_another_workflows_signal_with_parameters(
    harness: Harness,
) -> None:
    harness.start(signal_workflow())
    caller = {
        "id": "caller",
        "activities": [
            {"name": "start1", "type": "start", "transitions": {"done": "end1"}},
            {
                "name": "end1",
                "type": "end",
                "terminate": True,
                "signal": {
                    "workflow": "sig",
                    "activity": "signal1",
                    "parameters": {"n": 50, "s": "from caller"},
                },
            },
        ],
    }
    harness.start(caller)
    harness.stub.drain()
    assert wf(harness, "caller").state == "finished"
    assert tasks(harness, "sig")["endBig"] == ["done"]
    (source,) = harness.query(select(Trigger.source))[0]
    assert source == "workflow"


def test_a_jump_loops_through_a_wait(harness: Harness) -> None:
    body = {
        "id": "loop",
        "activities": [
            {"name": "start1", "type": "start", "transitions": {"done": "wait1"}},
            {"name": "wait1", "type": "wait", "duration": "10s", "transitions": {"done": "jump1"}},
            {"name": "jump1", "type": "jump", "target": "wait1"},
        ],
    }
    harness.start(body)
    harness.stub.drain()
    for _ in range(2):
        with harness.sessions() as s, s.begin():
            s.execute(
                update(Task)
                .where(Task.state == "waiting")
                .values(due_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
            )
        harness.engine.tick()
        harness.stub.drain()
    assert tasks(harness, "loop")["wait1"] == ["done", "done", "waiting"]
    assert tasks(harness, "loop")["jump1"] == ["done", "done"]


def test_data_activities_wait_for_a_free_slot_of_the_running_workflows_limit(
    harness: Harness,
) -> None:
    harness.engine.settings = type(harness.settings)(
        **{**harness.settings.__dict__, "max_running_workflows": 1}
    )

    def data_workflow(name: str) -> dict[str, Any]:
        return {
            "id": name,
            "activities": [
                {"name": "start1", "type": "start", "transitions": {"done": "load1"}},
                {"name": "load1", "type": "dataEffect", "transitions": {"done": "end1"}},
                {"name": "end1", "type": "end"},
            ],
        }

    # Given workflow A is running a data activity (its worker is busy with it)
    harness.start(data_workflow("wfA"))
    harness.stub.queue.clear()
    with harness.sessions() as s, s.begin():
        s.execute(
            update(Task)
            .where(Task.activity == "start1")
            .values(
                state="running",
                attempt=1,
                activity_type="dataEffect",
                heartbeat_at=dt.datetime.now(dt.UTC),
            )
        )
    # When workflow B reaches its own data activity
    harness.start(data_workflow("wfB"))
    harness.stub.drain()
    # Then B's data task stays pending, saying why, and nothing ran
    ((state, reason),) = harness.query(
        select(Task.state, Task.reason)
        .join(Workflow)
        .where(Workflow.name == "wfB", Task.activity == "load1")
    )
    assert state == "pending"
    assert "CARILLON_MAX_RUNNING_WORKFLOWS=1" in reason
    assert effect_count(harness) == {}
    # When A's data activity ends, the tick publishes B's task again and it runs
    with harness.sessions() as s, s.begin():
        s.execute(update(Task).where(Task.state == "running").values(state="done"))
        s.execute(update(Task).values(updated_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)))
    harness.engine.tick()
    harness.stub.drain()
    assert wf(harness, "wfB").state == "finished"
    assert effect_count(harness) == {"load1": 1}


def test_a_deleted_workflows_id_is_never_given_to_a_new_one(harness: Harness) -> None:
    # Engines cache parsed definitions by workflow id: a reused id would serve a stale one.
    from worker import catalog

    first = harness.save(FORK_JOIN)
    old_id = wf(harness, first).id
    harness.engine.definition(old_id, 1)
    with harness.sessions() as s, s.begin():
        catalog.delete_workflow(s, old_id)
    harness.engine.forget(old_id)
    second = harness.save(signal_workflow())
    assert wf(harness, second).id != old_id
    assert all(key[0] != old_id for key in harness.engine._definitions)
