"""Validations on real servers: a worker parks the task, a human decides, the workflow goes on.

Every test runs on PostgreSQL + Redis and on the embedded default (SQLite + filesystem broker),
with a real worker and beat (whose tick fires the timeouts).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

from tests.integration.conftest import Stack, start_api, wait_for
from tests.integration.test_api_live import Client
from worker import catalog, validations
from worker.messaging import validation
from worker.models import Task, Workflow
from worker.states import ACTIVE_TASK_STATES

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def api(stack: Stack) -> Iterator[str]:
    """The API under gunicorn on the stack's database and broker."""
    yield start_api(stack)
    stack.kill("api")


def approval(name: str, **options: Any) -> dict[str, Any]:
    return {
        "id": name,
        "activities": [
            {"name": "start1", "type": "start", "transitions": {"done": "validation1"}},
            {
                "name": "validation1",
                "type": "validation",
                "subject": "Send it?",
                "assignee": "alice",
                **options,
                "transitions": {"approved": "sent", "rejected": "dropped", "timeout": "late"},
            },
            {"name": "sent", "type": "end"},
            {"name": "dropped", "type": "end"},
            {"name": "late", "type": "end"},
        ],
    }


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def row_of(stack: Stack, workflow: str) -> dict[str, Any] | None:
    with stack.sessions() as s:
        found = s.execute(
            select(validation)
            .join(Workflow, Workflow.id == validation.c.workflow_id)
            .where(Workflow.name == workflow)
        ).first()
    if found is None:
        return None
    return {column.key: found._mapping[column] for column in validation.c}


def tasks_of(stack: Stack, workflow: str) -> dict[str, tuple[str, list[str] | None]]:
    with stack.sessions() as s:
        rows = s.execute(
            select(Task.activity, Task.state, Task.outlets)
            .join(Workflow)
            .where(Workflow.name == workflow)
        ).all()
    return {row.activity: (row.state, row.outlets) for row in rows}


def settled(stack: Stack, workflow: str) -> None:
    """Nothing left active and no activity message left in the broker."""
    wait_for(stack.activity_queues_drained, 30, "the activity queues to drain")
    active = [
        a for a, (state, _) in tasks_of(stack, workflow).items() if state in ACTIVE_TASK_STATES
    ]
    assert active == []


def test_approved_over_http_the_workflow_finishes_on_approved(stack: Stack, api: str) -> None:
    org, name = unique("org"), unique("approval")
    with stack.sessions() as s, s.begin():
        created = catalog.create_credentials(s, org)
    client = Client(api, org, created["apiKey"], created["token"])
    # Given a workflow started over HTTP that waits for alice's validation
    assert client.call("POST", "/workflow/definitions", approval(name))[0] == 201
    assert (
        client.call("POST", f"/workflow/execution/{name}/commands", {"method": "start"})[0] == 202
    )

    def pending() -> list[Any]:
        status, body, _ = client.call("GET", "/workflow/validation?state=pending&assignee=alice")
        assert status == 200, body
        return list(body["content"])

    (item,) = wait_for(pending, 60, "the validation to be listed")
    assert tasks_of(stack, name)["validation1"][0] == "waiting"
    # When alice approves it through the href the list gave
    status, decided, _ = client.call(
        "POST", item["decision"]["href"], {"decision": "approve", "user": "alice"}
    )
    assert status == 200, decided
    assert decided["state"] == "approved"
    # Then the workflow continues on `approved` and finishes
    stack.wait_state(name, "finished")
    found = tasks_of(stack, name)
    assert found["validation1"] == ("done", ["approved"])
    assert found["sent"][0] == "done" and "dropped" not in found
    settled(stack, name)
    again = client.call("POST", item["decision"]["href"], {"decision": "approve", "user": "bob"})
    assert again[0] == 409


def test_rejected_through_the_library_the_workflow_finishes_on_rejected(stack: Stack) -> None:
    name = unique("reject")
    stack.save(approval(name, group="marketing"))
    stack.engine.command(None, name, "start")
    row = wait_for(lambda: row_of(stack, name), 60, "the validation row")
    wait_for(lambda: tasks_of(stack, name)["validation1"][0] == "waiting", 30, "the task to park")

    validations.decide(stack.engine, None, f"@{row['pkey']}", "reject", "wrong price", "bob")

    stack.wait_state(name, "finished")
    assert tasks_of(stack, name)["validation1"] == ("done", ["rejected"])
    assert row_of(stack, name)["state"] == "rejected"  # type: ignore[index]
    settled(stack, name)


def test_a_decision_while_paused_runs_after_resume(stack: Stack) -> None:
    name = unique("paused")
    stack.save(approval(name))
    stack.engine.command(None, name, "start")
    row = wait_for(lambda: row_of(stack, name), 60, "the validation row")
    wait_for(lambda: tasks_of(stack, name)["validation1"][0] == "waiting", 30, "the task to park")
    stack.engine.command(None, name, "pause")

    validations.decide(stack.engine, None, f"@{row['pkey']}", "approve", None, "bob")
    assert tasks_of(stack, name)["validation1"][0] == "held"
    assert stack.state(name) == "paused"

    stack.engine.command(None, name, "resume")
    stack.wait_state(name, "finished")
    assert tasks_of(stack, name)["validation1"] == ("done", ["approved"])
    settled(stack, name)


def test_without_a_decision_the_beat_tick_fires_the_timeout_outlet(stack: Stack) -> None:
    name = unique("late")
    stack.save(approval(name, timeout="2s"))
    stack.engine.command(None, name, "start")

    stack.wait_state(name, "finished", timeout=60)

    assert tasks_of(stack, name)["validation1"] == ("done", ["timeout"])
    row = row_of(stack, name)
    assert row is not None and row["state"] == "timedOut"
    with pytest.raises(validations.DecisionRefused):
        validations.decide(stack.engine, None, f"@{row['pkey']}", "approve", None, "bob")
    settled(stack, name)
