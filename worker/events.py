"""Transactional events (message center): store, route to a template, deliver, keep statuses.

Statuses (DESIGN section 6; seeds/001 updateEventsStatus):

    pending --claim--> routingFailed          no published template (never retried)
                   --> tooOld                 older than the template's expiryHours
                   --> paused --resume--> pending   the template is paused
                   --> ignored                the address is quarantined or denylisted
                   --> deliveryFailed         the template would not render for this event
                   --> processing --send--> processed | deliveryFailed
    processed --bounce--> deliveryFailed

A batch is claimed under a row lock (PostgreSQL: FOR UPDATE SKIP LOCKED, so two workers take
different events; SQLite: the write lock of BEGIN IMMEDIATE). The claiming transaction writes
each routed event's delivery log `pending` (unique per (delivery, event), insert-or-nothing)
and commits before anything is sent, then a second transaction records the outcome. A worker
that dies in between leaves `processing` events with `pending` logs: whether their message
left is unknown, so the sweep marks the log `unknown` and the event `deliveryFailed` instead
of sending again (RELIABILITY.md section 3.3).
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from sqlalchemy import RowMapping, bindparam, select, update
from sqlalchemy.orm import Session, sessionmaker

from worker import templates_store
from worker.db import utcnow
from worker.errors import CarillonError
from worker.event_statuses import (
    LOG_TO_EVENT,
    SyncPointer,
    SyncReport,
    copy_statuses,
    sync_statuses,
)
from worker.marketing import profile
from worker.messaging import delivery_log, event
from worker.technical.tables import EVENT_COLUMNS, event_history

log = logging.getLogger(__name__)

#: Events claimed by one task; their messages go to the connector as one batch.
BATCH = 200
#: The address fields of an event and the channel each one selects, in order of preference.
ADDRESS_CHANNELS = (("email", "email"), ("mobilePhone", "sms"), ("pushToken", "push"))
#: Bounds on an event's ctx beyond the 64 KB body limit: nesting, and keys plus items.
MAX_CTX_DEPTH = 10
MAX_CTX_NODES = 2000
MAX_CTX_KEY_CHARS = 128
#: Names ids in message ids (uuid5), so they are stable across attempts.
_MESSAGE_NAMESPACE = uuid.UUID("5b0c1f0e-8f57-4d35-9c67-2f1d4a0e6a51")
UNKNOWN_REASON = "the worker stopped while sending: the outcome is unknown, so it is not resent"


__all__ = ["SyncPointer", "SyncReport", "process", "sweep", "sync_statuses", "validate"]


class EventInvalid(CarillonError):
    """Raised when a posted event is malformed (bad address, ctx too deep or too big)."""

    code = "invalidEvent"


@runtime_checkable
class EventPublisher(Protocol):
    """A dispatcher that can ask a worker to process events (worker.tasks.CeleryDispatcher)."""

    def process_events(self, event_ids: list[int]) -> None:
        """Publish one message asking a worker to process these pending events."""


# ---------------------------------------------------------------------------------- intake


def _text(body: Mapping[str, Any], key: str, limit: int) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise EventInvalid(f"'{key}' must be a non-empty string", details={"field": key})
    # The limit counts the value as sent (white space around it included), as the
    # OpenAPI document's maxLength does.
    too_long = len(value) > limit
    value = value.strip()
    # Control characters would let an address smuggle headers into the message.
    if too_long or any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise EventInvalid(
            f"'{key}' must be at most {limit} printable characters", details={"field": key}
        )
    return value


def _check_ctx(ctx: Any) -> None:
    if not isinstance(ctx, dict):
        raise EventInvalid("'ctx' must be a JSON object", details={"field": "ctx"})
    stack: list[tuple[Any, int]] = [(ctx, 1)]
    nodes = 0
    while stack:
        item, depth = stack.pop()
        if not isinstance(item, dict | list):
            continue
        if depth > MAX_CTX_DEPTH:
            raise EventInvalid(
                f"'ctx' is nested more than {MAX_CTX_DEPTH} levels deep", details={"field": "ctx"}
            )
        nodes += len(item)
        if nodes > MAX_CTX_NODES:
            raise EventInvalid(
                f"'ctx' holds more than {MAX_CTX_NODES} keys and items", details={"field": "ctx"}
            )
        if isinstance(item, dict):
            for key in item:
                if len(key) > MAX_CTX_KEY_CHARS:
                    raise EventInvalid(
                        f"'ctx' keys are at most {MAX_CTX_KEY_CHARS} characters",
                        details={"field": "ctx"},
                    )
            stack.extend((child, depth + 1) for child in item.values())
        else:
            stack.extend((child, depth + 1) for child in item)


def validate(event_type: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """The row values of a posted event; EventInvalid naming the field otherwise."""
    if not templates_store.EVENT_TYPE.match(event_type):
        raise EventInvalid(
            "the event type is letters, digits and '_' only (at most 64)",
            details={"field": "eventType"},
        )
    email = _text(body, "email", 255)
    if email is not None and ("@" not in email or any(ch.isspace() for ch in email)):
        raise EventInvalid("'email' is not an e-mail address", details={"field": "email"})
    phone = _text(body, "mobilePhone", 32)
    # ASCII digits: str.isdigit() would take superscripts and other scripts' digits too.
    if phone is not None and not all(ch in "0123456789+-(). " for ch in phone):
        raise EventInvalid(
            "'mobilePhone' holds digits, spaces and + - ( ) . only",
            details={"field": "mobilePhone"},
        )
    token = _text(body, "pushToken", 255)
    if email is None and phone is None and token is None:
        raise EventInvalid(
            "an event needs an address: email, mobilePhone or pushToken",
            details={"field": "email"},
        )
    ctx = body.get("ctx", {})
    _check_ctx(ctx)
    return {
        "eventType": event_type,
        "email": email,
        "mobilePhone": phone,
        "pushToken": token,
        "ctx": ctx,
    }


def store(s: Session, org_id: int, values: Mapping[str, Any]) -> RowMapping:
    """Insert a validated event `pending`, in the caller's transaction; returns its row."""
    pkey = secrets.token_urlsafe(18)
    now = utcnow()
    event_id = s.execute(
        event.insert()
        .values(org_id=org_id, pkey=pkey, status="pending", created=now, lastModified=now, **values)
        .returning(event.c.id)
    ).scalar_one()
    found = s.execute(select(event).where(event.c.id == event_id)).mappings().one()
    return found


