"""reportingAggregates: daily figures per organization and channel, recomputed for recent days.

Recomputing a whole day (delete, then insert the day's grouped counts) is idempotent: a rerun
or a crash mid-way leaves correct figures. Days older than the window are final.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Date, case, cast, delete, func, insert, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from worker.activities.base import ActivityType, Context, Option, Outcome
from worker.messaging import delivery, delivery_log, tracking_log
from worker.registry import register
from worker.technical.tables import reporting_aggregate


def _check_days(value: Any) -> str | None:
    return None if 1 <= value <= 400 else "must be between 1 and 400"


def aggregate(s: Session, now: dt.datetime, days: int = 2) -> int:
    """Recompute the last `days` UTC days (today included); returns the rows written."""
    first = (now.astimezone(dt.UTC) - dt.timedelta(days=days - 1)).date()
    since = dt.datetime.combine(first, dt.time(), dt.UTC)
    s.execute(delete(reporting_aggregate).where(reporting_aggregate.c.day >= first))
    dialect = s.get_bind().dialect.name
    log_day = _day(delivery_log.c.created, dialect).label("day")
    status_counts = {
        status: func.sum(case((delivery_log.c.status == status, 1), else_=0))
        for status in ("sent", "failed", "ignored", "bounced")
    }
    logs = (
        select(
            delivery_log.c.org_id,
            log_day,
            delivery.c.channel,
            func.count(func.distinct(delivery_log.c.deliveryId)).label("deliveries"),
            *(value.label(status) for status, value in status_counts.items()),
        )
        .join(delivery, delivery.c.id == delivery_log.c.deliveryId)
        .where(delivery_log.c.created >= since)
        .group_by(delivery_log.c.org_id, log_day, delivery.c.channel)
    )
    rows: dict[tuple[int, Any, str], dict[str, Any]] = {}
    for row in s.execute(logs).mappings():
        day = _as_date(row["day"])
        rows[(row["org_id"], day, row["channel"])] = {
            "deliveries": row["deliveries"],
            **{status: int(row[status] or 0) for status in status_counts},
            "opens": 0,
            "clicks": 0,
        }
    hit_day = _day(tracking_log.c.created, dialect).label("day")
    hits = (
        select(
            tracking_log.c.org_id, hit_day, delivery.c.channel, tracking_log.c.kind, func.count()
        )
        .join(delivery, delivery.c.id == tracking_log.c.deliveryId)
        .where(tracking_log.c.created >= since, tracking_log.c.kind.in_(("open", "click")))
        .group_by(tracking_log.c.org_id, hit_day, delivery.c.channel, tracking_log.c.kind)
    )
    for org_id, day, channel, kind, count in s.execute(hits):
        figures = rows.setdefault(
            (org_id, _as_date(day), channel),
            {
                "deliveries": 0,
                "sent": 0,
                "failed": 0,
                "ignored": 0,
                "bounced": 0,
                "opens": 0,
                "clicks": 0,
            },
        )
        figures["opens" if kind == "open" else "clicks"] += count
    if rows:
        s.execute(
            insert(reporting_aggregate),
            [
                {"org_id": org_id, "day": day, "channel": channel, "updated": now, **figures}
                for (org_id, day, channel), figures in rows.items()
            ],
        )
    return len(rows)


def _day(column: Any, dialect: str) -> ColumnElement[Any]:
    """The UTC calendar day of a timestamp column, on either backend."""
    if dialect == "postgresql":
        return cast(func.timezone("UTC", column), Date)
    return func.date(column)  # SQLite keeps UTC text: date() takes its first 10 characters


def _as_date(value: Any) -> dt.date:
    # SQLite returns the CAST as text; PostgreSQL as a date.
    return value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value)[:10])


@register
class ReportingAggregates(ActivityType):
    """Recomputes the daily reporting aggregates of the last days."""

    name = "reportingAggregates"
    family = "data"
    options = {"days": Option((int,), check=_check_days)}

    def run(self, ctx: Context) -> Outcome:
        days = ctx.activity.options.get("days", 2)
        written = aggregate(ctx.session, ctx.now, days)
        ctx.log(f"{written:,} aggregate row(s) recomputed over the last {days} day(s)")
        return Outcome(counts={ctx.activity.name: written})
