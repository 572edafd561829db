"""The oracle: invariants I1-I7 of RELIABILITY.md 5.2 mapped onto Carillon's schema.

Side effects are counted where they land, at the SMTP server and the fake provider, not in
our tables. `check()` returns a `Verdict` listing each invariant checked and every
violation (which invariant, what broke); a scenario asserts `verdict.violations == []`.

Mapping: a run is a job (`job`), an activity run a `task`; I2 is "one task per (job,
activity) in our acyclic workloads, and a workflow ends at most once"; I4 walks
`state_event` against `worker.states`; I5 reads the Redis queues and the `unacked` hash;
I6 reads `technical_fire`; I7 reads the scenario's API history and every process log.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select

from tests.faults.harness import Call, FaultStack
from worker.models import Command, Job, StateEvent, Task, Workflow
from worker.queues import CONTROL_QUEUE, QUEUES
from worker.states import TASK_TRANSITIONS, WORKFLOW_TRANSITIONS, TaskState, WorkflowState
from worker.technical import install
from worker.technical.tables import technical_fire

#: Task states that mean "not settled yet" (a waiting listener is settled: it waits for you).
UNSETTLED = {"pending", "running", "held"}
#: Task states that mean the run broke (an error the scenario did not ask for).
BROKEN = {"failed", "dead"}
LISTENERS = {"externalSignal", "scheduler"}
DELIVERY_MESSAGE = re.compile(r"[0-9a-f-]{36}\.\d+")


@dataclass(frozen=True)
class Violation:
    invariant: str
    detail: str

    def __str__(self) -> str:
        return f"{self.invariant}: {self.detail}"


@dataclass
class Verdict:
    checked: list[str] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)
    #: Seconds from the fault to a settled stack (filled by the scenario).
    recovery: float | None = None

    def add(self, invariant: str, detail: str) -> None:
        self.violations.append(Violation(invariant, detail))

    @property
    def held(self) -> list[str]:
        broken = {v.invariant for v in self.violations}
        return [name for name in self.checked if name not in broken]

    def __str__(self) -> str:
        return "\n".join(str(v) for v in self.violations) or "all invariants held"


def settled(stack: FaultStack, workflows: Iterable[str]) -> bool:
    """Nothing of these workflows left to run: no pending/running/held task, no open run."""
    with stack.sessions() as s:
        commands = s.scalar(
            select(func.count())
            .select_from(Command)
            .join(Workflow, Workflow.id == Command.workflow_id)
            .where(Workflow.name.in_(list(workflows)), Command.state == "pending")
        )
    if commands:
        return False  # a start recorded but not applied yet: its run is still to come
    for name in workflows:
        rows = stack.tasks(name)
        if any(r.state in UNSETTLED for r in rows):
            return False
        if any(r.state == "waiting" and r.activity_type not in LISTENERS for r in rows):
            return False
        has_listener = any(r.activity_type in LISTENERS for r in rows)
        if not has_listener and stack.state(name) not in ("finished", "error", "stopped"):
            return False
    return True


def quiesce(stack: FaultStack, workflows: list[str], timeout: float = 120) -> float:
    """Wait (bounded) for the workflows to settle; returns the seconds it took."""
    start = time.monotonic()
    deadline = start + timeout
    while time.monotonic() < deadline:
        try:
            if settled(stack, workflows):
                break
        except Exception:  # the database may still be coming back: poll again
            pass
        time.sleep(0.2)
    return time.monotonic() - start


def check(
    stack: FaultStack,
    workflows: list[str],
    *,
    technical: bool = False,
    drain_timeout: float | None = None,
    poison: frozenset[str] = frozenset(),
    restarts: bool = False,
) -> Verdict:
    """I1-I7 over `workflows`; activities in `poison` are expected to end failed or dead;
    `restarts`: the scenario starts workflows again after they ended (technical fires,
    command races)."""
    verdict = Verdict()
    _i1_no_stuck_run(stack, workflows, verdict, poison)
    _i2_once(stack, workflows, verdict, restarts=technical or restarts)
    _i3_no_double_delivery(stack, verdict)
    _i4_monotonic(stack, workflows, verdict)
    # RELIABILITY 5.3 F2: recovered within the visibility timeout plus a sweep period.
    bound = stack.settings.visibility_timeout + 10 if drain_timeout is None else drain_timeout
    _i5_drained(stack, verdict, bound)
    if technical:
        _i6_periodic(stack, verdict)
    _i7_api_and_logs(stack, verdict)
    return verdict


def _i1_no_stuck_run(
    stack: FaultStack, workflows: list[str], verdict: Verdict, poison: frozenset[str]
) -> None:
    verdict.checked.append("I1")
    for name in workflows:
        rows = stack.tasks(name)
        stuck = [f"{r.activity}={r.state}" for r in rows if r.state in UNSETTLED]
        stuck += [
            f"{r.activity}=waiting"
            for r in rows
            if r.state == "waiting" and r.activity_type not in LISTENERS
        ]
        broken = [
            f"{r.activity}={r.state}"
            for r in rows
            if r.state in BROKEN and r.activity not in poison
        ]
        unbroken = poison & {r.activity for r in rows if r.state not in BROKEN}
        if unbroken:
            verdict.add("I1", f"{name}: poison activities did not end failed/dead: {unbroken}")
        if stuck:
            verdict.add("I1", f"{name}: tasks not settled after quiesce: {stuck}")
        if broken:
            verdict.add("I1", f"{name}: tasks broke: {broken}")
        has_listener = any(r.activity_type in LISTENERS for r in rows)
        state = stack.state(name)
        expected = "error" if poison else "finished"
        if not has_listener and state != expected:
            verdict.add("I1", f"{name}: workflow is {state}, not {expected}")


def _i2_once(stack: FaultStack, workflows: list[str], verdict: Verdict, restarts: bool) -> None:
    verdict.checked.append("I2")
    for name in workflows:
        per_activity = Counter((r.job_id, r.activity) for r in stack.tasks(name))
        twice = [activity for (_, activity), n in per_activity.items() if n > 1]
        if twice:
            verdict.add("I2", f"{name}: activities instantiated twice in one job: {twice}")
        with stack.sessions() as s:
            workflow_id = s.scalar(select(Workflow.id).where(Workflow.name == name))
            history = s.scalars(
                select(StateEvent.to_state)
                .where(StateEvent.entity == "workflow", StateEvent.entity_id == str(workflow_id))
                .order_by(StateEvent.id)
            ).all()
        ends = [i for i, state in enumerate(history) if state in ("finished", "stopped")]
        if restarts:
            # A technical workflow runs again at each fire: an end is followed by a start.
            reopened = [i for i in ends[:-1] if history[i + 1] != "started"]
            if reopened or len(ends) > history.count("started"):
                verdict.add("I2", f"{name}: ended without a start in between: {history}")
            continue
        if len(ends) > 1:
            verdict.add("I2", f"{name}: ended {len(ends)} times: {history}")
        if ends and ends[0] != len(history) - 1:
            verdict.add("I2", f"{name}: reopened after it ended: {history}")


def _i3_no_double_delivery(stack: FaultStack, verdict: Verdict) -> None:
    """At most one message per (delivery, recipient) received, at the servers themselves."""
    verdict.checked.append("I3")
    # Delivery messages only (`<uuid of the delivery>.<profile>`): technical reports such as
    # billing's are one per fire, and the scenarios fire them every few seconds on purpose.
    smtp = Counter(
        (m.message_id.rsplit(".", 1)[0], recipient)
        for m in stack.servers.smtp.messages
        if DELIVERY_MESSAGE.fullmatch(m.message_id)
        for recipient in m.recipients
    )
    twice = sorted(key for key, n in smtp.items() if n > 1)
    if twice:
        verdict.add("I3", f"{len(twice)} recipient(s) got an email twice, e.g. {twice[:3]}")
    provider = Counter((a.key.rsplit(".", 1)[0], a.to) for a in stack.servers.sink.accepted)
    twice = sorted(key for key, n in provider.items() if n > 1)
    if twice:
        verdict.add("I3", f"{len(twice)} recipient(s) got an SMS twice, e.g. {twice[:3]}")


def _i4_monotonic(stack: FaultStack, workflows: list[str], verdict: Verdict) -> None:
    verdict.checked.append("I4")
    limit = stack.settings.max_attempts
    for name in workflows:
        with stack.sessions() as s:
            workflow_id = s.scalar(select(Workflow.id).where(Workflow.name == name))
            tasks = {
                row.id: row
                for row in s.execute(
                    select(Task.id, Task.activity, Task.state, Task.attempt, Task.fired).where(
                        Task.workflow_id == workflow_id
                    )
                )
            }
            events = s.execute(
                select(
                    StateEvent.entity,
                    StateEvent.entity_id,
                    StateEvent.from_state,
                    StateEvent.to_state,
                    StateEvent.attempt,
                )
                .where(StateEvent.workflow_id == workflow_id)
                .order_by(StateEvent.id)
            ).all()
        for entity, entity_id, from_state, to_state, attempt in events:
            if from_state is None:
                continue
            if entity == "task":
                allowed = TASK_TRANSITIONS[TaskState(from_state)]
                if TaskState(to_state) not in allowed:
                    verdict.add("I4", f"{name}: task {entity_id} went {from_state}->{to_state}")
                task = tasks.get(entity_id)
                if (
                    to_state == "done"
                    and task is not None
                    and attempt is not None
                    and attempt != task.attempt
                ):
                    verdict.add(
                        "I4",
                        f"{name}: {task.activity} completed by stale attempt {attempt} "
                        f"(current {task.attempt})",
                    )
            elif WorkflowState(to_state) not in WORKFLOW_TRANSITIONS[WorkflowState(from_state)]:
                verdict.add("I4", f"{name}: workflow went {from_state}->{to_state}")
        for task in tasks.values():
            # Parked runs (a wait woken up) count as attempts but not as lost workers.
            if task.attempt - (task.fired or 0) > limit:
                verdict.add("I4", f"{name}: {task.activity} ran {task.attempt} times (max {limit})")


def _activity_messages(stack: FaultStack) -> dict[str, int]:
    """Messages of the activity queues still in Redis: ready (LLEN) and unacked."""
    client = stack.servers.redis.client()
    try:
        found = {q: int(client.llen(q)) for q in QUEUES if q != CONTROL_QUEUE}
        unacked = 0
        for tag, raw in client.hgetall("unacked").items():
            _message, _exchange, routing_key = json.loads(raw)
            if routing_key != CONTROL_QUEUE and tag not in stack.unacked_baseline:
                unacked += 1
        found["unacked"] = unacked
        return {k: v for k, v in found.items() if v}
    finally:
        client.close()


def _i5_drained(stack: FaultStack, verdict: Verdict, timeout: float) -> None:
    verdict.checked.append("I5")
    deadline = time.monotonic() + timeout
    left: dict[str, int] = {}
    while time.monotonic() < deadline:
        left = _activity_messages(stack)
        if not left:
            return
        time.sleep(0.2)
    verdict.add("I5", f"activity messages left in Redis after {timeout:.0f}s: {left}")


def technical_fires(stack: FaultStack, name: str | None = None) -> list[Any]:
    """(name, slot, outcome, sends) of every technical fire, or of `name`'s."""
    stmt = select(
        technical_fire.c.name,
        technical_fire.c.slot,
        technical_fire.c.outcome,
        technical_fire.c.sends,
    ).order_by(technical_fire.c.slot)
    if name is not None:
        stmt = stmt.where(technical_fire.c.name == name)
    with stack.sessions() as s:
        return list(s.execute(stmt).all())


