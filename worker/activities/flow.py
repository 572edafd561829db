"""Flow-control activities: start, end, signal, scheduler, wait, test, fork, andJoin, jump."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from worker import durations, expressions, filters, schedules, signals
from worker.activities.base import (
    Activation,
    Activity,
    ActivityType,
    Context,
    Option,
    Outcome,
    SignalRequest,
)
from worker.errors import DefinitionError, FilterError, ScheduleError
from worker.registry import register


@register
class Start(ActivityType):
    """Begins the workflow when it is started."""

    name = "start"
    quick = True
    pure = True
    entry = True
    entry_only = True

    def run(self, ctx: Context) -> Outcome:
        return Outcome()


def _check_end_signal(value: Any) -> str | None:
    if not isinstance(value, Mapping):
        return "must be {workflow, activity, parameters}"
    unknown = set(value) - {"workflow", "activity", "parameters"}
    if unknown:
        return f"unknown key(s) {sorted(map(str, unknown))}"
    if not isinstance(value.get("workflow"), str) or not isinstance(value.get("activity"), str):
        return "'workflow' and 'activity' are required names"
    if not isinstance(value.get("parameters", {}), Mapping):
        return "'parameters' must be an object"
    return None


@register
class End(ActivityType):
    """Ends a branch; may trigger another workflow's signal, or finish the whole workflow."""

    name = "end"
    quick = True
    pure = True
    options = {
        "signal": Option((dict,), check=_check_end_signal),
        "terminate": Option((bool,)),
    }

    def outlets(self, activity: Activity) -> frozenset[str]:
        return frozenset()

    def run(self, ctx: Context) -> Outcome:
        requests: tuple[SignalRequest, ...] = ()
        spec = ctx.activity.options.get("signal")
        if spec:
            parameters = expressions.substitute(spec.get("parameters", {}), ctx.vars)
            requests = (SignalRequest(spec["workflow"], spec["activity"], parameters),)
            ctx.log(f"triggering signal {spec['workflow']}/{spec['activity']}")
        return Outcome(
            outlets=(), terminate=bool(ctx.activity.options.get("terminate")), signals=requests
        )


@register
class ExternalSignal(ActivityType):
    """Waits for an API call (or an end activity) with typed parameters; each trigger is a job."""

    name = "externalSignal"
    quick = True
    pure = True
    entry = True
    listener = True
    breaks_loops = True
    options = {"parameters": Option((dict,), check=signals.check_declaration)}

    def activate(self, activity: Activity, now: dt.datetime, vars: Mapping[str, Any]) -> Activation:
        return Activation(state="waiting", reason=f"waiting for signal '{activity.name}'")

    def run(self, ctx: Context) -> Outcome:
        return Outcome()


def _check_schedule(options: Mapping[str, Any], activity: str) -> schedules.Schedule:
    try:
        return schedules.parse_schedule(options)
    except ScheduleError as exc:
        raise DefinitionError(exc.message, activity=activity) from None


@register
class Scheduler(ActivityType):
    """Fires on a calendar; each fire starts a job. Keeps the workflow started until it expires."""

    name = "scheduler"
    quick = True
    pure = True
    entry = True
    entry_only = True
    listener = True
    breaks_loops = True

    def validate(self, activity: Activity) -> None:
        unknown = set(activity.options) - schedules.ALLOWED_OPTIONS
        if unknown:
            raise DefinitionError(
                f"unknown option(s) {sorted(map(str, unknown))} for type 'scheduler' "
                f"(known: {sorted(schedules.ALLOWED_OPTIONS)})",
                activity=activity.name,
            )
        _check_schedule(activity.options, activity.name)

    def activate(self, activity: Activity, now: dt.datetime, vars: Mapping[str, Any]) -> Activation:
        due = self.next_listener_fire(activity, now, 0)
        if due is None:
            return Activation(state="done", reason="schedule has expired")
        return Activation(state="waiting", due_at=due, reason=f"next fire at {due.isoformat()}")

    def next_listener_fire(
        self, activity: Activity, after: dt.datetime, fired: int
    ) -> dt.datetime | None:
        schedule = _check_schedule(activity.options, activity.name)
        return schedules.next_fire(schedule, after, fired)

    def run(self, ctx: Context) -> Outcome:
        return Outcome()


