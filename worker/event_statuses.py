"""Event statuses copied from their delivery logs: what updateEventsStatus runs on a schedule.

Incremental by a pointer: the caller keeps the (lastModified, id) of the last delivery log
seen and passes it back; logs modified since then, less an overlap, are read again in that
order. A transaction that commits late may stamp its rows a little before rows already seen,
and the overlap catches those; copying twice is harmless because events only move forward.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, bindparam, or_, select, update
from sqlalchemy.orm import Session

from worker.db import utcnow
from worker.messaging import delivery_log, event

#: Delivery log status -> event status, as updateEventsStatus copies them.
LOG_TO_EVENT = {
    "pending": "processing",
    "sent": "processed",
    "failed": "deliveryFailed",
    "bounced": "deliveryFailed",
    "unknown": "deliveryFailed",
    "ignored": "ignored",
}
#: Event statuses a delivery log may still change (the others are final or have no log).
OPEN_STATUSES = ("processing", "processed")


def copy_statuses(s: Session, event_ids: Sequence[int]) -> int:
    """Copy the status of each event's delivery log onto it where the log moved it on."""
    rows = s.execute(
        select(
            event.c.id, event.c.status, delivery_log.c.status.label("log"), delivery_log.c.reason
        )
        .join(delivery_log, delivery_log.c.id == event.c.deliveryLogId)
        .where(event.c.id.in_(list(event_ids)), event.c.status.in_(OPEN_STATUSES))
    ).mappings()
    changes = [
        {"b_id": row["id"], "b_status": LOG_TO_EVENT[row["log"]], "b_reason": row["reason"]}
        for row in rows
        if _moves(row["status"], LOG_TO_EVENT.get(row["log"], row["status"]))
    ]
    if changes:
        s.execute(
            update(event)
            # or_ rather than in_: an expanding IN cannot go with executemany.
            .where(
                event.c.id == bindparam("b_id"),
                or_(*(event.c.status == status for status in OPEN_STATUSES)),
            )
            .values(
                status=bindparam("b_status"), reason=bindparam("b_reason"), lastModified=utcnow()
            ),
            changes,
        )
    return len(changes)


def _moves(current: str, target: str) -> bool:
    """Only forward: processing -> anything final, processed -> deliveryFailed (a bounce)."""
    if current == "processing":
        return target != "processing"
    return current == "processed" and target == "deliveryFailed"


@dataclass(frozen=True)
class SyncPointer:
    """Where sync_statuses stopped: the last delivery log seen, by (lastModified, id)."""

    modified: dt.datetime
    log_id: int

    def to_json(self) -> dict[str, Any]:
        return {"modified": self.modified.isoformat(), "logId": self.log_id}

    @classmethod
    def from_json(cls, value: Mapping[str, Any] | None) -> SyncPointer | None:
        if not value:
            return None
        return cls(dt.datetime.fromisoformat(value["modified"]), int(value["logId"]))


#: Logs modified this long before the pointer are read again: a transaction that committed
#: late may have stamped its rows earlier than rows already seen. Copying is idempotent.
SYNC_OVERLAP = dt.timedelta(minutes=5)


@dataclass
class SyncReport:
    updated: int
    pointer: SyncPointer | None


def sync_statuses(
    s: Session,
    pointer: SyncPointer | None = None,
    *,
    batch: int = 1000,
    max_batches: int = 100,
) -> SyncReport:
    """Copy delivery log statuses onto the events they belong to, incrementally.

    Reads the event logs modified since `pointer` (minus SYNC_OVERLAP) in (lastModified, id)
    order, at most `batch` x `max_batches` of them, and moves each event forward only
    (processing -> processed/ignored/deliveryFailed, processed -> deliveryFailed). Returns
    the new pointer for the caller (the updateEventsStatus workflow) to keep for next time.
    """
    updated = 0
    cursor = None
    if pointer is not None:
        cursor = (pointer.modified - SYNC_OVERLAP, 0)
    last = pointer
    for _ in range(max_batches):
        stmt = select(delivery_log.c.id, delivery_log.c.eventId, delivery_log.c.lastModified).where(
            delivery_log.c.eventId.is_not(None)
        )
        if cursor is not None:
            stmt = stmt.where(
                (delivery_log.c.lastModified > cursor[0])
                | and_(delivery_log.c.lastModified == cursor[0], delivery_log.c.id > cursor[1])
            )
        rows = s.execute(
            stmt.order_by(delivery_log.c.lastModified, delivery_log.c.id).limit(batch)
        ).all()
        if not rows:
            break
        updated += copy_statuses(s, [int(row.eventId) for row in rows])
        cursor = (rows[-1].lastModified, int(rows[-1].id))
        if last is None or cursor[0] >= last.modified:
            last = SyncPointer(cursor[0], cursor[1])
        if len(rows) < batch:
            break
    return SyncReport(updated, last)
