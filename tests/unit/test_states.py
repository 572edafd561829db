"""Unit tests of workflow and task states: the transition tables match DESIGN section 4."""

from __future__ import annotations

import itertools

import pytest

from worker.states import (
    ACTIVE_TASK_STATES,
    OPEN_WORKFLOW_STATES,
    READY_TASK_STATES,
    STUCK_TASK_STATES,
    TASK_TRANSITIONS,
    WORKFLOW_TRANSITIONS,
    TaskState,
    WorkflowState,
    task_can,
    workflow_can,
)

# Written out from DESIGN section 4, independently of worker/states.py.
EXPECTED_WORKFLOW_MOVES = {
    ("edition", "started"),  # start
    ("started", "paused"),  # pause
    ("paused", "started"),  # resume, or start on a paused workflow
    ("started", "finished"),  # no task left
    ("started", "stopped"),  # stop
    ("started", "error"),  # an activity failed under `suspend`, or too many errors
    ("paused", "stopped"),  # stop applies to a paused workflow too
    ("error", "started"),  # resume re-executes the failed activity
    ("error", "stopped"),  # stop
    ("finished", "started"),  # start again
    ("stopped", "started"),  # start again, from the beginning
}

EXPECTED_TASK_MOVES = {
    ("pending", "running"),  # a worker claims it
    ("pending", "held"),  # the workflow is paused
    ("pending", "aborted"),  # stop
    ("pending", "done"),  # skip
    ("running", "done"),
    ("running", "failed"),
    ("running", "aborted"),  # stop cancels running imports and queries
    ("running", "pending"),  # the reaper re-enqueues a task whose worker died
    ("running", "waiting"),  # an activity parks itself until woken (engine.wake)
    ("waiting", "pending"),  # timer due or signal received
    ("waiting", "held"),  # the workflow is paused
    ("waiting", "done"),  # a listener fired, or skip
    ("waiting", "aborted"),  # stop
    ("held", "pending"),  # resume, or a suspended activity released
    ("held", "aborted"),  # stop
    ("held", "done"),  # skip
    ("failed", "pending"),  # resume or retry re-executes it
    ("failed", "aborted"),  # `ignore`, or stop
    ("failed", "done"),  # skip
    ("running", "dead"),  # the worker was lost CARILLON_MAX_ATTEMPTS times (poison)
    ("dead", "pending"),  # an operator's requeue (or resume) runs it again
    ("dead", "aborted"),  # stop
    ("dead", "done"),  # skip
}

WORKFLOW_PAIRS = list(itertools.product([s.value for s in WorkflowState], repeat=2))
TASK_PAIRS = list(itertools.product([s.value for s in TaskState], repeat=2))


def test_workflow_states_are_the_six_of_the_design() -> None:
    assert [s.value for s in WorkflowState] == [
        "edition",
        "started",
        "paused",
        "finished",
        "stopped",
        "error",
    ]


def test_task_states_are_the_seven_of_the_design_and_dead() -> None:
    # `dead` (RELIABILITY 3.5): a poison task the attempt cap stopped, until requeued.
    assert {s.value for s in TaskState} == {
        "pending",
        "running",
        "waiting",
        "held",
        "done",
        "failed",
        "dead",
        "aborted",
    }


def test_states_compare_equal_to_their_stored_strings() -> None:
    assert WorkflowState.STARTED == "started"
    assert TaskState("held") is TaskState.HELD
    assert f"{TaskState.RUNNING}" == "running"


@pytest.mark.parametrize(("from_state", "to_state"), WORKFLOW_PAIRS)
def test_workflow_can_move_exactly_as_the_design_says(from_state: str, to_state: str) -> None:
    expected = (from_state, to_state) in EXPECTED_WORKFLOW_MOVES

    assert workflow_can(from_state, to_state) is expected


@pytest.mark.parametrize(("from_state", "to_state"), TASK_PAIRS)
def test_task_can_move_exactly_as_the_design_says(from_state: str, to_state: str) -> None:
    expected = (from_state, to_state) in EXPECTED_TASK_MOVES

    assert task_can(from_state, to_state) is expected