def _i6_periodic(stack: FaultStack, verdict: Verdict, settle: float = 15.0) -> None:
    """One fire per (name, slot) (the key), a job for every started fire, no other job.

    A fire sent just before the scenario settled may have committed its row and not yet
    applied its start command (the fire task applies it right after, or the tick does):
    that run is on its way, so the count is read again, for at most `settle` seconds.
    """
    verdict.checked.append("I6")
    deadline = time.monotonic() + settle
    problems = _i6_problems(stack)
    while problems and time.monotonic() < deadline:
        time.sleep(0.2)
        problems = _i6_problems(stack)
    for problem in problems:
        verdict.add("I6", problem)


def _i6_problems(stack: FaultStack) -> list[str]:
    problems = []
    fires = technical_fires(stack)
    with stack.sessions() as s:
        org_id = install.ensure_installed(s)
        jobs = dict(
            s.execute(
                select(Workflow.name, func.count(Job.id))
                .join(Job, Job.workflow_id == Workflow.id)
                .where(Workflow.org_id == org_id)
                .group_by(Workflow.name)
            ).all()
        )
    started = Counter(name for name, _slot, outcome, _sends in fires if outcome == "started")
    for name, count in started.items():
        if jobs.get(name, 0) != count:
            problems.append(f"{name}: {count} started fire(s) but {jobs.get(name, 0)} job(s)")
    for name, count in jobs.items():
        if name not in started and count:
            problems.append(f"{name}: {count} job(s) without a started fire")
    unsent = [(n, str(slot)) for n, slot, outcome, _sends in fires if not outcome]
    if unsent:
        problems.append(f"fires without an outcome (half-done): {unsent[:5]}")
    return problems


def _in_outage(stack: FaultStack, call: Call, grace: float = 5.0) -> bool:
    return any(start - 0.5 <= call.at <= end + grace for start, end in stack.outages)


def _i7_api_and_logs(stack: FaultStack, verdict: Verdict) -> None:
    verdict.checked.append("I7")
    for call in stack.history:
        if call.status < 500:
            continue
        if call.status == 503 and call.retry_after and _in_outage(stack, call):
            continue  # the documented answer while a server is down on purpose
        verdict.add("I7", f"{call.method} {call.path} answered {call.status}")
    secrets = [s for s in stack.servers.secrets if s and len(s) >= 8]
    for path in stack.log_files():
        text = path.read_bytes().decode("utf-8", "replace")
        for secret in secrets:
            if secret in text:
                verdict.add("I7", f"a secret ({secret[:4]}...) appears in {path.name}")


def describe(rows: list[Any]) -> str:
    """Tasks as `activity=state#attempt`, for failure messages."""
    return ", ".join(f"{r.activity}={r.state}#{r.attempt}" for r in rows)
