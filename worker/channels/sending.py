"""Sending a delivery without ever sending twice: claim recipients, then send batch by batch.

The protocol (RELIABILITY.md 3.3), on the `delivery_log` rows of one delivery:

1. **Claim.** One `INSERT ... SELECT` from the population writes a row per recipient,
   `ignored` with its reason (blacklisted, optedOut, quarantined, noAddress,
   duplicateAddress) or `pending` with `attempt = 0`, and commits before anything is sent.
   The row is unique per (delivery, profile), so a later attempt inserts nothing new.
2. **In flight.** Right before a batch is handed to the connector, its rows get
   `attempt = <this attempt>` in a short transaction of their own, committed. `attempt = 0`
   means "never handed to a connector"; a pending row with an attempt number was handed
   over by that attempt, and only the outcome is missing.
3. **Outcome.** The connector's answer turns the batch's rows `sent` or `failed`, committed.
4. **A later attempt** (a worker died, the task runs again) first settles what an earlier
   attempt left in flight: with SMTP or a file (no idempotency key) those rows become
   `unknown` and are never resent; with an HTTP provider they go back to `attempt = 0` and
   are sent again under the same Idempotency-Key (their message id). Rows still at
   `attempt = 0` were never handed over and are sent normally.

So a crash at any point leaves at most one batch ambiguous, and each recipient receives at
most one message. The per-batch commits need their own sessions: the task's transaction
(`ctx.session`) only commits when the activity completes. The next batch is read and
rendered while the connector sends the current one (a thread), but only taken (step 2) once
the current one's outcome is recorded (step 3). A batch reads only the profile columns its
templates name (`CompiledContent.profile_fields`), all of them when a template uses the
whole profile.
"""

from __future__ import annotations

import sys
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    Select,
    String,
    Table,
    and_,
    case,
    cast,
    func,
    inspect,
    literal,
    select,
    true,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from worker import populations
from worker.channels.connectors import (
    Connector,
    ConnectorError,
    Message,
    SendResult,
    is_idempotent,
)
from worker.channels.templates import CompiledContent
from worker.db import utcnow
from worker.errors import ActivityError
from worker.marketing import profile as profile_table
from worker.messaging import delivery, delivery_log

#: The reason of a pending row kept back until the A/B winner is known.
AWAITING_WINNER = "awaitingWinner"
UNKNOWN_REASON = "interrupted while sending; not resent to avoid a duplicate"
#: Reasons of the rows a delivery ignores, in the order they are checked.
IGNORE_REASONS = ("blacklisted", "optedOut", "quarantined", "noAddress", "duplicateAddress")
_MESSAGE_NAMESPACE = uuid.UUID("6f1d3c52-5c1e-4d5e-9a41-0c8b9e2f7a10")
#: The GIL switch interval while a pass sends (Python's default is 5 ms): with the main
#: thread rendering and the connection threads each needing the GIL briefly after every
#: server reply, those threads queued for up to 5 ms each time; at 0.5 ms the benchmark
#: sent 1.5-1.9x more per second for the same CPU.
SWITCH_INTERVAL = 0.0005
#: Lehmer (MINSTD) generator: a portable SQL hash of profile ids for the A/B split.
_HASH_MULTIPLIER = 48271
_HASH_MODULUS = 2147483647
_ADDRESS = {"email": "email", "sms": "mobilePhone", "push": "pushToken"}
_OPT_OUT = {"email": "emailOptOut", "sms": "smsOptOut", "push": "pushOptOut"}
_QUARANTINE = {"email": "emailBlacklisted", "sms": "mobileBlacklisted"}


def message_prefix(delivery_id: int) -> str:
    """Message ids are `<uuid5 of the delivery>.<profile id>`: stable across attempts."""
    return f"{uuid.uuid5(_MESSAGE_NAMESPACE, f'delivery:{delivery_id}')}."