def find(s: Session, org_id: int, event_type: str, ref: str) -> RowMapping | None:
    """An organization's event by PKey (with or without `@`) and type."""
    pkey = ref[1:] if ref.startswith("@") else ref
    if not pkey or len(pkey) > 64:
        return None
    # Final events move to the history after a while (mcSynch_local); they stay readable.
    for table in (event, event_history):
        found = (
            s.execute(
                select(*(table.c[name] for name in EVENT_COLUMNS)).where(
                    table.c.pkey == pkey, table.c.org_id == org_id, table.c.eventType == event_type
                )
            )
            .mappings()
            .first()
        )
        if found is not None:
            return found
    return None


# ---------------------------------------------------------------------------------- pipeline


@dataclass
class _Send:
    """One message decided in the claiming transaction, sent after it committed."""

    event_id: int
    log_id: int
    channel: str
    message_id: str
    address: str
    content: dict[str, str]


@dataclass
class Outcome:
    """What one process() call did: events by the status it gave them."""

    statuses: Counter[str] = field(default_factory=Counter)

    @property
    def claimed(self) -> int:
        return sum(self.statuses.values())


def message_id(delivery_id: int, event_id: int) -> str:
    """The stable message id of an event's log: the same on every attempt."""
    return str(uuid.uuid5(_MESSAGE_NAMESPACE, f"delivery:{delivery_id}:event:{event_id}"))


def _address(row: Any) -> tuple[str, str]:
    for key, channel in ADDRESS_CHANNELS:
        if row[key]:
            return channel, str(row[key])
    return "email", ""


