"""The cleanup technical workflow's activity: purge past retention, then refresh statistics.

Retention (DESIGN section 7): a workflow's history after its `historyDays` (default 30);
delivery and tracking logs after 6 months; transactional events after 1 month; working
tables after 7 days. A job with a task still pending, running, waiting or held is never
touched, whatever its age: that is how "pending tasks are never purged" holds.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import and_, delete, exists, select, text
from sqlalchemy.orm import Session

from worker import definitions, populations
from worker.activities.base import ActivityType, Context, Option, Outcome
from worker.marketing import working_table
from worker.messaging import delivery_log, event, tracking_log
from worker.models import (
    Command,
    Job,
    JoinArrival,
    LogLine,
    StateEvent,
    Task,
    Trigger,
    Workflow,
    WorkflowVersion,
)
from worker.registry import register
from worker.states import ACTIVE_TASK_STATES
from worker.technical.tables import event_history

#: Jobs purged per statement: bounded IN lists and short lock holds on big histories.
CHUNK = 500
#: Tables whose planner statistics the run refreshes (the seed's "calculs des statistiques").
ANALYZED = ("task", "job", "log_line", "profile", "delivery_log", "tracking_log", "event")


def _days(low: int, high: int) -> Option:
    def check(value: Any) -> str | None:
        return None if low <= value <= high else f"must be between {low} and {high} days"

    return Option((int,), check=check)


@register
class DatabaseCleanup(ActivityType):
    """Purges what is past retention and refreshes the database's statistics."""

    name = "databaseCleanup"
    family = "data"
    options = {
        "deliveryLogDays": _days(1, 3650),
        "trackingLogDays": _days(1, 3650),
        "eventDays": _days(1, 3650),
        "archivedEventDays": _days(1, 3650),
        "workingTableDays": _days(1, 3650),
    }

    def run(self, ctx: Context) -> Outcome:
        options = ctx.activity.options
        s, now = ctx.session, ctx.now
        purged: dict[str, int] = {}
        for key, value in purge_history(s, now).items():
            purged[key] = purged.get(key, 0) + value
        purged["deliveryLogs"] = _purge_before(
            s,
            delivery_log,
            now - dt.timedelta(days=options.get("deliveryLogDays", 180)),
            delivery_log.c.status != "pending",
        )
        purged["trackingLogs"] = _purge_before(
            s, tracking_log, now - dt.timedelta(days=options.get("trackingLogDays", 180))
        )
        purged["events"] = _purge_before(
            s,
            event,
            now - dt.timedelta(days=options.get("eventDays", 30)),
            event.c.status.not_in(("pending", "processing")),
        )
        archived_cutoff = now - dt.timedelta(days=options.get("archivedEventDays", 180))
        purged["archivedEvents"] = _rowcount(
            s.execute(delete(event_history).where(event_history.c.archived < archived_cutoff))
        )
        purged["workingTables"] = purge_working_tables(
            s, now - dt.timedelta(days=options.get("workingTableDays", 7))
        )
        analyzed = refresh_statistics(s)
        total = sum(purged.values())
        details = ", ".join(f"{key} {count:,}" for key, count in purged.items() if count)
        ctx.log(f"{total:,} row(s) purged" + (f" ({details})" if details else ""))
        ctx.log(f"statistics refreshed on {analyzed} table(s)")
        return Outcome(counts={ctx.activity.name: total})


def purge_history(s: Session, now: dt.datetime) -> dict[str, int]:
    """Every workflow's jobs, logs and events older than its historyDays, except live jobs."""
    purged = {"jobs": 0, "tasks": 0, "logs": 0}
    workflows = s.execute(
        select(Workflow.id, WorkflowVersion.body).join(
            WorkflowVersion,
            and_(
                WorkflowVersion.workflow_id == Workflow.id,
                WorkflowVersion.version == Workflow.latest_version,
            ),
        )
    ).all()
    for workflow_id, body in workflows:
        cutoff = now - dt.timedelta(days=_history_days(body))
        live = exists().where(Task.job_id == Job.id, Task.state.in_(ACTIVE_TASK_STATES))
        old_jobs = list(
            s.scalars(
                select(Job.id).where(Job.workflow_id == workflow_id, Job.created_at < cutoff, ~live)
            )
        )
        for start in range(0, len(old_jobs), CHUNK):
            counts = _purge_jobs(s, old_jobs[start : start + CHUNK])
            for key, value in counts.items():
                purged[key] += value
        purged["logs"] += _rowcount(
            s.execute(
                delete(LogLine).where(
                    LogLine.workflow_id == workflow_id,
                    LogLine.job_id.is_(None),
                    LogLine.created_at < cutoff,
                )
            )
        )
        s.execute(
            delete(Command).where(
                Command.workflow_id == workflow_id,
                Command.state != "pending",
                Command.created_at < cutoff,
            )
        )
        s.execute(
            delete(StateEvent).where(
                StateEvent.workflow_id == workflow_id,
                StateEvent.entity == "workflow",
                StateEvent.at < cutoff,
            )
        )
        s.execute(
            delete(Trigger).where(
                Trigger.workflow_id == workflow_id,
                Trigger.state != "queued",
                Trigger.created_at < cutoff,
            )
        )
    return purged


def _history_days(body: Any) -> int:
    try:
        return definitions.parse(body).history_days
    except Exception:  # an unparsable old body: keep the platform's default
        return 30


def _purge_jobs(s: Session, job_ids: Sequence[str]) -> dict[str, int]:
    task_ids = select(Task.id).where(Task.job_id.in_(job_ids)).scalar_subquery()
    populations.drop_for_jobs(s, job_ids)
    s.execute(
        delete(StateEvent).where(StateEvent.entity == "task", StateEvent.entity_id.in_(task_ids))
    )
    logs = _rowcount(s.execute(delete(LogLine).where(LogLine.job_id.in_(job_ids))))
    s.execute(delete(JoinArrival).where(JoinArrival.job_id.in_(job_ids)))
    s.execute(delete(Trigger).where(Trigger.job_id.in_(job_ids)))
    tasks = _rowcount(s.execute(delete(Task).where(Task.job_id.in_(job_ids))))
    jobs = _rowcount(s.execute(delete(Job).where(Job.id.in_(job_ids))))
    return {"jobs": jobs, "tasks": tasks, "logs": logs}


def _purge_before(s: Session, table: Any, cutoff: dt.datetime, *extra: Any) -> int:
    return _rowcount(s.execute(delete(table).where(table.c.created < cutoff, *extra)))


def purge_working_tables(s: Session, cutoff: dt.datetime) -> int:
    """Working tables older than the cutoff whose job has no live task."""
    live = exists().where(Task.job_id == working_table.c.job_id, Task.state.in_(ACTIVE_TASK_STATES))
    names = list(
        s.scalars(select(working_table.c.name).where(working_table.c.created < cutoff, ~live))
    )
    return populations.drop(s, names)


def refresh_statistics(s: Session) -> int:
    """ANALYZE the busiest tables so the planner keeps choosing the indexed paths."""
    connection = s.connection()
    if connection.dialect.name == "postgresql":
        for name in ANALYZED:
            connection.execute(text(f"ANALYZE {name}"))  # fixed names, not user input
        return len(ANALYZED)
    connection.execute(text("ANALYZE"))
    return 1


def _rowcount(result: Any) -> int:
    return int(getattr(result, "rowcount", 0) or 0)
