"""F14: random interleavings of commands, triggers and worker progress keep the state machine valid.

A hypothesis state machine drives the API (test client, SQLite, stub dispatcher) and a model of
the workflow's state; after every step the database must agree with the model, and every state
change ever recorded must be an allowed edge.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from sqlalchemy import select

from tests.api_conftest import SIGNAL_WORKFLOW, Rest
from worker.models import StateEvent, Trigger
from worker.states import TASK_TRANSITIONS, WORKFLOW_TRANSITIONS, TaskState, WorkflowState

#: DESIGN section 4, written out here so the model does not share code with the engine:
#: command -> {state it applies to: state it leads to}.
COMMANDS = {
    "start": dict.fromkeys(["edition", "finished", "stopped", "error", "paused"], "started"),
    "pause": {"started": "paused"},
    "resume": {"paused": "started", "error": "started"},
    "stop": dict.fromkeys(["started", "paused", "error"], "stopped"),
}


class Interleavings(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.home = Path(tempfile.mkdtemp(prefix="carillon-f14-"))
        self.rest = Rest(self.home)
        self.name = self.rest.save(SIGNAL_WORKFLOW)
        self.model = "edition"  # the state once every accepted command is applied

    def teardown(self) -> None:
        self.rest.close()
        shutil.rmtree(self.home, ignore_errors=True)

    @rule(method=st.sampled_from(["start", "pause", "resume", "stop"]))
    def command(self, method: str) -> None:
        # Posted without running the worker: several commands may wait to be applied, and
        # each is checked against the state the earlier ones will leave.
        response = self.rest.post(
            f"/acme/campaign/workflow/execution/{self.name}/commands", {"method": method}
        )
        expected = COMMANDS[method].get(self.model)
        if expected is None:
            assert response.status_code == 409, response.json
            return
        assert response.status_code == 202, response.json
        self.model = expected

    @rule()
    def trigger(self) -> None:
        applied = self.applied_state()
        response = self.rest.post(self.rest.trigger_path(self.name), {"source": "f14"})
        if applied in ("started", "paused"):
            assert response.status_code == 202, response.json
            assert response.json["state"] == ("queued" if applied == "paused" else "accepted")
        else:
            assert response.status_code == 409, response.json

    @rule()
    def worker_runs(self) -> None:
        self.rest.stub.drain()

    def applied_state(self) -> str:
        return self.rest.workflow(self.name).state

    @invariant()
    def the_database_agrees_with_the_model_once_commands_are_applied(self) -> None:
        self.rest.stub.drain()
        assert self.applied_state() == self.model

    @invariant()
    def only_allowed_transitions_were_ever_recorded(self) -> None:
        with self.rest.services.sessions() as s:
            events = s.execute(
                select(StateEvent.entity, StateEvent.from_state, StateEvent.to_state)
            ).all()
        for entity, from_state, to_state in events:
            if from_state is None or "|" in from_state:
                continue
            if entity == "workflow":
                assert WorkflowState(to_state) in WORKFLOW_TRANSITIONS[WorkflowState(from_state)]
            else:
                assert TaskState(to_state) in TASK_TRANSITIONS[TaskState(from_state)]

    @invariant()
    def no_trigger_stays_queued_on_a_started_or_stopped_workflow(self) -> None:
        self.rest.stub.drain()
        if self.model in ("started", "stopped"):
            with self.rest.services.sessions() as s:
                queued = s.scalars(select(Trigger.id).where(Trigger.state == "queued")).all()
            assert queued == []


Interleavings.TestCase.settings = settings(
    max_examples=40,
    stateful_step_count=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_commands_and_triggers_interleave_without_breaking_the_state_machine = Interleavings.TestCase