def ab_bucket(profile_id: int) -> int:
    """The hash `claim` computes in SQL (tests and reports use this twin)."""
    return ((profile_id % _HASH_MODULUS) * _HASH_MULTIPLIER) % _HASH_MODULUS


def ab_variant(profile_id: int, split: Split) -> str | None:
    """The variant `claim` gives a recipient that is not excluded; None: awaits the winner."""
    bucket = ab_bucket(profile_id)
    if bucket % 100 >= split.share:
        return None
    return split.variants[(bucket // 100) % len(split.variants)]


@contextmanager
def short_gil_slices() -> Iterator[None]:
    """SWITCH_INTERVAL for the duration (never longer than it was), then as it was."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(min(previous, SWITCH_INTERVAL))
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


@contextmanager
def own_sessions(task_session: Session) -> Iterator[sessionmaker[Session]]:
    """Sessions for short committed transactions beside the task's own transaction.

    On SQLite every transaction takes the single write lock at BEGIN, and the engine may
    already have begun the task's transaction (it reads the task row on a later attempt), so
    a second writer would wait for it forever. The task's transaction has only read at this
    point: it is committed at the driver level, left without a transaction while we work,
    and begun again (IMMEDIATE, as the engine does) before the task uses it to complete.
    """
    bind = task_session.get_bind()
    factory = sessionmaker(bind, expire_on_commit=False)
    if bind.dialect.name != "sqlite":
        yield factory
        return
    raw = task_session.connection().connection.driver_connection
    assert raw is not None
    if raw.in_transaction:
        raw.execute("COMMIT")
    try:
        yield factory
    finally:
        if not raw.in_transaction:
            raw.execute("BEGIN IMMEDIATE")


@dataclass
class Pass:
    """One sending pass over a delivery's pending rows (a task attempt, or the remainder)."""

    sessions: sessionmaker[Session]
    delivery_id: int
    org_id: int
    channel: str
    attempt: int
    connector: Connector
    #: Content by variant name; None for rows without a variant (no A/B, or the remainder).
    contents: Mapping[str | None, CompiledContent]
    vars: Mapping[str, Any] = field(default_factory=dict)
    population: Mapping[str, Any] | None = None
    profile: Table = profile_table
    sender: str = ""
    batch_size: int = 500
    #: Called between batches: a reason to stop (task superseded, workflow stopped) or None.
    should_stop: Callable[[], str | None] | None = None
    progress: Callable[[int], None] | None = None
    #: Rendered fields a channel needs besides the template fields (email: tracking).
    decorate: Callable[[int, dict[str, str]], dict[str, str]] | None = None
    statuses: Counter[str] = field(default_factory=Counter)
    #: A delivery batch's slice of the log ids (worker.channels.delivery_batch): its
    #: `attempt` is then the batch's own marker, and only the slice is settled and sent.
    first_id: int = 0
    last_id: int | None = None

    def run(self) -> Counter[str]:
        """Settle the ambiguous rows, then send the never-handed ones batch by batch.

        The next batch is read and rendered while the connector sends the current one in a
        thread (both mostly wait: on the database, on the server); it is taken (marked in
        flight) only once the current batch's outcome is recorded, so a crash still leaves
        at most one batch ambiguous, and the stop check still falls between batches.
        """
        self.settle_in_flight()
        after = self.first_id - 1 if self.first_id else 0
        handed: tuple[Future[list[SendResult]], list[Message]] | None = None
        with short_gil_slices(), ThreadPoolExecutor(1, "carillon-sending") as background:
            try:
                while True:
                    batch = self._next_batch(after)
                    messages = self._render(batch)
                    if handed is not None:
                        sent, handed = handed, None
                        self._settle(*sent)
                    if self.should_stop is not None:
                        reason = self.should_stop()
                        if reason:
                            raise ActivityError(f"sending stopped: {reason}")
                    if not batch:
                        return self.statuses
                    after = batch[-1]["id"]
                    taken = self._take(batch)
                    todo = [m for m in messages if m.message_id in taken]
                    if todo:
                        handed = (background.submit(self.connector.send, todo), todo)
            finally:
                if handed is not None:  # failing before the outcome of the batch sent was read
                    self._settle_quietly(*handed)

    def _settle(self, sent: Future[list[SendResult]], messages: list[Message]) -> None:
        """Wait for the batch handed to the connector and record its outcome."""
        try:
            results = sent.result()
        except ConnectorError as exc:
            self._record(exc.results)
            self._give_back(messages, exc)
            raise ActivityError(
                f"{exc.message} ({self.statuses['sent']:,} message(s) sent before it)"
            ) from None
        self._record(results)
        answered = {result.message_id for result in results}
        missing = [m for m in messages if m.message_id not in answered]
        if missing:  # a connector that skipped messages: their fate is unknown
            self._mark([m.message_id for m in missing], "unknown", "no answer from the connector")
        if self.progress is not None:
            self.progress(self.statuses["sent"] + self.statuses["failed"])

    def _settle_quietly(self, sent: Future[list[SendResult]], messages: list[Message]) -> None:
        """_settle while another error is on its way out: that error is the one reported (a
        connector error here still recorded what it knew)."""
        with suppress(Exception):
            self._settle(sent, messages)

    def settle_in_flight(self) -> int:
        """Rows an earlier attempt handed to a connector without recording the outcome."""
        left = and_(
            delivery_log.c.deliveryId == self.delivery_id,
            delivery_log.c.status == "pending",
            delivery_log.c.attempt >= 1,
            delivery_log.c.attempt < self.attempt,
        )
        if self.last_id is not None:
            # A batch's slice: whatever another claim of it (or the serial path) left in
            # flight, never the rows this claim marks.
            left = and_(
                delivery_log.c.deliveryId == self.delivery_id,
                delivery_log.c.id.between(self.first_id, self.last_id),
                delivery_log.c.status == "pending",
                delivery_log.c.attempt != 0,
                delivery_log.c.attempt != self.attempt,
            )
        if is_idempotent(self.connector):
            values: dict[str, Any] = {"attempt": 0, "lastModified": utcnow()}
        else:
            values = {"status": "unknown", "reason": UNKNOWN_REASON, "lastModified": utcnow()}
        with self.sessions() as s, s.begin():
            result: Any = s.execute(update(delivery_log).where(left).values(**values))
            settled = result.rowcount
        if settled and "status" in values:
            self.statuses["unknown"] += settled
        return int(settled or 0)

    def _next_batch(self, after: int) -> list[Mapping[str, Any]]:
        """The next rows never handed over, with their profile and enrichment columns."""
        log, prof = delivery_log, self.profile
        used = self._profile_fields()
        columns: list[Any] = [
            log.c.id.label("id"),
            log.c.messageId.label("messageId"),
            log.c.address.label("address"),
            log.c.variant.label("variant"),
            *(
                c.label(f"p_{c.key}")
                for c in prof.columns
                if c.key != "org_id" and (used is None or c.key in used)
            ),
        ]
        source = log.join(prof, prof.c.id == log.c.profileId)
        extra = list((self.population or {}).get("columns") or [])
        if extra and self.population is not None:
            pop = populations.as_table(self.population)
            source = source.outerjoin(pop, pop.c.id == log.c.profileId)
            columns += [pop.c[name].label(f"e_{name}") for name in extra]
        where = [
            log.c.deliveryId == self.delivery_id,
            log.c.status == "pending",
            log.c.attempt == 0,
            log.c.reason == "",
            log.c.id > after,
        ]
        if self.last_id is not None:
            where.append(log.c.id <= self.last_id)
        query = (
            select(*columns)
            .select_from(source)
            .where(*where)
            .order_by(log.c.id)
            .limit(self.batch_size)
        )
        with self.sessions() as s:
            return [dict(row) for row in s.execute(query).mappings()]

    def _profile_fields(self) -> frozenset[str] | None:
        """The profile columns the templates read (None: all of them): a batch selects only
        those, as reading and copying every column of every recipient cost more than
        rendering."""
        used: set[str] = set()
        for content in self.contents.values():
            if content.profile_fields is None:
                return None
            used |= content.profile_fields
        return frozenset(used)

    def _render(self, batch: list[Mapping[str, Any]]) -> list[Message]:
        messages = []
        for row in batch:
            content = self.contents.get(row["variant"]) or self.contents[None]
            context = recipient_context(row, self.vars)
            fields = content.render(context)
            if self.decorate is not None:
                fields = self.decorate(row["id"], fields)
            messages.append(to_message(row["messageId"], row["address"], fields, self.sender))
        return messages

    def _take(self, batch: list[Mapping[str, Any]]) -> set[str]:
        """Mark the batch in flight (committed); the message ids this attempt now owns."""
        ids = [row["id"] for row in batch]
        with self.sessions() as s, s.begin():
            s.execute(
                update(delivery_log)
                .where(
                    delivery_log.c.id.in_(ids),
                    delivery_log.c.status == "pending",
                    delivery_log.c.attempt == 0,
                )
                .values(attempt=self.attempt, lastModified=utcnow())
            )
            # Another attempt racing this one (a zombie worker) may have taken some rows:
            # send only the ones marked with our attempt.
            taken = s.execute(
                select(delivery_log.c.messageId).where(
                    delivery_log.c.id.in_(ids),
                    delivery_log.c.status == "pending",
                    delivery_log.c.attempt == self.attempt,
                )
            ).scalars()
            return set(taken)

    def _record(self, results: list[SendResult]) -> None:
        sent = [r.message_id for r in results if r.ok]
        if sent:
            self._mark(sent, "sent", "")
        by_reason: dict[str, list[str]] = {}
        for result in results:
            if not result.ok:
                by_reason.setdefault(result.reason[:255], []).append(result.message_id)
        for reason, ids in by_reason.items():
            self._mark(ids, "failed", reason)

    def _give_back(self, messages: list[Message], exc: ConnectorError) -> None:
        """After a connection failure: the message in flight is unknown (or resent later
        under its key), the ones never handed over go back to be sent by a later attempt."""
        answered = {result.message_id for result in exc.results}
        untried = [m.message_id for m in messages if m.message_id not in answered]
        in_flight = [m for m in untried if m in exc.in_flight_ids]
        never = [m for m in untried if m not in exc.in_flight_ids]
        if in_flight and not is_idempotent(self.connector):
            self._mark(in_flight, "unknown", UNKNOWN_REASON)
        else:
            never += in_flight
        if never:
            with self.sessions() as s, s.begin():
                s.execute(
                    update(delivery_log)
                    .where(
                        delivery_log.c.deliveryId == self.delivery_id,
                        delivery_log.c.messageId.in_(never),
                        delivery_log.c.status == "pending",
                        delivery_log.c.attempt == self.attempt,
                    )
                    .values(attempt=0, lastModified=utcnow())
                )

    def _mark(self, message_ids: list[str], status: str, reason: str) -> None:
        with self.sessions() as s, s.begin():
            for start in range(0, len(message_ids), 1000):
                done: Any = s.execute(
                    update(delivery_log)
                    .where(
                        delivery_log.c.deliveryId == self.delivery_id,
                        delivery_log.c.messageId.in_(message_ids[start : start + 1000]),
                        delivery_log.c.status == "pending",
                        delivery_log.c.attempt == self.attempt,
                    )
                    .values(status=status, reason=reason, lastModified=utcnow())
                )
                self.statuses[status] += int(done.rowcount or 0)


def recipient_context(row: Mapping[str, Any], vars: Mapping[str, Any]) -> dict[str, Any]:
    """What a template sees for one recipient: profile, vars and enrichment columns."""
    context: dict[str, Any] = {"profile": {}, "vars": dict(vars), "ctx": {}}
    for key, value in row.items():
        if key.startswith("p_"):
            context["profile"][key[2:]] = value
        elif key.startswith("e_") and key[2:] not in ("profile", "vars", "ctx"):
            context[key[2:]] = value
    return context


def tracking(settings: Any) -> Callable[[int, dict[str, str]], dict[str, str]]:
    """Email HTML gets its links through signed click redirects and an open pixel."""
    from worker.channels.tracking import rewrite_html

    def decorate(log_id: int, fields: dict[str, str]) -> dict[str, str]:
        if fields.get("html"):
            fields["html"] = rewrite_html(fields["html"], settings, log_id)
        return fields

    return decorate


def to_message(message_id: str, address: str, fields: Mapping[str, str], sender: str) -> Message:
    return Message(
        message_id=message_id,
        address=address,
        subject=fields.get("subject", ""),
        html=fields.get("html", ""),
        text=fields.get("text") or fields.get("body") or "",
        title=fields.get("title", ""),
        sender=fields.get("sender") or sender,
    )


# ------------------------------------------------------------------ the delivery row


def ensure_delivery(
    s: Session,
    *,
    org_id: int,
    channel: str,
    name: str,
    label: str,
    workflow_id: int,
    job_id: str,
    task_id: str,
    content: Mapping[str, Any],
    ab_test: Mapping[str, Any] | None,
) -> Mapping[str, Any]:
    """The task's delivery row, created on its first attempt (one per task, whatever the
    attempt); later attempts find it with the state it reached."""
    found = s.execute(by_key(delivery).where(delivery.c.task_id == task_id)).mappings().first()
    if found is not None:
        return dict(found)
    now = utcnow()
    values = {
        "org_id": org_id,
        "channel": channel,
        "name": name[:128],
        "label": label[:255],
        "workflow_id": workflow_id,
        "job_id": job_id,
        "task_id": task_id,
        "state": "preparing",
        "content": dict(content),
        "abTest": dict(ab_test) if ab_test else None,
        "indicators": {},
        "created": now,
        "lastModified": now,
    }
    s.execute(_insert_ignore(s, delivery).values(**values))
    return dict(s.execute(by_key(delivery).where(delivery.c.task_id == task_id)).mappings().one())


def by_key(target: Table) -> Select[Any]:
    """SELECT every column under its camelCase key (rows become dicts keyed like the API)."""
    return select(*(column.label(column.key) for column in target.columns))


def set_state(s: Session, delivery_id: int, state: str, **values: Any) -> None:
    s.execute(
        update(delivery)
        .where(delivery.c.id == delivery_id)
        .values(state=state, lastModified=utcnow(), **values)
    )


def _insert_ignore(s: Session, target: Table) -> Any:
    """INSERT ... ON CONFLICT DO NOTHING on PostgreSQL and SQLite."""
    dialect = postgresql if s.get_bind().dialect.name == "postgresql" else sqlite
    return dialect.insert(target).on_conflict_do_nothing()


# ------------------------------------------------------------------ claiming recipients


@dataclass(frozen=True)
class Split:
    """An A/B test's split: `share` percent of recipients, evenly over `variants`."""

    variants: tuple[str, ...]
    share: int


def claim(
    s: Session,
    *,
    delivery_id: int,
    org_id: int,
    channel: str,
    population: Mapping[str, Any],
    profile: Table = profile_table,
    split: Split | None = None,
) -> int:
    """Write the delivery's log rows from the population in one statement (not committed).

    Exclusions are decided in SQL: an ignored row carries the first reason that applies;
    among the rest, one recipient per address (the lowest profile id) is kept. With a split,
    the test share gets a variant and the others wait (`awaitingWinner`). Returns the rows
    inserted; rows already there (an earlier attempt) are left as they are.
    """
    pop = populations.as_table(population)
    p = profile
    address = p.c[_ADDRESS[channel]]
    normalised = func.lower(func.trim(address)) if channel == "email" else func.trim(address)
    quarantine = p.c[_QUARANTINE[channel]] if channel in _QUARANTINE else literal(False)
    excluded = case(
        (p.c.blacklisted == true(), "blacklisted"),
        (p.c[_OPT_OUT[channel]] == true(), "optedOut"),
        (quarantine == true(), "quarantined"),
        (func.coalesce(func.trim(address), "") == "", "noAddress"),
        else_="",
    )
    ranked = select(
        p.c.id.label("profile_id"),
        func.coalesce(address, "").label("address"),
        excluded.label("excluded"),
        func.row_number().over(partition_by=(normalised, excluded), order_by=p.c.id).label("rank"),
    ).select_from(pop.join(p, p.c.id == pop.c.id))
    first = ranked.where(p.c.org_id == org_id).subquery("candidates")
    reason = case(
        (first.c.excluded != "", first.c.excluded),
        (first.c.rank > 1, "duplicateAddress"),
        else_="",
    )
    variant: Any = literal(None, String)
    if split is not None:
        bucket = ((first.c.profile_id % _HASH_MODULUS) * _HASH_MULTIPLIER) % _HASH_MODULUS
        in_test = (bucket % 100) < split.share
        slot = (bucket // 100) % len(split.variants)
        which = case(*((slot == i, name) for i, name in enumerate(split.variants)))
        variant = case((and_(reason == "", in_test), which), else_=None)
        reason = case((and_(reason == "", ~in_test), AWAITING_WINNER), else_=reason)
    now = utcnow()
    rows = select(
        literal(delivery_id).label("delivery_id"),
        literal(org_id).label("org_id"),
        first.c.profile_id,
        func.substr(first.c.address, 1, 255).label("address"),
        case((reason.in_(IGNORE_REASONS), "ignored"), else_="pending").label("status"),
        reason.label("reason"),
        variant.label("variant"),
        (literal(message_prefix(delivery_id)) + cast(first.c.profile_id, String)).label("mid"),
        literal(0).label("attempt"),
        literal(now, delivery_log.c.created.type).label("created"),
        literal(now, delivery_log.c.lastModified.type).label("last_modified"),
    ).where(true())
    target = delivery_log.c
    statement = _insert_ignore(s, delivery_log).from_select(
        [
            target.deliveryId,
            target.org_id,
            target.profileId,
            target.address,
            target.status,
            target.reason,
            target.variant,
            target.messageId,
            target.attempt,
            target.created,
            target.lastModified,
        ],
        rows,
    )
    result: Any = s.execute(statement)
    return int(result.rowcount or 0)


def tally(s: Session, delivery_id: int) -> tuple[Counter[str], Counter[str]]:
    """(rows by status, ignored rows by reason) of a delivery."""
    statuses: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    query = (
        select(delivery_log.c.status, delivery_log.c.reason, func.count())
        .where(delivery_log.c.deliveryId == delivery_id)
        .group_by(delivery_log.c.status, delivery_log.c.reason)
    )
    for status, reason, count in s.execute(query):
        if status == "pending" and reason == AWAITING_WINNER:
            statuses[AWAITING_WINNER] += count
            continue
        statuses[status] += count
        if status == "ignored":
            reasons[reason] += count
    return statuses, reasons


def summary(statuses: Counter[str], reasons: Counter[str]) -> str:
    """`1,234 message(s) sent, 12 ignored (optedOut 10, noAddress 2), 0 failed`."""
    text = f"{statuses['sent']:,} message(s) sent, {statuses['ignored']:,} ignored"
    if reasons:
        text += " (" + ", ".join(f"{r} {n:,}" for r, n in reasons.most_common()) + ")"
    text += f", {statuses['failed']:,} failed"
    if statuses["unknown"]:
        text += f", {statuses['unknown']:,} unknown (interrupted, not resent)"
    if statuses[AWAITING_WINNER]:
        text += f", {statuses[AWAITING_WINNER]:,} awaiting the A/B winner"
    return text


def table_exists(s: Session, name: str) -> bool:
    return bool(inspect(s.connection()).has_table(name))