def _claim(s: Session, ids: Sequence[int], limit: int) -> list[RowMapping]:
    """Pending events to process, locked: the given ids first, then the oldest others."""
    skip = s.get_bind().dialect.name == "postgresql"
    rows: list[RowMapping] = []
    if ids:
        rows.extend(
            s.execute(
                select(event)
                .where(event.c.status == "pending", event.c.id.in_(list(ids)[:limit]))
                .order_by(event.c.id)
                .with_for_update(skip_locked=skip)
            )
            .mappings()
            .all()
        )
    room = limit - len(rows)
    if room > 0:
        taken = [row["id"] for row in rows]
        stmt = select(event).where(event.c.status == "pending")
        if taken:
            stmt = stmt.where(event.c.id.notin_(taken))
        rows.extend(
            s.execute(stmt.order_by(event.c.id).limit(room).with_for_update(skip_locked=skip))
            .mappings()
            .all()
        )
    return rows


def _quarantined(s: Session, org_id: int, channel: str, addresses: set[str]) -> set[str]:
    """Addresses of the organization's profiles that must not be contacted on `channel`."""
    if not addresses:
        return set()
    column, flag = {
        "email": (profile.c.email, profile.c.emailBlacklisted),
        "sms": (profile.c.mobilePhone, profile.c.mobileBlacklisted),
        "push": (profile.c.pushToken, profile.c.blacklisted),
    }[channel]
    found = s.execute(
        select(column).where(
            profile.c.org_id == org_id,
            column.in_(sorted(addresses)),
            flag | profile.c.blacklisted,
        )
    ).scalars()
    return {str(value) for value in found}


def _insert_logs(
    s: Session, rows: list[dict[str, Any]]
) -> tuple[dict[int, int], dict[int, RowMapping]]:
    """Insert-or-nothing the logs: (event -> log id) inserted now, (event -> log) already there."""
    if not rows:
        return {}, {}
    if s.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
    inserted = {
        int(found.eventId): int(found.id)
        for found in s.execute(
            insert(delivery_log)
            .values(rows)
            .on_conflict_do_nothing(
                index_elements=[delivery_log.c.deliveryId, delivery_log.c.eventId]
            )
            .returning(delivery_log.c.id, delivery_log.c.eventId)
        )
    }
    left = [row for row in rows if row["eventId"] not in inserted]
    existing: dict[int, RowMapping] = {}
    if left:
        for found in s.execute(
            select(delivery_log.c.id, delivery_log.c.eventId, delivery_log.c.status).where(
                delivery_log.c.deliveryId.in_({row["deliveryId"] for row in left}),
                delivery_log.c.eventId.in_([row["eventId"] for row in left]),
            )
        ).mappings():
            existing[int(found["eventId"])] = found
    return inserted, existing


def _set_events(s: Session, changes: list[dict[str, Any]]) -> None:
    if not changes:
        return
    s.execute(
        update(event)
        .where(event.c.id == bindparam("b_id"))
        .values(
            status=bindparam("b_status"),
            reason=bindparam("b_reason"),
            templateId=bindparam("b_template"),
            deliveryLogId=bindparam("b_log"),
            lastModified=bindparam("b_now"),
        ),
        changes,
    )


