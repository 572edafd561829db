"""mcSynch_local: archive final transactional events to event_history.

Events whose status is final (processed, ignored, deliveryFailed, routingFailed, tooOld) and
that did not change for `afterMinutes` move, in batches, from `event` to `event_history`
(copy then delete in one transaction: a crash leaves each event in exactly one of the two).
The realtime table stays small; the event's status stays readable from the history.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import delete, insert, literal, select
from sqlalchemy.orm import Session

from worker.activities.base import ActivityType, Context, Option, Outcome
from worker.messaging import event
from worker.registry import register
from worker.technical.tables import EVENT_COLUMNS, event_history

FINAL = ("processed", "ignored", "deliveryFailed", "routingFailed", "tooOld")
BATCH = 50_000


def archive(s: Session, now: dt.datetime, after: dt.timedelta, batch: int = BATCH) -> int:
    """Move one batch of final, settled events to the history; returns how many moved."""
    chosen = list(
        s.scalars(
            select(event.c.id)
            .where(event.c.status.in_(FINAL), event.c.lastModified < now - after)
            .order_by(event.c.id)
            .limit(batch)
        )
    )
    if not chosen:
        return 0
    columns = [event.c[name] for name in EVENT_COLUMNS]
    s.execute(
        insert(event_history).from_select(
            [*EVENT_COLUMNS, "archived"],
            select(*columns, literal(now, event_history.c.archived.type)).where(
                event.c.id.in_(chosen)
            ),
        )
    )
    s.execute(delete(event).where(event.c.id.in_(chosen)))
    return len(chosen)


def _check_minutes(value: Any) -> str | None:
    return None if 0 <= value <= 10_080 else "must be between 0 and 10080 minutes"


@register
class McSynchLocal(ActivityType):
    """Archives the final transactional events to the event history."""

    name = "mcSynchLocal"
    family = "data"
    options = {"afterMinutes": Option((int,), check=_check_minutes)}

    def run(self, ctx: Context) -> Outcome:
        after = dt.timedelta(minutes=ctx.activity.options.get("afterMinutes", 60))
        moved = total = 0
        # Bounded: at most 20 batches per run, the rest waits for the next hour.
        for _ in range(20):
            moved = archive(ctx.session, ctx.now, after)
            total += moved
            if moved < BATCH:
                break
        ctx.log(f"{total:,} event(s) archived")
        return Outcome(counts={ctx.activity.name: total})
