"""The engine against real servers and a real Celery worker: runs, commands, errors, crashes.

Every test runs twice: on PostgreSQL + Redis, and on the embedded default (SQLite +
filesystem broker). Faults F1, F2, F11, F12 of RELIABILITY.md and invariants I1-I5.
"""

from __future__ import annotations

import signal
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from tests.integration.conftest import Stack, wait_for
from tests.plugins import effects
from worker.models import StateEvent, Task, Workflow
from worker.states import ACTIVE_TASK_STATES, TASK_TRANSITIONS, TaskState

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def fork_join(name: str, **effect_options: Any) -> dict[str, Any]:
    return {
        "id": name,
        "activities": [
            {"name": "start1", "type": "start", "transitions": {"done": "fork1"}},
            {"name": "fork1", "type": "fork", "transitions": {"done": ["a1", "b1"]}},
            {"name": "a1", "type": "effect", **effect_options, "transitions": {"done": "a2"}},
            {"name": "a2", "type": "noop", "transitions": {"done": "join1"}},
            {"name": "b1", "type": "effect", "transitions": {"done": "join1"}},
            {"name": "join1", "type": "andJoin", "transitions": {"done": "c1"}},
            {"name": "c1", "type": "effect", "transitions": {"done": "end1"}},
            {"name": "end1", "type": "end"},
        ],
    }


def effects_of(stack: Stack, workflow: str) -> dict[str, int]:
    with stack.sessions() as s:
        rows = s.execute(
            select(effects.c.activity, func.count())
            .join(Task, Task.id == effects.c.task_id)
            .join(Workflow, Workflow.id == Task.workflow_id)
            .where(Workflow.name == workflow)
            .group_by(effects.c.activity)
        ).all()
    return dict(rows)  # type: ignore[arg-type]


def task_rows(stack: Stack, workflow: str) -> list[Any]:
    with stack.sessions() as s:
        return list(
            s.execute(
                select(Task.id, Task.activity, Task.state, Task.attempt)
                .join(Workflow)
                .where(Workflow.name == workflow)
                .order_by(Task.created_at)
            ).all()
        )


def check_invariants(stack: Stack, workflow: str) -> None:
    """I1 nothing active, I2 ended once, I4 allowed transitions only, I5 queues drained."""
    wait_for(stack.activity_queues_drained, 30, "the activity queues to drain")
    rows = task_rows(stack, workflow)
    assert not [r for r in rows if r.state in ACTIVE_TASK_STATES and r.activity != "signal1"]
    with stack.sessions() as s:
        ids = [r.id for r in rows]
        events = s.execute(
            select(StateEvent.from_state, StateEvent.to_state).where(StateEvent.entity_id.in_(ids))
        ).all()
    for from_state, to_state in events:
        if from_state is not None:
            assert TaskState(to_state) in TASK_TRANSITIONS[TaskState(from_state)], (
                from_state,
                to_state,
            )
    # I2: the run ended once (one terminal event of the workflow) and was not reopened after.
    with stack.sessions() as s:
        workflow_id = s.scalar(select(Workflow.id).where(Workflow.name == workflow))
        history = s.scalars(
            select(StateEvent.to_state)
            .where(StateEvent.entity == "workflow", StateEvent.entity_id == str(workflow_id))
            .order_by(StateEvent.id)
        ).all()
    terminal = [state for state in history if state in ("finished", "stopped")]
    assert len(terminal) <= 1, history
    if terminal:
        assert history[-1] == terminal[0], history


def test_a_fork_join_workflow_runs_to_finished_on_a_real_worker(stack: Stack) -> None:
    name = stack.save(fork_join(unique("fj")))
    stack.engine.command(None, name, "start")
    stack.wait_state(name, "finished")
    assert effects_of(stack, name) == {"a1": 1, "b1": 1, "c1": 1}
    check_invariants(stack, name)