def _decide(s: Session, rows: list[RowMapping], now: dt.datetime, outcome: Outcome) -> list[_Send]:
    """Route, check and render each claimed event; write logs and statuses (not committed)."""
    from worker.channels.templates import TemplateError, compile_content

    routes: dict[tuple[int, str, str], RowMapping | None] = {}
    compiled: dict[int, Any] = {}
    wanted: dict[tuple[int, str], set[str]] = {}
    for row in rows:
        channel, address = _address(row)
        wanted.setdefault((row["org_id"], channel), set()).add(address)
    blocked = {key: _quarantined(s, key[0], key[1], found) for key, found in wanted.items()}

    changes: list[dict[str, Any]] = []
    log_rows: list[dict[str, Any]] = []
    pending: dict[int, tuple[RowMapping, str, str, dict[str, str]]] = {}

    def change(row: Any, status: str, reason: str, template: int | None) -> None:
        outcome.statuses[status] += 1
        changes.append(
            {
                "b_id": row["id"],
                "b_status": status,
                "b_reason": reason[:255],
                "b_template": template,
                "b_log": None,
                "b_now": now,
            }
        )

    for row in rows:
        channel, address = _address(row)
        key = (row["org_id"], row["eventType"], channel)
        if key not in routes:
            routes[key] = templates_store.route(s, *key)
        template = routes[key]
        if template is None:
            change(
                row,
                "routingFailed",
                f"no published {channel} message template for event type '{row['eventType']}'",
                None,
            )
            continue
        if now - row["created"] > dt.timedelta(hours=template["expiryHours"]):
            change(row, "tooOld", f"older than {template['expiryHours']} h", template["id"])
            continue
        if template["paused"]:
            change(row, "paused", "its message template is paused", template["id"])
            continue
        status, reason, rendered = "pending", "", {}
        if address in blocked[(row["org_id"], channel)]:
            status, reason = "ignored", f"the {channel} address is quarantined or denylisted"
        else:
            try:
                if template["id"] not in compiled:
                    compiled[template["id"]] = compile_content(template["content"])
                rendered = compiled[template["id"]].render(
                    {"profile": {}, "vars": {}, "ctx": row["ctx"] or {}}
                )
            except TemplateError as exc:
                status, reason = "failed", f"template error: {exc}"
            except Exception as exc:  # one event's data must not fail the whole batch
                status, reason = "failed", f"template error: {type(exc).__name__}: {exc}"
        log_rows.append(
            {
                "deliveryId": template["deliveryId"],
                "org_id": row["org_id"],
                "eventId": row["id"],
                "address": address[:255],
                "status": status,
                "reason": reason[:255],
                "messageId": message_id(template["deliveryId"], row["id"]),
                "attempt": 1,
                "created": now,
                "lastModified": now,
            }
        )
        pending[row["id"]] = (template, channel, address, rendered)

    inserted, existing = _insert_logs(s, log_rows)
    reasons = {row["eventId"]: (row["status"], row["reason"]) for row in log_rows}
    sends: list[_Send] = []
    unknown: list[int] = []
    for event_id, (template, channel, address, rendered) in pending.items():
        if event_id in inserted:
            log_id = inserted[event_id]
            log_status, reason = reasons[event_id]
        else:
            # A log an earlier claim of this event wrote: never send it a second time.
            found = existing[event_id]
            log_id, log_status, reason = int(found["id"]), found["status"], ""
            if log_status == "pending":
                unknown.append(log_id)
                log_status, reason = "unknown", UNKNOWN_REASON
        status = LOG_TO_EVENT[log_status]
        outcome.statuses[status] += 1
        changes.append(
            {
                "b_id": event_id,
                "b_status": status,
                "b_reason": reason[:255],
                "b_template": template["id"],
                "b_log": log_id,
                "b_now": now,
            }
        )
        if event_id in inserted and log_status == "pending":
            sends.append(
                _Send(
                    event_id,
                    log_id,
                    channel,
                    message_id(template["deliveryId"], event_id),
                    address,
                    rendered,
                )
            )
    if unknown:
        s.execute(
            update(delivery_log)
            .where(delivery_log.c.id.in_(unknown), delivery_log.c.status == "pending")
            .values(status="unknown", reason=UNKNOWN_REASON, lastModified=now)
        )
    _set_events(s, changes)
    return sends


def _messages(settings: Any, sends: list[_Send]) -> dict[str, list[Any]]:
    """The connector messages of `sends` by channel; emails get their tracking links."""
    from worker.channels.connectors import Message
    from worker.channels.tracking import rewrite_html

    by_channel: dict[str, list[Any]] = {}
    for send in sends:
        content = send.content
        html = content.get("html") or ""
        if send.channel == "email" and html:
            html = rewrite_html(html, settings, send.log_id)
        by_channel.setdefault(send.channel, []).append(
            Message(
                message_id=send.message_id,
                address=send.address,
                subject=content.get("subject", ""),
                html=html,
                text=content.get("text") or content.get("body") or "",
                title=content.get("title", ""),
                sender=content.get("sender", ""),
            )
        )
    return by_channel


def _send(settings: Any, sends: list[_Send]) -> dict[str, tuple[bool | None, str]]:
    """Send through the channels' connectors: message id -> (sent, reason); None: unknown."""
    from worker.channels.connectors import connector_for

    results: dict[str, tuple[bool | None, str]] = {}
    for channel, messages in _messages(settings, sends).items():
        connector = connector_for(channel, settings)
        try:
            for result in connector.send(messages):
                results[result.message_id] = (bool(result.ok), str(result.reason or ""))
        except Exception as exc:
            # The connector could not say which messages left: none is sent again.
            log.warning("%s connector failed on a batch of %d: %s", channel, len(messages), exc)
            reason = f"connector error, outcome unknown (not resent): {exc}"
            for message in messages:
                results.setdefault(message.message_id, (None, reason))
        finally:
            connector.close()
    return results


