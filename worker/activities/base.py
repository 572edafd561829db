"""What an activity type is: its options, outlets, activation and run; plain Python, no Celery."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from sqlalchemy.orm import Session

from worker.config import Settings
from worker.errors import ActivityError, DefinitionError

#: Keys of an activity that are not type options.
ACTIVITY_KEYS = frozenset({"name", "type", "label", "transitions", "onError", "execution"})
EXECUTION_MODES = frozenset({"normal", "suspended", "disabled"})
ERROR_POLICIES = frozenset({"suspend", "ignore"})


@dataclass(frozen=True)
class Activity:
    """One node of a workflow definition."""

    name: str
    type: str
    options: Mapping[str, Any]
    transitions: Mapping[str, tuple[str, ...]]
    label: str = ""
    on_error: str | None = None
    execution: str = "normal"

    def targets(self, outlets: tuple[str, ...] | list[str]) -> list[str]:
        found: list[str] = []
        for outlet in outlets:
            found.extend(self.transitions.get(outlet, ()))
        return found


@dataclass(frozen=True)
class SignalRequest:
    """Ask the engine to trigger another workflow's external signal after this task commits."""

    workflow: str
    activity: str
    parameters: Mapping[str, Any]


@dataclass(frozen=True)
class Park:
    """Ask to go back to `waiting` instead of finishing: the task holds no worker meanwhile.

    It runs again when something calls `Engine.wake(task_id)` (a human decision, a callback)
    or when the tick finds `due_at` passed; `None` waits until woken. On that next run
    `Context.wake` says which (`"woken"` or `"due"`) and `Context.parked` how many times the
    task parked before. The task's attempt still increases at each run (fencing), so a
    parked activity must find what it did before (rows keyed by its task id), not redo it.
    """

    #: Why it waits, in words for the operator ("waiting for validation by alice").
    reason: str
    due_at: dt.datetime | None = None


@dataclass(frozen=True)
class Outcome:
    """What a run produced: the outlets it fires and the vars that flow out of them."""

    outlets: tuple[str, ...] = ("done",)
    vars: Mapping[str, Any] | None = None
    counts: Mapping[str, Any] | None = None
    #: End activity: abort every other task of the workflow and finish it.
    terminate: bool = False
    signals: tuple[SignalRequest, ...] = ()
    #: What each fired outlet carries (a population or a file descriptor), by outlet name.
    #: An outlet without an entry passes the task's own inputs on unchanged.
    outputs: Mapping[str, Mapping[str, Any]] | None = None
    #: Park the task (back to `waiting`) instead of completing it; `outlets` are ignored,
    #: `vars` and `counts` are kept on the task for its next run.
    park: Park | None = None


@dataclass(frozen=True)
class Activation:
    """How a task starts life: pending (runs now), or waiting for a signal or a time."""

    state: str = "pending"
    due_at: dt.datetime | None = None
    reason: str | None = None


@dataclass
class Context:
    """What a run sees: its ids, its vars, a session for database effects, a logger."""

    task_id: str
    workflow_id: int
    job_id: str
    activity: Activity
    vars: dict[str, Any]
    counts: dict[str, Any]
    attempt: int
    now: dt.datetime
    session: Session
    logs: list[tuple[str, str]] = field(default_factory=list)
    org_id: int = 0
    #: What the inbound transitions carry, by producing activity name.
    inputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    settings: Settings = field(default_factory=Settings)
    #: Where progress goes (the heartbeat writes it to the task row).
    progress_sink: Callable[[dict[str, Any]], None] | None = None
    #: Times this task parked before this run (Outcome.park); 0 on its first run.
    parked: int = 0
    #: Why a parked task runs again: "woken" (Engine.wake) or "due" (its timer); else None.
    wake: str | None = None

    def log(self, message: str, level: str = "info") -> None:
        self.logs.append((level, message))

    def progress(self, done: int, total: int | None = None, unit: str = "records") -> None:
        """Report progress of long work; cheap enough to call every batch."""
        if self.progress_sink is not None:
            self.progress_sink({"done": done, "total": total, "unit": unit})

    def input(self, kind: str = "population") -> dict[str, Any]:
        """The one inbound descriptor of `kind`; ActivityError when there is none or several."""
        found = [value for value in self.inputs.values() if value.get("kind") == kind]
        if not found:
            raise ActivityError(f"no inbound {kind}: connect an activity that produces one")
        if len(found) > 1:
            producers = ", ".join(
                sorted(k for k, v in self.inputs.items() if v.get("kind") == kind)
            )
            raise ActivityError(
                f"several inbound {kind}s ({producers}); combine them with a union first"
            )
        return found[0]