def test_pause_holds_and_resume_continues(stack: Stack, tmp_path: Path) -> None:
    name = stack.save(
        {
            "id": unique("pause"),
            "activities": [
                {"name": "start1", "type": "start", "transitions": {"done": "slow1"}},
                {
                    "name": "slow1",
                    "type": "effect",
                    "seconds": 1.5,
                    "transitions": {"done": "next1"},
                },
                {"name": "next1", "type": "effect", "transitions": {"done": "end1"}},
                {"name": "end1", "type": "end"},
            ],
        }
    )
    stack.engine.command(None, name, "start")
    wait_for(
        lambda: any(r.activity == "slow1" and r.state == "running" for r in task_rows(stack, name)),
        30,
        "slow1 running",
    )
    # When paused while slow1 runs: it finishes, and the next activity is held, not run.
    stack.engine.command(None, name, "pause")
    wait_for(
        lambda: [r.state for r in task_rows(stack, name) if r.activity == "next1"] == ["held"],
        30,
        "next1 held",
    )
    assert effects_of(stack, name) == {"slow1": 1}
    assert stack.state(name) == "paused"
    stack.engine.command(None, name, "resume")
    stack.wait_state(name, "finished")
    assert effects_of(stack, name) == {"slow1": 1, "next1": 1}
    check_invariants(stack, name)


def test_stop_aborts_waiting_tasks(stack: Stack) -> None:
    name = stack.save(
        {
            "id": unique("stop"),
            "activities": [
                {"name": "start1", "type": "start", "transitions": {"done": "wait1"}},
                {
                    "name": "wait1",
                    "type": "wait",
                    "duration": "1h",
                    "transitions": {"done": "end1"},
                },
                {"name": "end1", "type": "end"},
            ],
        }
    )
    stack.engine.command(None, name, "start")
    wait_for(
        lambda: [r.state for r in task_rows(stack, name) if r.activity == "wait1"] == ["waiting"],
        30,
        "wait1 waiting",
    )
    stack.engine.command(None, name, "stop")
    assert stack.state(name) == "stopped"
    assert [r.state for r in task_rows(stack, name)] == ["done", "aborted"]