def _finish(
    s: Session,
    sends: list[_Send],
    results: Mapping[str, tuple[bool | None, str]],
    outcome: Outcome,
) -> None:
    """Record what the connectors said; messages without an answer become `unknown`."""
    now = utcnow()
    logs: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    for send in sends:
        ok, reason = results.get(send.message_id, (None, UNKNOWN_REASON))
        log_status = {True: "sent", False: "failed", None: "unknown"}[ok]
        status = LOG_TO_EVENT[log_status]
        outcome.statuses["processing"] -= 1
        outcome.statuses[status] += 1
        logs.append({"b_id": send.log_id, "b_status": log_status, "b_reason": reason[:255]})
        events.append({"b_id": send.event_id, "b_status": status, "b_reason": reason[:255]})
    s.execute(
        update(delivery_log)
        .where(delivery_log.c.id == bindparam("b_id"), delivery_log.c.status == "pending")
        .values(status=bindparam("b_status"), reason=bindparam("b_reason"), lastModified=now),
        logs,
    )
    s.execute(
        update(event)
        .where(event.c.id == bindparam("b_id"), event.c.status == "processing")
        .values(status=bindparam("b_status"), reason=bindparam("b_reason"), lastModified=now),
        events,
    )
    outcome.statuses = +outcome.statuses  # drop the zero left by `processing`


def process(
    sessions: sessionmaker[Session],
    settings: Any,
    event_ids: Iterable[int] | None = None,
    *,
    limit: int = BATCH,
) -> Outcome:
    """Claim up to `limit` pending events (`event_ids` first), decide, send, record."""
    outcome = Outcome()
    ids = [int(found) for found in (event_ids or [])]
    with sessions() as s, s.begin():
        rows = _claim(s, ids, limit)
        if not rows:
            return outcome
        sends = _decide(s, rows, utcnow(), outcome)
    # Committed: every message below has its `pending` log, so a retry never sends it again.
    if sends:
        results = _send(settings, sends)
        with sessions() as s, s.begin():
            _finish(s, sends, results, outcome)
    return outcome


# ---------------------------------------------------------------------------------- repairs


@dataclass
class SweepReport:
    """What one sweep found: pending events to publish again, abandoned sends closed."""

    republish: list[int] = field(default_factory=list)
    abandoned: int = 0


def sweep(
    sessions: sessionmaker[Session],
    *,
    pending_after: float,
    processing_after: float,
    limit: int = 1000,
) -> SweepReport:
    """Find pending events older than `pending_after` s (their message may be lost) and close
    `processing` ones older than `processing_after` s whose worker died mid-send."""
    report = SweepReport()
    now = utcnow()
    with sessions() as s, s.begin():
        report.republish = list(
            s.execute(
                select(event.c.id)
                .where(
                    event.c.status == "pending",
                    event.c.created < now - dt.timedelta(seconds=pending_after),
                )
                .order_by(event.c.id)
                .limit(limit)
            ).scalars()
        )
        skip = s.get_bind().dialect.name == "postgresql"
        stale = (
            s.execute(
                select(event.c.id, event.c.deliveryLogId)
                .where(
                    event.c.status == "processing",
                    event.c.lastModified < now - dt.timedelta(seconds=processing_after),
                )
                .order_by(event.c.id)
                .limit(limit)
                .with_for_update(skip_locked=skip)
            )
            .mappings()
            .all()
        )
        logs = [row["deliveryLogId"] for row in stale if row["deliveryLogId"] is not None]
        if logs:
            s.execute(
                update(delivery_log)
                .where(delivery_log.c.id.in_(logs), delivery_log.c.status == "pending")
                .values(status="unknown", reason=UNKNOWN_REASON, lastModified=now)
            )
        if stale:
            report.abandoned = len(stale)
    # The logs of those events now say what became of them; copy it.
    if stale:
        with sessions() as s, s.begin():
            copy_statuses(s, [row["id"] for row in stale])
    return report
