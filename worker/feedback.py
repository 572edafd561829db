"""What comes back from recipients and providers: opens, clicks and bounces, into tracking logs.

A bounce moves its delivery log from `sent` to `bounced`; a hard bounce or a complaint also
quarantines the address on the organization's profiles (emailBlacklisted / mobileBlacklisted),
and a transactional event whose log bounced goes from `processed` to `deliveryFailed`.
A complaint (the recipient called it spam) means the message arrived: its log stays `sent`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from worker.channels.tracking import Tracked
from worker.db import utcnow
from worker.errors import CarillonError
from worker.marketing import profile
from worker.messaging import delivery, delivery_log, event, tracking_log
from worker.technical.tables import event_history

BOUNCE_KINDS = ("hard", "soft", "complaint")
#: Bounces accepted in one call.
MAX_BOUNCES = 1000
#: Kinds that say the address itself must not be used again.
QUARANTINING = ("hard", "complaint")


class BounceInvalid(CarillonError):
    """Raised when a bounce report is malformed; details name the item and field."""

    code = "invalidBounce"


def record_hit(s: Session, hit: Tracked, user_agent: str = "") -> bool:
    """Write the open or click of a verified token; False when its delivery log is gone."""
    found = (
        s.execute(
            select(
                delivery_log.c.id,
                delivery_log.c.org_id,
                delivery_log.c.deliveryId,
                delivery_log.c.profileId,
            ).where(delivery_log.c.id == hit.delivery_log_id)
        )
        .mappings()
        .first()
    )
    if found is None:
        return False
    s.execute(
        insert(tracking_log).values(
            org_id=found["org_id"],
            deliveryId=found["deliveryId"],
            deliveryLogId=found["id"],
            profileId=found["profileId"],
            kind=hit.kind,
            url=hit.url,
            userAgent=user_agent[:255],
            created=utcnow(),
        )
    )
    return True


@dataclass(frozen=True)
class Bounce:
    message_id: str
    kind: str
    detail: str


def parse_bounces(body: Any) -> list[Bounce]:
    """The bounces of a request body (one object or a list of them); BounceInvalid if any is
    malformed, so a bad report changes nothing."""
    items = body if isinstance(body, list) else [body]
    if not items:
        raise BounceInvalid("the list of bounces is empty")
    if len(items) > MAX_BOUNCES:
        raise BounceInvalid(
            f"at most {MAX_BOUNCES} bounces per call", details={"count": len(items)}
        )
    found: list[Bounce] = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise BounceInvalid("each bounce is an object", details={"index": index})
        extra = sorted(set(item) - {"messageId", "kind", "detail"})
        if extra:
            raise BounceInvalid(
                f"unknown key(s) {', '.join(extra)}; allowed: detail, kind, messageId",
                details={"index": index, "field": extra[0]},
            )
        message_id = item.get("messageId")
        if not isinstance(message_id, str) or not 0 < len(message_id) <= 255:
            raise BounceInvalid(
                "'messageId' must be a string of 1 to 255 characters",
                details={"index": index, "field": "messageId"},
            )
        kind = item.get("kind")
        if kind not in BOUNCE_KINDS:
            raise BounceInvalid(
                f"'kind' must be one of {', '.join(BOUNCE_KINDS)}",
                details={"index": index, "field": "kind"},
            )
        detail = item.get("detail", "")
        if detail is None:
            detail = ""
        if not isinstance(detail, str):
            raise BounceInvalid(
                "'detail' must be a string", details={"index": index, "field": "detail"}
            )
        found.append(Bounce(message_id.strip("<> "), str(kind), detail[:200]))
    return found


@dataclass
class BounceReport:
    recorded: int = 0
    bounced: int = 0
    quarantined: int = 0
    events_failed: int = 0
    unknown: list[str] = field(default_factory=list)


def record_bounces(s: Session, org_id: int, bounces: Sequence[Bounce]) -> BounceReport:
    """Apply bounces to the organization's delivery logs; message ids of other organizations
    are reported unknown and change nothing."""
    report = BounceReport()
    wanted = sorted({bounce.message_id for bounce in bounces})
    logs: dict[str, Any] = {}
    for chunk in range(0, len(wanted), 500):
        for found in s.execute(
            select(
                delivery_log.c.id,
                delivery_log.c.deliveryId,
                delivery_log.c.profileId,
                delivery_log.c.messageId,
                delivery_log.c.address,
                delivery_log.c.status,
                delivery.c.channel,
            )
            .join(delivery, delivery.c.id == delivery_log.c.deliveryId)
            .where(
                delivery_log.c.org_id == org_id,
                delivery_log.c.messageId.in_(wanted[chunk : chunk + 500]),
            )
        ).mappings():
            logs[found["messageId"]] = found
    now = utcnow()
    for bounce in bounces:
        row = logs.get(bounce.message_id)
        if row is None:
            report.unknown.append(bounce.message_id)
            continue
        s.execute(
            insert(tracking_log).values(
                org_id=org_id,
                deliveryId=row["deliveryId"],
                deliveryLogId=row["id"],
                profileId=row["profileId"],
                kind="bounce",
                detail=f"{bounce.kind}: {bounce.detail}"[:255],
                created=now,
            )
        )
        report.recorded += 1
        if bounce.kind != "complaint":
            moved = _changed(
                s,
                update(delivery_log)
                .where(delivery_log.c.id == row["id"], delivery_log.c.status == "sent")
                .values(
                    status="bounced",
                    reason=f"{bounce.kind} bounce: {bounce.detail}"[:255],
                    lastModified=now,
                ),
            )
            report.bounced += moved
            if moved:
                # The event may already be archived (mcSynch_local): its status lives on there.
                for table in (event, event_history):
                    report.events_failed += _changed(
                        s,
                        update(table)
                        .where(table.c.deliveryLogId == row["id"], table.c.status == "processed")
                        .values(
                            status="deliveryFailed",
                            reason=f"{bounce.kind} bounce: {bounce.detail}"[:255],
                            lastModified=now,
                        ),
                    )
        if bounce.kind in QUARANTINING and row["address"]:
            report.quarantined += _quarantine(s, org_id, row["channel"], row["address"])
    return report


def _changed(s: Session, stmt: Any) -> int:
    """Rows an UPDATE changed."""
    result: Any = s.execute(stmt)  # a CursorResult: it has a rowcount
    return int(result.rowcount)


def _quarantine(s: Session, org_id: int, channel: str, address: str) -> int:
    column, flag = {
        "email": (profile.c.email, "emailBlacklisted"),
        "sms": (profile.c.mobilePhone, "mobileBlacklisted"),
    }.get(channel, (None, ""))
    if column is None:
        return 0  # push tokens are not quarantined by bounces
    return _changed(
        s,
        update(profile)
        .where(profile.c.org_id == org_id, column == address)
        .values({flag: True, "lastModified": utcnow()}),
    )
