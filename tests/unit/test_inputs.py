"""What transitions carry (populations, files) reaches the right successors."""

from __future__ import annotations

from sqlalchemy import select

from tests.conftest import Harness
from worker.models import Task, Workflow


def _vars_of(harness: Harness, activity: str) -> dict[str, object]:
    rows = harness.query(select(Task.vars, Task.inputs).where(Task.activity == activity))
    assert len(rows) == 1, rows
    return dict(rows[0].vars)


def test_an_output_reaches_the_successor_and_passes_through_activities_without_one(
    harness: Harness,
) -> None:
    harness.start(
        """
        id: carry
        activities:
          - {name: start1, type: start, transitions: {done: emit1}}
          - {name: emit1, type: emit, transitions: {done: fork1}}
          - {name: fork1, type: fork, transitions: {done: [collect1, emit2, collect3]}}
          - {name: collect1, type: collect, transitions: {done: end1}}
          - {name: emit2, type: emit, transitions: {done: join1}}
          - {name: collect3, type: collect, transitions: {done: join1}}
          - {name: join1, type: andJoin, transitions: {done: collect2}}
          - {name: collect2, type: collect, transitions: {done: end2}}
          - {name: end1, type: end}
          - {name: end2, type: end}
        """
    )
    harness.stub.drain()

    # fork1 carries nothing of its own: collect1 sees emit1's output, passed through.
    assert _vars_of(harness, "collect1")["seen_collect1"] == ["emit1"]
    # The join merges its branches' inputs, keyed by producing activity.
    assert _vars_of(harness, "collect2")["seen_collect2"] == ["emit1", "emit2"]
    inputs = harness.query(select(Task.inputs).where(Task.activity == "collect2"))[0].inputs
    assert inputs["emit2"] == {"kind": "file", "path": "emit2"}


def test_tasks_without_inbound_outputs_have_no_inputs(harness: Harness) -> None:
    harness.start(
        """
        id: nothing
        activities:
          - {name: start1, type: start, transitions: {done: collect1}}
          - {name: collect1, type: collect, transitions: {done: end1}}
          - {name: end1, type: end}
        """
    )
    harness.stub.drain()

    assert _vars_of(harness, "collect1")["seen_collect1"] == []


def test_one_task_may_lead_to_two_joins(harness: Harness) -> None:
    harness.start(
        """
        id: twojoins
        activities:
          - {name: start1, type: start, transitions: {done: fork1}}
          - {name: fork1, type: fork, transitions: {done: [emit1, emit2]}}
          - {name: emit1, type: emit, transitions: {done: [join1, join2]}}
          - {name: emit2, type: emit, transitions: {done: [join1, join2]}}
          - {name: join1, type: andJoin, transitions: {done: collect1}}
          - {name: join2, type: andJoin, transitions: {done: collect2}}
          - {name: collect1, type: collect, transitions: {done: end1}}
          - {name: collect2, type: collect, transitions: {done: end2}}
          - {name: end1, type: end}
          - {name: end2, type: end}
        """
    )
    harness.stub.drain()

    assert _vars_of(harness, "collect1")["seen_collect1"] == ["emit1", "emit2"]
    assert _vars_of(harness, "collect2")["seen_collect2"] == ["emit1", "emit2"]
    assert harness.query(select(Workflow.state))[0].state == "finished"


def test_two_outlets_into_one_join_arrive_once_carrying_both(harness: Harness) -> None:
    harness.start(
        """
        id: twooutlets
        activities:
          - {name: start1, type: start, transitions: {done: fork1}}
          - {name: fork1, type: fork, transitions: {done: [split1, emit1]}}
          - {name: split1, type: emitTwo, transitions: {a: join1, b: join1}}
          - {name: emit1, type: emit, transitions: {done: join1}}
          - {name: join1, type: andJoin, transitions: {done: collect1}}
          - {name: collect1, type: collect, transitions: {done: end1}}
          - {name: end1, type: end}
        """
    )
    harness.stub.drain()

    assert _vars_of(harness, "collect1")["seen_collect1"] == ["emit1", "split1.a", "split1.b"]
    assert harness.query(select(Workflow.state))[0].state == "finished"
