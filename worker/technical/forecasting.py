"""forecasting: forecast logs of the deliveries that scheduled workflows will send.

For every started workflow whose scheduler is waiting, the fires within the horizon are
listed, and each delivery activity (email, sms, push) the scheduler leads to gets one forecast
row per fire, with the recipients of that activity's last run as the estimate. The table is
recomputed whole in the run's transaction.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from worker import definitions, schedules
from worker.activities.base import ActivityType, Context, Option, Outcome
from worker.definitions import Definition
from worker.models import Task, Workflow, WorkflowVersion
from worker.registry import register
from worker.states import TaskState as T
from worker.states import WorkflowState as W
from worker.technical.tables import forecast_log

CHANNELS = ("email", "sms", "push")
#: Fires listed per scheduler at most (a 10-minute schedule over a week is 1,008).
MAX_FIRES = 1_100


def _reachable_deliveries(definition: Definition, start: str) -> list[tuple[str, str]]:
    seen, todo, found = {start}, [start], []
    while todo:
        for target in definition.edges(todo.pop()):
            if target in seen:
                continue
            seen.add(target)
            todo.append(target)
            kind = definition.activities[target].type
            if kind in CHANNELS:
                found.append((target, kind))
    return sorted(found)


def _last_count(s: Session, workflow_id: int, activity: str) -> int | None:
    counts = s.execute(
        select(Task.counts)
        .where(Task.workflow_id == workflow_id, Task.activity == activity, Task.state == T.DONE)
        .order_by(Task.finished_at.desc())
        .limit(1)
    ).scalar()
    value = (counts or {}).get(activity)
    return int(value) if isinstance(value, int) else None


def forecast(s: Session, now: dt.datetime, horizon_days: int = 7) -> int:
    """Recompute every forecast; returns the rows written."""
    s.execute(delete(forecast_log))
    horizon = now + dt.timedelta(days=horizon_days)
    waiting = s.execute(
        select(
            Task.workflow_id,
            Task.activity,
            Task.due_at,
            Task.fired,
            Workflow.org_id,
            WorkflowVersion.body,
        )
        .join(Workflow, Workflow.id == Task.workflow_id)
        .join(
            WorkflowVersion,
            (WorkflowVersion.workflow_id == Task.workflow_id)
            & (WorkflowVersion.version == Task.version),
        )
        .where(
            Task.activity_type == "scheduler",
            Task.state == T.WAITING,
            Task.due_at.is_not(None),
            Workflow.state == W.STARTED,
        )
    ).all()
    rows: list[dict[str, Any]] = []
    for workflow_id, activity, due_at, fired, org_id, body in waiting:
        definition = definitions.parse(body)
        deliveries = _reachable_deliveries(definition, activity)
        if not deliveries or due_at > horizon:
            continue
        schedule = schedules.parse_schedule(definition.activities[activity].options)
        fires = [due_at, *schedules.preview(schedule, due_at, MAX_FIRES, fired=fired + 1)]
        for name, channel in deliveries:
            estimate = _last_count(s, workflow_id, name)
            rows.extend(
                {
                    "org_id": org_id,
                    "workflow_id": workflow_id,
                    "activity": name,
                    "channel": channel,
                    "plannedAt": fire,
                    "estimated": estimate,
                    "computed": now,
                }
                for fire in fires
                if fire <= horizon
            )
    for start in range(0, len(rows), 5_000):
        s.execute(insert(forecast_log), rows[start : start + 5_000])
    return len(rows)


def _check_horizon(value: Any) -> str | None:
    return None if 1 <= value <= 90 else "must be between 1 and 90 days"


@register
class Forecasting(ActivityType):
    """Creates the forecast logs of the deliveries scheduled within the horizon."""

    name = "forecasting"
    family = "data"
    options = {"horizonDays": Option((int,), check=_check_horizon)}

    def run(self, ctx: Context) -> Outcome:
        days = ctx.activity.options.get("horizonDays", 7)
        written = forecast(ctx.session, ctx.now, days)
        ctx.log(f"{written:,} forecast log(s) over the next {days} day(s)")
        return Outcome(counts={ctx.activity.name: written})