@dataclass(frozen=True)
class Option:
    """One option of an activity type: its JSON kind, whether required, an extra check."""

    kinds: tuple[type, ...]
    required: bool = False
    check: Callable[[Any], str | None] | None = None


class ActivityType:
    """Base of every activity type. Subclasses set `name` and override what they need."""

    name: ClassVar[str] = ""
    #: Celery queue family, so operators can scale families apart.
    family: ClassVar[str] = "flow"
    options: ClassVar[Mapping[str, Option]] = {}
    #: Entry activities may have no inbound transition and start a workflow.
    entry: ClassVar[bool] = False
    #: Entry-only activities (start, scheduler) take no inbound transition.
    entry_only: ClassVar[bool] = False
    #: Listeners (signal, scheduler) stay waiting and create a new job on each fire.
    listener: ClassVar[bool] = False
    #: Activities whose fired outlets are only known after the run (test, segmentation).
    deciding: ClassVar[bool] = False
    #: Activities that break a loop (a cycle must contain one).
    breaks_loops: ClassVar[bool] = False
    #: Activities that wait for every inbound branch.
    joins: ClassVar[bool] = False
    #: Data activities count against CARILLON_MAX_RUNNING_WORKFLOWS.
    data: ClassVar[bool] = False
    #: Quick activities (no effect outside the database, microseconds of work) are claimed,
    #: run and completed in one transaction: a crash rolls the whole run back.
    quick: ClassVar[bool] = False
    #: Pure quick activities compute their outcome from the context's values alone (vars,
    #: counts, inputs, options, now): no database (`ctx.session`), no effect. The engine may
    #: run them before claiming, from what the predecessor's message carries (worker.hop).
    pure: ClassVar[bool] = False

    def validate(self, activity: Activity) -> None:
        """Check the options at save time; raise DefinitionError naming the problem."""
        for key, value in activity.options.items():
            spec = self.options.get(key)
            if spec is None:
                known = ", ".join(sorted(self.options)) or "none"
                raise DefinitionError(
                    f"unknown option '{key}' for type '{self.name}' (known: {known})",
                    activity=activity.name,
                )
            # bool is an int in Python; only accept it where a boolean is declared.
            if not isinstance(value, spec.kinds) or (
                isinstance(value, bool) and bool not in spec.kinds
            ):
                kinds = "/".join(k.__name__ for k in spec.kinds)
                raise DefinitionError(f"option '{key}' must be {kinds}", activity=activity.name)
            if spec.check is not None:
                problem = spec.check(value)
                if problem:
                    raise DefinitionError(f"option '{key}': {problem}", activity=activity.name)
        for key, spec in self.options.items():
            if spec.required and key not in activity.options:
                raise DefinitionError(f"option '{key}' is required", activity=activity.name)

    def outlets(self, activity: Activity) -> frozenset[str]:
        """Outlet names this activity may fire; transitions may only use these."""
        return frozenset({"done"})

    def jump_target(self, activity: Activity) -> str | None:
        """An edge that is not a transition (the jump activity); None for everything else."""
        return None

    def activate(self, activity: Activity, now: dt.datetime, vars: Mapping[str, Any]) -> Activation:
        return Activation()

    def run(self, ctx: Context) -> Outcome:
        raise NotImplementedError

    def next_listener_fire(
        self, activity: Activity, after: dt.datetime, fired: int
    ) -> dt.datetime | None:
        """For timed listeners (scheduler): the next fire after `after`, None when expired."""
        return None

    def cancel(self, session: Session, task_ids: list[str], reason: str) -> None:
        """Tasks of this type left unfinished for good (stop, restart, end, skip): release
        what they hold, in the transaction that ends them. Nothing by default."""
