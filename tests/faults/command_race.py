"""F14: a hypothesis.stateful model of a workflow's commands and signal, run on the live stack.

Each example launches a fresh signal-wait workflow (started, its signal waiting). Rules send
start/pause/resume/stop and triggers over the API, one at a time or two at once from two
threads; after each step the commands are applied (polled, bounded) and the model is held
against the database: the workflow's state, the triggers by state, one open listener while
the workflow runs and none once stopped, and no activity started while paused. The model is
written from DESIGN.md 4 (not from the engine's code): it is the oracle of the transitions.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from sqlalchemy import func, select, text

from tests.faults.harness import Answer, ApiClient, FaultStack
from tests.integration.conftest import wait_for
from worker.models import Command, Task, Trigger, Workflow
from worker.states import TaskState

METHODS = ("start", "pause", "resume", "stop")
#: Answers a command or a trigger may get here; anything else (a 5xx first) fails the step.
DOCUMENTED = frozenset({202, 409, 429})
OPEN_TASKS = ("pending", "running", "waiting", "held")
#: Bounds of one step: the commands applied, the stop's tasks settled.
APPLY_TIMEOUT = 30.0
#: Seconds a trigger is pushed into the past to clear CARILLON_SIGNAL_MIN_INTERVAL (600 s).
AGE_SECONDS = 3600


def command_target(state: str, method: str) -> str | None:
    """DESIGN.md 4, Commands: the state `method` leads to from `state`, None if refused (409)."""
    if method == "start":
        return None if state == "started" else "started"  # on a paused workflow: resumes
    if method == "pause":
        return "paused" if state == "started" else None
    if method == "resume":
        return "started" if state in ("paused", "error") else None
    return "stopped" if state in ("started", "paused", "error") else None


@dataclass
class Model:
    """What the workflow must be after the steps so far."""

    state: str = "started"
    #: Trigger rows by state (queued, accepted, dropped).
    triggers: Counter[str] = field(default_factory=Counter)
    #: A trigger newer than the minimum interval exists (the next one gets 429).
    recent: bool = False

    def command(self, method: str) -> int:
        """Apply a command the API answered; the status it had to answer."""
        target = command_target(self.state, method)
        if target is None:
            return 409
        if self.state == "paused" and target == "started":
            self.triggers["accepted"] += self.triggers.pop("queued", 0)
        if target == "stopped":
            self.triggers["dropped"] += self.triggers.pop("queued", 0)
        self.state = target
        return 202

    def trigger(self) -> tuple[int, str | None]:
        """DESIGN.md 4, trigger: 409 unless started or paused, then 429 within the interval,
        else 202, queued while paused; the status and the trigger's state."""
        if self.state not in ("started", "paused"):
            return 409, None
        if self.recent:
            return 429, None
        state = "queued" if self.state == "paused" else "accepted"
        self.triggers[state] += 1
        self.recent = True
        return 202, state

    def copy(self) -> Model:
        return Model(self.state, Counter(self.triggers), self.recent)


class Observed:
    """The database's view of one workflow (a fresh session per read)."""

    def __init__(self, stack: FaultStack, name: str) -> None:
        self.stack, self.name = stack, name
        with stack.sessions() as s:
            self.workflow_id = s.execute(
                select(Workflow.id).where(Workflow.name == name)
            ).scalar_one()

    def state(self) -> str:
        with self.stack.sessions() as s:
            found = s.get(Workflow, self.workflow_id)
            assert found is not None, self.name
            return str(found.state)

    def pending_commands(self) -> int:
        with self.stack.sessions() as s:
            return int(
                s.execute(
                    select(func.count()).where(
                        Command.workflow_id == self.workflow_id, Command.state == "pending"
                    )
                ).scalar_one()
            )

    def triggers(self) -> Counter[str]:
        with self.stack.sessions() as s:
            rows = s.execute(
                select(Trigger.state, func.count())
                .where(Trigger.workflow_id == self.workflow_id)
                .group_by(Trigger.state)
            ).all()
        return Counter({state: count for state, count in rows})

    def open_tasks(self) -> list[Any]:
        with self.stack.sessions() as s:
            return list(
                s.execute(
                    select(Task.activity, Task.state).where(
                        Task.workflow_id == self.workflow_id, Task.state.in_(OPEN_TASKS)
                    )
                ).all()
            )

    def started_since(self, mark: dt.datetime) -> list[Any]:
        with self.stack.sessions() as s:
            return list(
                s.execute(
                    select(Task.activity, Task.state, Task.started_at).where(
                        Task.workflow_id == self.workflow_id, Task.started_at > mark
                    )
                ).all()
            )

    def task_states(self) -> set[str]:
        with self.stack.sessions() as s:
            return set(
                s.scalars(select(Task.state).where(Task.workflow_id == self.workflow_id)).all()
            )

    def db_now(self) -> dt.datetime:
        with self.stack.sessions() as s:
            now: dt.datetime = s.execute(select(func.now())).scalar_one()
        return now

    def age_triggers(self) -> None:
        """Move the workflow's triggers an hour back (DB time is the authority of the
        10-minute rule, RELIABILITY.md 5.1: tests age rows instead of waiting)."""
        with self.stack.sessions() as s, s.begin():
            s.execute(
                text(
                    'UPDATE "trigger" SET created_at = created_at - make_interval(secs => :age) '
                    "WHERE workflow_id = :workflow"
                ),
                {"age": AGE_SECONDS, "workflow": self.workflow_id},
            )


