"""updateDeliveryExecInfo and updateDeliveryIndicators: delivery indicators from the logs.

Both run inside their task's transaction, pointer included: a crash anywhere rolls back the
indicators and the pointer together, so the next run reads the same rows again and counts
each exactly once.

- updateDeliveryExecInfo (every 10 min) adds the tracking logs past its pointer (an id):
  opens, clicks, and unique opens/clicks (a recipient's first of each kind).
- updateDeliveryIndicators (hourly) recounts the delivery logs of the deliveries whose logs
  changed since its last run (a time, minus a margin): recounting is idempotent, so the
  overlap costs a little work and never a wrong figure.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from sqlalchemy import and_, distinct, func, insert, select, update
from sqlalchemy.orm import Session

from worker.activities.base import ActivityType, Context, Outcome
from worker.messaging import LOG_STATUSES, delivery, delivery_log, tracking_log
from worker.registry import register
from worker.technical.tables import technical_pointer

#: Rows younger than this are left for the next run: an id allocated by a transaction that
#: has not committed yet must not be jumped over by the pointer.
SETTLE = dt.timedelta(seconds=60)
#: Tracking rows handled per run, so a backlog is absorbed over several short transactions.
BATCH = 200_000


def read_pointer(s: Session, name: str) -> int:
    found = s.execute(
        select(technical_pointer.c.position).where(technical_pointer.c.name == name)
    ).scalar()
    if found is None:
        s.execute(insert(technical_pointer).values(name=name, position=0))
        return 0
    return int(found)


def write_pointer(s: Session, name: str, position: int) -> None:
    s.execute(
        update(technical_pointer)
        .where(technical_pointer.c.name == name)
        .values(position=position, updated=dt.datetime.now(dt.UTC))
    )


def _rates(indicators: dict[str, Any]) -> dict[str, Any]:
    sent = indicators.get("sent", 0)
    for rate, count in (
        ("openRate", "uniqueOpens"),
        ("clickRate", "uniqueClicks"),
        ("bounceRate", "bounced"),
    ):
        indicators[rate] = round(indicators.get(count, 0) / sent, 4) if sent else 0.0
    return indicators


def _merge(s: Session, changes: Mapping[int, Mapping[str, int]], *, add: bool) -> None:
    """Apply per-delivery figures under a row lock (both workflows write the same column)."""
    ids = sorted(changes)
    for start in range(0, len(ids), 1000):
        rows = s.execute(
            select(delivery.c.id, delivery.c.indicators)
            .where(delivery.c.id.in_(ids[start : start + 1000]))
            .order_by(delivery.c.id)
            .with_for_update()
        ).all()
        for delivery_id, current in rows:
            merged = dict(current or {})
            for key, value in changes[delivery_id].items():
                merged[key] = merged.get(key, 0) + value if add else value
            s.execute(
                update(delivery)
                .where(delivery.c.id == delivery_id)
                .values(indicators=_rates(merged))
            )


def add_tracking(s: Session, now: dt.datetime, name: str = "updateDeliveryExecInfo") -> int:
    """Add the settled tracking logs past the pointer to their deliveries; returns rows read."""
    pointer = read_pointer(s, name)
    settled = (
        select(tracking_log.c.id)
        .where(tracking_log.c.id > pointer, tracking_log.c.created < now - SETTLE)
        .order_by(tracking_log.c.id)
        .limit(BATCH)
        .subquery()
    )
    upper = s.execute(select(func.max(settled.c.id))).scalar()
    if upper is None:
        return 0
    window = and_(tracking_log.c.id > pointer, tracking_log.c.id <= upper)
    earlier = tracking_log.alias("earlier")
    first_of_kind = ~(
        select(earlier.c.id)
        .where(
            earlier.c.deliveryId == tracking_log.c.deliveryId,
            earlier.c.profileId == tracking_log.c.profileId,
            earlier.c.kind == tracking_log.c.kind,
            earlier.c.id < tracking_log.c.id,
        )
        .exists()
    )
    totals = s.execute(
        select(tracking_log.c.deliveryId, tracking_log.c.kind, func.count())
        .where(window, tracking_log.c.kind.in_(("open", "click")))
        .group_by(tracking_log.c.deliveryId, tracking_log.c.kind)
    ).all()
    uniques = s.execute(
        select(
            tracking_log.c.deliveryId,
            tracking_log.c.kind,
            func.count(distinct(tracking_log.c.profileId)),
        )
        .where(
            window,
            tracking_log.c.kind.in_(("open", "click")),
            tracking_log.c.profileId.is_not(None),
            first_of_kind,
        )
        .group_by(tracking_log.c.deliveryId, tracking_log.c.kind)
    ).all()
    changes: dict[int, dict[str, int]] = {}
    for delivery_id, kind, count in totals:
        changes.setdefault(delivery_id, {})["opens" if kind == "open" else "clicks"] = count
    for delivery_id, kind, count in uniques:
        key = "uniqueOpens" if kind == "open" else "uniqueClicks"
        changes.setdefault(delivery_id, {})[key] = count
    _merge(s, changes, add=True)
    read = s.execute(select(func.count()).select_from(tracking_log).where(window)).scalar_one()
    write_pointer(s, name, int(upper))
    return int(read)


def recount_logs(s: Session, now: dt.datetime, name: str = "updateDeliveryIndicators") -> int:
    """Recount the status figures of deliveries whose logs changed; returns deliveries updated."""
    since_us = read_pointer(s, name)
    since = dt.datetime.fromtimestamp(since_us / 1_000_000, dt.UTC) - SETTLE
    touched = list(
        s.scalars(
            select(delivery_log.c.deliveryId).where(delivery_log.c.lastModified >= since).distinct()
        )
    )
    changes: dict[int, dict[str, int]] = {}
    for start in range(0, len(touched), 1000):
        chunk = touched[start : start + 1000]
        for delivery_id in chunk:
            changes[delivery_id] = dict.fromkeys(LOG_STATUSES, 0)
        for delivery_id, status, count in s.execute(
            select(delivery_log.c.deliveryId, delivery_log.c.status, func.count())
            .where(delivery_log.c.deliveryId.in_(chunk))
            .group_by(delivery_log.c.deliveryId, delivery_log.c.status)
        ):
            changes[delivery_id][status] = count
    for figures in changes.values():
        figures["processed"] = sum(figures.values())
    _merge(s, changes, add=False)
    write_pointer(s, name, int(now.timestamp() * 1_000_000))
    return len(changes)


@register
class UpdateDeliveryExecInfo(ActivityType):
    """Adds new opens and clicks to the deliveries' tracking indicators."""

    name = "updateDeliveryExecInfo"
    family = "data"

    def run(self, ctx: Context) -> Outcome:
        read = add_tracking(ctx.session, ctx.now)
        ctx.log(f"{read:,} tracking log(s) added to the delivery indicators")
        return Outcome(counts={ctx.activity.name: read})


@register
class UpdateDeliveryIndicators(ActivityType):
    """Recounts the delivery KPIs (sent, failed, bounced...) of the deliveries that changed."""

    name = "updateDeliveryIndicators"
    family = "data"

    def run(self, ctx: Context) -> Outcome:
        updated = recount_logs(ctx.session, ctx.now)
        ctx.log(f"indicators of {updated:,} delivery(ies) recounted")
        return Outcome(counts={ctx.activity.name: updated})