def test_a_failing_activity_suspends_and_resume_reexecutes_it_once_fixed(
    stack: Stack, tmp_path: Path
) -> None:
    flag = tmp_path / "fixed"
    name = stack.save(
        {
            "id": unique("fail"),
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
    )
    stack.engine.command(None, name, "start")
    stack.wait_state(name, "error")
    assert [r.state for r in task_rows(stack, name) if r.activity == "flaky1"] == ["failed"]
    flag.write_text("fixed")
    stack.engine.command(None, name, "resume")
    stack.wait_state(name, "finished")
    assert effects_of(stack, name) == {"ok1": 1, "flaky1": 1}
    assert [r.attempt for r in task_rows(stack, name) if r.activity == "flaky1"] == [2]
    check_invariants(stack, name)


@pytest.mark.parametrize("victim", ["whole worker", "worker child"])
def test_a_worker_killed_mid_activity_loses_nothing_and_repeats_no_effect(
    stack: Stack, tmp_path: Path, victim: str
) -> None:
    started = tmp_path / "started"
    started.mkdir()
    name = stack.save(fork_join(unique("kill"), seconds=4, startedDir=str(started)))
    stack.engine.command(None, name, "start")
    # Given a1 is running (its first attempt has begun its 4-second effect)
    wait_for(lambda: (started / "a1.1").exists(), 60, "a1 to start")
    # When the worker is killed with SIGKILL (F2), or only the child running a1 (F1)
    if victim == "whole worker":
        stack.kill("w1")
        stack.start_worker("w1")
    else:
        pid = int((started / "a1.1").read_text())
        assert pid in stack.children("w1")
        import os

        os.kill(pid, signal.SIGKILL)
    # Then the workflow still finishes, with a1's effect recorded exactly once
    stack.wait_state(name, "finished", timeout=90)
    assert effects_of(stack, name) == {"a1": 1, "b1": 1, "c1": 1}
    attempts = [r.attempt for r in task_rows(stack, name) if r.activity == "a1"]
    assert attempts == [2]
    check_invariants(stack, name)


def test_a_crash_between_commit_and_publish_is_repaired_by_the_tick(
    stack: Stack, tmp_path: Path
) -> None:
    # Given a worker that dies once right after committing successors, before publishing (F12)
    marker = tmp_path / "crashed"
    stack.kill("w1", signal.SIGTERM)
    stack.start_worker("w1", CARILLON_FAILPOINT=f"after_commit_before_publish@{marker}")
    try:
        name = stack.save(
            {
                "id": unique("crash"),
                "activities": [
                    {"name": "start1", "type": "start", "transitions": {"done": "test1"}},
                    {
                        "name": "test1",
                        "type": "test",
                        "conditions": [{"name": "yes", "when": {"field": "x", "op": "isEmpty"}}],
                        "transitions": {"yes": "e1", "default": "end1"},
                    },
                    {"name": "e1", "type": "effect", "transitions": {"done": "end1"}},
                    {"name": "end1", "type": "end"},
                ],
            }
        )
        stack.engine.command(None, name, "start")
        stack.wait_state(name, "finished", timeout=90)
        assert marker.exists()
        assert effects_of(stack, name) == {"e1": 1}
        check_invariants(stack, name)
    finally:
        stack.kill("w1", signal.SIGTERM)
        stack.start_worker("w1")


def test_a_crash_between_a_hop_s_commit_and_its_held_push_is_repaired_by_the_tick(
    stack: Stack, tmp_path: Path
) -> None:
    """F12 on the seeded hop's path (worker.follow): a worker that dies once after a hop
    committed, before it pushed the next link it held (on PostgreSQL + Redis; the embedded
    default dies at the end of its first segment, before publishing the next one)."""
    marker = tmp_path / "crashed-hop"
    stack.kill("w1", signal.SIGTERM)
    stack.start_worker("w1", CARILLON_FAILPOINT=f"after_commit_before_publish@{marker}")
    try:
        names = ["start1", "a1", "a2", "a3", "a4", "end1"]
        name = stack.save(
            {
                "id": unique("crashhop"),
                "activities": [
                    {
                        "name": activity,
                        "type": "start" if index == 0 else "end" if activity == "end1" else "noop",
                        **({"transitions": {"done": names[index + 1]}} if index < 5 else {}),
                    }
                    for index, activity in enumerate(names)
                ],
            }
        )
        stack.engine.command(None, name, "start")
        stack.wait_state(name, "finished", timeout=90)
        assert marker.exists()
        done = sorted(row.activity for row in task_rows(stack, name) if row.state == "done")
        assert done == sorted(names)  # each activity done once
        check_invariants(stack, name)
    finally:
        stack.kill("w1", signal.SIGTERM)
        stack.start_worker("w1")


def test_an_external_signal_with_the_seeds_parameters_reaches_its_end(stack: Stack) -> None:
    name = stack.save(
        {
            "id": unique("sig"),
            "activities": [
                {
                    "name": "signal1",
                    "type": "externalSignal",
                    "parameters": {
                        "test": "boolean",
                        "attribute": "datetime",
                        "segmentCode": "string",
                    },
                    "transitions": {"done": "test1"},
                },
                {
                    "name": "test1",
                    "type": "test",
                    "conditions": [
                        {"name": "t", "when": {"field": "vars.test", "op": "eq", "value": True}}
                    ],
                    "transitions": {"t": "endTest", "default": "endLive"},
                },
                {"name": "endTest", "type": "end"},
                {"name": "endLive", "type": "end"},
            ],
        }
    )
    stack.engine.command(None, name, "start")
    trigger = stack.engine.trigger(
        None,
        name,
        "signal1",
        "API",
        {"test": "true", "attribute": "2019-04-03 08:17:19.100Z", "segmentCode": "my segment"},
    )
    wait_for(
        lambda: [r.state for r in task_rows(stack, name) if r.activity == "endTest"] == ["done"],
        30,
        "endTest done",
    )
    with stack.sessions() as s:
        vars = s.execute(
            select(Task.vars).where(Task.job_id == trigger.job_id, Task.activity == "endTest")
        ).scalar_one()
    assert vars == {
        "test": True,
        "attribute": "2019-04-03T08:17:19.100000+00:00",
        "segmentCode": "my segment",
    }
    assert stack.state(name) == "started"
    stack.engine.command(None, name, "stop")


def test_a_zombie_worker_resumed_after_its_lease_cannot_complete_its_stale_attempt(
    stack: Stack, tmp_path: Path
) -> None:
    import os

    started = tmp_path / "started"
    started.mkdir()
    name = stack.save(fork_join(unique("zombie"), seconds=3, startedDir=str(started)))
    stack.engine.command(None, name, "start")
    wait_for(lambda: (started / "a1.1").exists(), 60, "a1 attempt 1 to start")
    zombie = int((started / "a1.1").read_text())
    # Given the process running attempt 1 is frozen (F4) past its lease
    os.kill(zombie, signal.SIGSTOP)
    try:
        # When the reaper has another process run attempt 2
        wait_for(lambda: (started / "a1.2").exists(), 60, "a1 attempt 2 to start")
    finally:
        os.kill(zombie, signal.SIGCONT)
    # Then the thawed attempt 1 is fenced out: one effect, recorded by attempt 2
    stack.wait_state(name, "finished", timeout=90)
    assert effects_of(stack, name) == {"a1": 1, "b1": 1, "c1": 1}
    with stack.sessions() as s:
        attempts = (
            s.execute(
                select(effects.c.attempt)
                .join(Task, Task.id == effects.c.task_id)
                .where(
                    effects.c.activity == "a1",
                    Task.job_id.in_(
                        select(Task.job_id).join(Workflow).where(Workflow.name == name)
                    ),
                )
            )
            .scalars()
            .all()
        )
    assert attempts == [2]
    check_invariants(stack, name)


def test_a_duplicate_message_for_a_running_task_has_no_effect(stack: Stack, tmp_path: Path) -> None:
    started = tmp_path / "started"
    started.mkdir()
    name = stack.save(fork_join(unique("dup"), seconds=2, startedDir=str(started)))
    stack.engine.command(None, name, "start")
    wait_for(lambda: (started / "a1.1").exists(), 60, "a1 to start")
    (task_id,) = [r.id for r in task_rows(stack, name) if r.activity == "a1"]
    # When the broker delivers the same task again while it runs (F11)
    stack.celery.set_current()
    stack.celery.send_task(
        "carillon.run_activity", args=(task_id, {}), task_id=task_id, queue="carillon.flow"
    )
    stack.wait_state(name, "finished", timeout=60)
    assert effects_of(stack, name) == {"a1": 1, "b1": 1, "c1": 1}
    assert [r.attempt for r in task_rows(stack, name) if r.activity == "a1"] == [1]
    check_invariants(stack, name)


def test_concurrent_jobs_of_one_workflow_neither_deadlock_nor_lose_a_task(stack: Stack) -> None:
    name = stack.save(
        {
            "id": unique("busy"),
            "activities": [
                {
                    "name": "signal1",
                    "type": "externalSignal",
                    "parameters": {"n": "number"},
                    "transitions": {"done": "fork1"},
                },
                {"name": "fork1", "type": "fork", "transitions": {"done": ["a1", "b1"]}},
                {"name": "a1", "type": "noop", "transitions": {"done": "join1"}},
                {"name": "b1", "type": "noop", "transitions": {"done": "join1"}},
                {"name": "join1", "type": "andJoin", "transitions": {"done": "end1"}},
                {"name": "end1", "type": "end"},
            ],
        }
    )
    stack.engine.command(None, name, "start")
    log_start = stack.log_size("w1")
    # When 100 jobs are triggered at once, the two worker processes completing them together
    for i in range(100):
        stack.engine.trigger(None, name, "signal1", "load", {"n": i})
    # Then every job reaches its end, and no task failed (a deadlock fails the task)
    wait_for(
        lambda: (
            sum(1 for r in task_rows(stack, name) if r.activity == "end1" and r.state == "done")
            == 100
        ),
        150,
        "100 jobs to end",
    )
    assert not [r for r in task_rows(stack, name) if r.state == "failed" or r.attempt > 1]
    # A deadlock rolls the whole run back (claim included) and the tick republishes it: the
    # rows look clean, the worker's log does not.
    assert stack.task_errors("w1", log_start) == []
    assert stack.state(name) == "started"
    stack.engine.command(None, name, "stop")