def _both(calls: list[Any]) -> list[Answer]:
    """Run two API calls at once from two threads (joined, bounded); their answers in order."""
    answers: list[Answer | None] = [None] * len(calls)

    def run(index: int) -> None:
        answers[index] = calls[index]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert all(a is not None for a in answers), "a racing call did not return within 60 s"
    return [a for a in answers if a is not None]


def machine(
    stack: FaultStack, client: ApiClient, launch_one: Any
) -> tuple[type[RuleBasedStateMachine], list[str]]:
    """The state machine class bound to a live stack, and the list that receives the name of
    each example's workflow; `launch_one()` launches a fresh started signal-wait workflow
    and returns (name, segment)."""
    launched: list[str] = []

    class CommandRaces(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.name, self.segment = launch_one()
            launched.append(self.name)
            self.db = Observed(stack, self.name)
            self.model = Model()
            self.paused_since: dt.datetime | None = None
            self.steps: list[str] = []

        # -------------------------------------------------------------- the calls

        def _command(self, method: str) -> Answer:
            return client.command(self.name, method)

        def _trigger(self) -> Answer:
            return client.trigger(self.name, "signal1", {"segmentCode": self.segment})

        def _documented(self, answer: Answer, what: str) -> None:
            assert answer.status in DOCUMENTED, (what, answer.status, answer.body, self.steps)
            if answer.status == 429:
                assert answer.headers.get("Retry-After"), (what, answer.headers)

        def _settle(self) -> None:
            """Wait (bounded) until every recorded command is applied, then for a stopped
            workflow until its open tasks are aborted."""
            wait_for(lambda: self.db.pending_commands() == 0, APPLY_TIMEOUT, "commands applied")
            if self.model.state == "stopped":
                wait_for(lambda: not self.db.open_tasks(), APPLY_TIMEOUT, "stop to settle")
            elif self.model.state in ("started", "paused"):
                # A start's first tasks may be created just after its command is applied
                try:
                    wait_for(self._listeners, APPLY_TIMEOUT, f"{self.name}'s signal to listen")
                except AssertionError as lost:
                    raise AssertionError(f"{lost}: {self._story()}") from None
            if self.model.state == "paused" and self.paused_since is None:
                self.paused_since = self.db.db_now()
            elif self.model.state != "paused":
                self.paused_since = None

        # -------------------------------------------------------------- rules

        @rule(method=st.sampled_from(METHODS))
        def command(self, method: str) -> None:
            self.steps.append(method)
            answer = self._command(method)
            self._documented(answer, method)
            expected = self.model.command(method)
            assert answer.status == expected, (method, answer.status, answer.body, self.steps)
            self.steps[-1] += f"={answer.status}->{self.model.state}"
            self._settle()

        @rule(first=st.sampled_from(METHODS), second=st.sampled_from(METHODS))
        def race_commands(self, first: str, second: str) -> None:
            """Two commands at once: the answers must be those of one order or the other
            (each is checked against the projected state under a row lock)."""
            self.steps.append(f"{first}||{second}")
            got = _both([lambda: self._command(first), lambda: self._command(second)])
            for answer, method in zip(got, (first, second), strict=True):
                self._documented(answer, method)
            statuses = (got[0].status, got[1].status)
            sent = (first, second)
            orders = [(0, 1), (1, 0)]  # the order the row lock let them through
            if statuses == (202, 202):  # both recorded: their ids say in which order
                ids = (got[0].body["id"], got[1].body["id"])
                orders = [(0, 1) if ids[0] < ids[1] else (1, 0)]
            matching = []
            for order in orders:
                trial = self.model.copy()
                answers = {index: trial.command(sent[index]) for index in order}
                if (answers[0], answers[1]) == statuses:
                    matching.append(trial)
            assert matching, (first, second, statuses, self.model, self.steps)
            self.model = matching[0]
            self.steps[-1] += f"={statuses[0]},{statuses[1]}->{self.model.state}"
            self._settle()

        def _seen(self, answer: Answer) -> tuple[int, str | None]:
            state = answer.body.get("state") if answer.status == 202 else None
            return answer.status, state

        @rule()
        def trigger(self) -> None:
            self.steps.append("trigger")
            answer = self._trigger()
            self._documented(answer, "trigger")
            expected = self.model.trigger()
            assert self._seen(answer) == expected, (answer.status, answer.body, self.steps)
            self.steps[-1] += f"={answer.status}->{self.model.state}"
            self._settle()

        @rule(method=st.sampled_from(METHODS))
        def race_trigger_and_command(self, method: str) -> None:
            """A trigger and a command at once. The command's answer does not depend on the
            trigger; the trigger sees the state before the command is applied or after (a
            worker applies it meanwhile), and either outcome must be whole."""
            self.steps.append(f"trigger||{method}")
            got = _both([self._trigger, lambda: self._command(method)])
            self._documented(got[0], "trigger")
            self._documented(got[1], method)
            trigger_first, command_first = self.model.copy(), self.model.copy()
            early = trigger_first.trigger()
            outcomes = [((early, trigger_first.command(method)), trigger_first)]
            answered = command_first.command(method)
            outcomes.append(((command_first.trigger(), answered), command_first))
            seen = (self._seen(got[0]), got[1].status)
            matching = [model for pair, model in outcomes if pair == seen]
            assert matching, (method, seen, [pair for pair, _ in outcomes], self.steps)
            self.model = matching[0]
            self.steps[-1] += f"={seen[0][0]},{seen[1]}->{self.model.state}"
            self._settle()

        @rule()
        def age_triggers(self) -> None:
            """The minimum interval has passed (rows aged in the database)."""
            self.steps.append("age")
            self.db.age_triggers()
            self.model.recent = False

        # -------------------------------------------------------------- invariants

        @invariant()
        def the_model_matches_the_database(self) -> None:
            state = self.db.state()
            assert state == self.model.state, (state, self.model, self.steps)
            triggers = self.db.triggers()
            assert triggers == +self.model.triggers, (triggers, self.model.triggers, self.steps)

        def _story(self) -> str:
            """The steps, the model, and the database's workflow and tasks (for a failure)."""
            tasks = [(r.activity, r.state, r.job_id[:8]) for r in stack.tasks(self.name)]
            return f"steps {self.steps}; model {self.model}; db {self.db.state()}; tasks {tasks}"

        def _listeners(self) -> list[Any]:
            return [r for r in self.db.open_tasks() if r.activity == "signal1"]

        @invariant()
        def one_listener_while_running_none_once_stopped(self) -> None:
            listening = self._listeners()
            if self.model.state in ("started", "paused"):
                assert len(listening) == 1, (listening, self.db.state(), self.model, self.steps)
            elif self.model.state == "stopped":
                assert self.db.open_tasks() == [], (self.db.open_tasks(), self.steps)

        @invariant()
        def a_paused_workflow_starts_no_activity(self) -> None:
            if self.paused_since is not None:
                started = self.db.started_since(self.paused_since)
                assert started == [], (started, self.steps)

        @invariant()
        def task_states_are_known(self) -> None:
            known = {state.value for state in TaskState}
            assert self.db.task_states() <= known, self.db.task_states()

        def teardown(self) -> None:
            print(f"F14 {self.name}: {len(self.steps)} steps: {' '.join(self.steps)}")
            # Leave the example's workflow stopped: the oracle judges it at the end.
            if self.db.state() in ("started", "paused", "error"):
                wait_for(lambda: self._command("stop").status in (202, 409), 30, "a final stop")
            wait_for(lambda: self.db.state() == "stopped", 60, f"{self.name} to stop")

    return CommandRaces, launched