def test_the_workflow_table_has_a_row_for_every_state() -> None:
    assert set(WORKFLOW_TRANSITIONS) == set(WorkflowState)


def test_the_task_table_has_a_row_for_every_state() -> None:
    assert set(TASK_TRANSITIONS) == set(TaskState)


def test_the_tables_hold_the_expected_moves_and_no_other() -> None:
    workflow_moves = {(a.value, b.value) for a, row in WORKFLOW_TRANSITIONS.items() for b in row}
    task_moves = {(a.value, b.value) for a, row in TASK_TRANSITIONS.items() for b in row}

    assert workflow_moves == EXPECTED_WORKFLOW_MOVES
    assert task_moves == EXPECTED_TASK_MOVES


def test_no_state_moves_to_itself() -> None:
    assert not any(workflow_can(s, s) for s in WorkflowState)
    assert not any(task_can(s, s) for s in TaskState)


def test_done_and_aborted_tasks_are_terminal() -> None:
    for state in ("done", "aborted"):
        assert not any(task_can(state, other) for other in TaskState)


def test_edition_is_never_returned_to() -> None:
    assert not any(workflow_can(other, "edition") for other in WorkflowState)


def test_every_workflow_state_can_be_left() -> None:
    # A workflow never gets stuck: each state has a way out.
    for state in WorkflowState:
        assert WORKFLOW_TRANSITIONS[state], state


def test_a_stopped_workflow_cannot_resume_from_where_it_was() -> None:
    # stop cannot be undone by a pause/resume: only a fresh start leaves `stopped`.
    assert {s for s in WorkflowState if workflow_can("stopped", s)} == {WorkflowState.STARTED}


def test_open_workflow_states_are_those_that_may_hold_tasks() -> None:
    assert {"started", "paused", "error"} == OPEN_WORKFLOW_STATES


def test_active_task_states_keep_a_workflow_started() -> None:
    assert {"pending", "running", "waiting", "held"} == ACTIVE_TASK_STATES


def test_ready_task_states_are_the_terminal_ones() -> None:
    assert {"done", "aborted"} == READY_TASK_STATES
    assert {s for s in TaskState if not TASK_TRANSITIONS[s]} == READY_TASK_STATES


def test_a_failed_task_is_neither_active_nor_ready() -> None:
    # It waits for resume, skip or stop, but does not keep the workflow started on its own.
    assert TaskState.FAILED not in ACTIVE_TASK_STATES
    assert TaskState.FAILED not in READY_TASK_STATES


def test_a_dead_task_is_neither_active_nor_ready() -> None:
    # Like a failed task it waits for an operator: requeue, resume, skip or stop.
    assert TaskState.DEAD not in ACTIVE_TASK_STATES | READY_TASK_STATES
    assert {"failed", "dead"} == STUCK_TASK_STATES


def test_every_task_state_is_active_ready_or_stuck() -> None:
    assert set(TaskState) == ACTIVE_TASK_STATES | READY_TASK_STATES | STUCK_TASK_STATES
    assert not ACTIVE_TASK_STATES & READY_TASK_STATES
    assert not (ACTIVE_TASK_STATES | READY_TASK_STATES) & STUCK_TASK_STATES


@pytest.mark.parametrize(
    ("from_state", "to_state"), [("started", "bogus"), ("bogus", "started"), ("", "started")]
)
def test_workflow_can_refuses_an_unknown_state_name(from_state: str, to_state: str) -> None:
    with pytest.raises(ValueError, match="is not a valid WorkflowState"):
        workflow_can(from_state, to_state)


@pytest.mark.parametrize(
    ("from_state", "to_state"), [("running", "bogus"), ("bogus", "done"), ("RUNNING", "done")]
)
def test_task_can_refuses_an_unknown_state_name(from_state: str, to_state: str) -> None:
    with pytest.raises(ValueError, match="is not a valid TaskState"):
        task_can(from_state, to_state)


def test_a_task_state_name_is_not_a_workflow_state_name() -> None:
    with pytest.raises(ValueError):
        workflow_can("pending", "running")