@register
class Wait(ActivityType):
    """Waits for a duration (`1d 8h 30mn`) or until a date; a durable timer, not a sleep."""

    name = "wait"
    quick = True
    pure = True
    breaks_loops = True
    options = {
        "duration": Option((str,)),
        "until": Option((str,)),
        "timezone": Option((str,)),
    }

    def validate(self, activity: Activity) -> None:
        super().validate(activity)
        options = activity.options
        if ("duration" in options) == ("until" in options):
            raise DefinitionError(
                "give exactly one of 'duration' or 'until'", activity=activity.name
            )
        if expressions.find_placeholders(dict(options)):
            return  # resolved against vars at activation time
        try:
            durations.wait_until(options, dt.datetime.now(dt.UTC))
        except ScheduleError as exc:
            raise DefinitionError(exc.message, activity=activity.name) from None

    def activate(self, activity: Activity, now: dt.datetime, vars: Mapping[str, Any]) -> Activation:
        options = expressions.substitute(dict(activity.options), vars)
        due = durations.wait_until(options, now)
        return Activation(state="waiting", due_at=due, reason=f"timer due at {due.isoformat()}")

    def run(self, ctx: Context) -> Outcome:
        return Outcome()


def _check_conditions(value: Any) -> str | None:
    if not isinstance(value, list) or not value:
        return "must be a non-empty list of {name, when}"
    if len(value) > 50:
        return "at most 50 conditions"
    seen: set[str] = set()
    for index, condition in enumerate(value):
        if not isinstance(condition, Mapping) or set(condition) != {"name", "when"}:
            return f"conditions[{index}] must be exactly {{name, when}}"
        name = condition["name"]
        if not isinstance(name, str) or not signals.NAME_RE.match(name) or name == "default":
            return f"conditions[{index}].name must be an outlet name other than 'default'"
        if name in seen:
            return f"condition name '{name}' is used twice"
        seen.add(name)
        try:
            filters.validate_filter(condition["when"], where=f"conditions[{index}].when")
        except FilterError as exc:
            return exc.message
    return None


@register
class Test(ActivityType):
    """Ordered conditions on vars and counts; the first true one's outlet fires, else default."""

    name = "test"
    quick = True
    pure = True
    deciding = True
    options = {
        "conditions": Option((list,), required=True, check=_check_conditions),
        "default": Option((bool,)),
    }

    def outlets(self, activity: Activity) -> frozenset[str]:
        names = {c["name"] for c in activity.options.get("conditions", [])}
        if activity.options.get("default", True):
            names.add("default")
        return frozenset(names)

    def run(self, ctx: Context) -> Outcome:
        context = {"vars": ctx.vars, "counts": ctx.counts}
        for condition in ctx.activity.options["conditions"]:
            if filters.evaluate(condition["when"], context):
                ctx.log(f"condition '{condition['name']}' is true")
                return Outcome(outlets=(condition["name"],))
        if ctx.activity.options.get("default", True):
            ctx.log("no condition is true: default outlet")
            return Outcome(outlets=("default",))
        ctx.log("no condition is true and no default outlet: branch ends")
        return Outcome(outlets=())


@register
class Fork(ActivityType):
    """Starts every branch listed in its `done` transition at once."""

    name = "fork"
    quick = True
    pure = True

    def run(self, ctx: Context) -> Outcome:
        return Outcome()


@register
class AndJoin(ActivityType):
    """Waits for every inbound branch of the same job, then continues with their merged vars."""

    name = "andJoin"
    quick = True
    pure = True
    joins = True

    def run(self, ctx: Context) -> Outcome:
        return Outcome()


@register
class Jump(ActivityType):
    """Continues at another activity of the workflow (loops need a wait or scheduler)."""

    name = "jump"
    quick = True
    pure = True
    options = {"target": Option((str,), required=True)}

    def outlets(self, activity: Activity) -> frozenset[str]:
        return frozenset()

    def jump_target(self, activity: Activity) -> str | None:
        return str(activity.options["target"])

    def run(self, ctx: Context) -> Outcome:
        return Outcome(outlets=())
