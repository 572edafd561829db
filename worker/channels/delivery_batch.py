"""One delivery's send spread over the pool processes of every worker, batch by batch.

On PostgreSQL, inside a Celery worker, a delivery of at least MIN_BATCHES batches and
MIN_RECIPIENTS recipients is cut
(in the transaction that claims its recipients) into `delivery_batch` rows, each a range of
its log ids. The delivery task becomes their coordinator: it publishes one batch task per
batch on BATCH_QUEUE and parks. A batch task claims any free batch of the delivery
(`FOR UPDATE SKIP LOCKED`) under a lease, sends its slice with `sending.Pass` and the
batch's own marker as the rows' attempt (so a retried coordinator, whose attempts are
positive, never settles a live batch's rows), records it done, and claims the next one.

Completion is counted in the database: the batch task that finds every batch done wakes
the coordinator, which tallies and fires its outlets as a serial delivery does. The
coordinator's park has a timer too: each due run re-publishes batches whose lease ran out
(their worker died) or whose message went unclaimed, abandons a batch claimed
MAX_BATCH_ATTEMPTS times, and parks again. A batch claimed again settles what the previous
claim left in flight exactly as a task's later attempt does (unknown, or resent under its
idempotency key), so at most one sub-batch per dead claim is ambiguous.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from celery import Celery, current_task
from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from worker import dbclock
from worker.channels import sending
from worker.channels.connectors import connector_for, is_idempotent
from worker.channels.templates import compile_content
from worker.db import utcnow
from worker.errors import ActivityError, CommandRefused
from worker.messaging import delivery_log
from worker.models import DeliveryBatch, Task, Workflow
from worker.queues import BATCH_QUEUE

BATCH_TASK = "carillon.delivery_batch"
#: Fewer batches than this, or fewer recipients (half a second's work for one process):
#: the delivery task sends them itself, as the extra hops would cost more than they save.
MIN_BATCHES = 2
MIN_RECIPIENTS = 1_000
#: Claims of one batch before its remaining rows are given up (failed, or unknown if in
#: flight): a batch that kills its worker every time must not loop forever.
MAX_BATCH_ATTEMPTS = 20
ABANDONED_REASON = f"batch abandoned after {MAX_BATCH_ATTEMPTS} claims"
#: How long the last batch waits for its coordinator to park before leaving the wake to the
#: coordinator's timer (it parks within milliseconds of publishing).
WAKE_PATIENCE = 5.0
_MAX_BODY = 100_000

log = logging.getLogger(__name__)


def marker(batch_id: int, attempt: int) -> int:
    """The in-flight mark of one claim of a batch: negative, so never a task attempt."""
    return -(batch_id * 100 + attempt)


def can_spread(sessions: sessionmaker[Session]) -> bool:
    """Batches need row locks (PostgreSQL) and a broker to publish on (a Celery worker)."""
    bind = sessions.kw.get("bind")
    # current_task is a proxy: false outside a task a worker runs (tests, the bench).
    return bool(
        bind is not None
        and bind.dialect.name == "postgresql"
        and current_task
        and current_task.request.id
    )


def plan(
    s: Session, delivery_id: int, batch_size: int, min_recipients: int = MIN_RECIPIENTS
) -> int:
    """Cut the delivery's never-handed rows into batches of `batch_size` (not committed);
    none when they make fewer than MIN_BATCHES or are fewer than `min_recipients`. Returns
    the batches written."""
    log_ = delivery_log.c
    numbered = (
        select(log_.id.label("id"), func.row_number().over(order_by=log_.id).label("rn"))
        .where(
            log_.deliveryId == delivery_id,
            log_.status == "pending",
            log_.attempt == 0,
            log_.reason == "",
        )
        .subquery()
    )
    seq = ((numbered.c.rn - 1) // batch_size).label("seq")
    ranges = s.execute(
        select(seq, func.min(numbered.c.id), func.max(numbered.c.id), func.count())
        .group_by(seq)
        .order_by(seq)
    ).all()
    if len(ranges) < MIN_BATCHES or sum(row[3] for row in ranges) < min_recipients:
        return 0
    s.add_all(
        DeliveryBatch(
            delivery_id=delivery_id,
            seq=int(number),
            first_id=int(first),
            last_id=int(last),
            state="pending",
            attempt=0,
            sent=0,
            failed=0,
        )
        for number, first, last, _count in ranges
    )
    s.flush()
    return len(ranges)


def planned(sessions: sessionmaker[Session], delivery_id: int) -> bool:
    with sessions() as s:
        found = s.execute(
            select(DeliveryBatch.id).where(DeliveryBatch.delivery_id == delivery_id).limit(1)
        ).first()
    return found is not None


@dataclass(frozen=True)
class Progress:
    total: int
    done: int
    sent: int
    failed: int
    #: Batch tasks to publish now (new, unclaimed for a lease, or their claim expired).
    publish: int
    #: What failed batches reported (their connector failed): the coordinator fails with it.
    errors: tuple[str, ...] = ()


def tick(
    sessions: sessionmaker[Session], delivery_id: int, lease_seconds: int, idempotent: bool
) -> Progress:
    """The coordinator's look at its batches: collect failures (the batches failed become
    pending again, for the task's next attempt), abandon the hopeless, pick those to
    publish."""
    b = DeliveryBatch
    with sessions() as s, s.begin():
        now = dbclock.now(s)
        broken = s.execute(
            select(b.id, b.seq, b.error)
            .where(b.delivery_id == delivery_id, b.state == "failed")
            .order_by(b.seq)
            .with_for_update(skip_locked=True)
        ).all()
        if broken:
            s.execute(
                update(b)
                .where(b.id.in_([row.id for row in broken]))
                .values(state="pending", published_at=None, error=None)
            )
            errors = tuple(f"batch {row.seq + 1}: {row.error}" for row in broken)
            return Progress(0, 0, 0, 0, 0, errors)
        stale = now - dt.timedelta(seconds=lease_seconds)
        free = or_(b.state == "pending", and_(b.state == "running", b.lease_until < now))
        hopeless = s.scalars(
            select(b)
            .where(b.delivery_id == delivery_id, free, b.attempt >= MAX_BATCH_ATTEMPTS)
            .with_for_update(skip_locked=True)
        ).all()
        for batch in hopeless:
            _abandon(s, batch, idempotent)
        republish = s.scalars(
            select(b.id)
            .where(
                b.delivery_id == delivery_id,
                free,
                or_(b.published_at.is_(None), b.published_at < stale),
            )
            .with_for_update(skip_locked=True)
        ).all()
        if republish:
            s.execute(update(b).where(b.id.in_(republish)).values(published_at=now))
        total, done, sent, failed = s.execute(
            select(
                func.count(),
                func.count().filter(b.state == "done"),
                func.coalesce(func.sum(b.sent), 0),
                func.coalesce(func.sum(b.failed), 0),
            ).where(b.delivery_id == delivery_id)
        ).one()
    return Progress(int(total), int(done), int(sent), int(failed), len(republish))


def _abandon(s: Session, batch: DeliveryBatch, idempotent: bool) -> None:
    """Give up a batch's remaining rows: in flight unknown (sent maybe), the rest failed."""
    in_range = and_(
        delivery_log.c.deliveryId == batch.delivery_id,
        delivery_log.c.id.between(batch.first_id, batch.last_id),
        delivery_log.c.status == "pending",
        delivery_log.c.reason == "",
    )
    now = utcnow()
    if not idempotent:
        s.execute(
            update(delivery_log)
            .where(in_range, delivery_log.c.attempt != 0)
            .values(status="unknown", reason=sending.UNKNOWN_REASON, lastModified=now)
        )
    s.execute(
        update(delivery_log)
        .where(in_range)
        .values(status="failed", reason=ABANDONED_REASON, lastModified=now)
    )
    batch.state = "done"
    batch.lease_until = None
    log.warning("delivery %s: batch %s abandoned", batch.delivery_id, batch.seq)


def publish(app: Celery, payload: Mapping[str, Any], count: int) -> None:
    """`count` batch tasks: each claims whichever batch is free when it runs."""
    for _ in range(count):
        app.send_task(BATCH_TASK, args=[dict(payload)], queue=BATCH_QUEUE)


# ------------------------------------------------------------------ the batch task


@dataclass(frozen=True)
class Claim:
    id: int
    seq: int
    attempt: int
    first_id: int
    last_id: int


def owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"[:255]


def claim(sessions: sessionmaker[Session], delivery_id: int, lease_seconds: int) -> Claim | None:
    """The first free batch of the delivery, now ours under a lease (committed)."""
    b = DeliveryBatch
    with sessions() as s, s.begin():
        now = dbclock.now(s)
        batch = s.scalars(
            select(b)
            .where(
                b.delivery_id == delivery_id,
                or_(b.state == "pending", and_(b.state == "running", b.lease_until < now)),
                b.attempt < MAX_BATCH_ATTEMPTS,
            )
            .order_by(b.seq)
            .limit(1)
            .with_for_update(skip_locked=True)
        ).first()
        if batch is None:
            return None
        batch.state = "running"
        batch.attempt += 1
        batch.lease_until = now + dt.timedelta(seconds=lease_seconds)
        batch.owner = owner()
        return Claim(batch.id, batch.seq, batch.attempt, batch.first_id, batch.last_id)


def _held(taken: Claim) -> Any:
    """Rows of the batch still held by this claim (fencing: a later claim moved `attempt`)."""
    return and_(
        DeliveryBatch.id == taken.id,
        DeliveryBatch.attempt == taken.attempt,
        DeliveryBatch.state == "running",
    )


def _renew(s: Session, taken: Claim, lease_seconds: int) -> bool:
    result: Any = s.execute(
        update(DeliveryBatch)
        .where(_held(taken))
        .values(lease_until=dbclock.now(s) + dt.timedelta(seconds=lease_seconds))
    )
    return bool(result.rowcount)


def task_and_workflow(s: Session, task_id: str) -> Any:
    """(state, attempt, reason, wf) of a delivery task and its workflow's state; None when
    the task is gone. What the serial send and the batches check between sub-batches."""
    return s.execute(
        select(Task.state, Task.attempt, Task.reason, Workflow.state.label("wf"))
        .join(Workflow, Workflow.id == Task.workflow_id)
        .where(Task.id == task_id)
    ).first()


def gone_or_aborted(found: Any) -> str | None:
    """Why a task read by task_and_workflow must not send on: gone, or aborted."""
    if found is None:
        return "the task no longer exists"
    if found.state == "aborted":
        return f"the task was aborted ({found.reason or 'no reason given'})"
    return None


def blocked(s: Session, task_id: str) -> str | None:
    """Why the delivery task's batches must not send now: it was aborted or ended, or its
    workflow was stopped or paused; None while it coordinates."""
    found = task_and_workflow(s, task_id)
    if (why := gone_or_aborted(found)) is not None:
        return why
    if found.state not in ("waiting", "pending", "running", "held"):
        return f"the task is {found.state}"
    if found.wf in ("stopped", "paused"):
        return f"the workflow was {found.wf}"
    return None


@dataclass
class Guard:
    """The Pass's stop check for one claim: `blocked`, or the claim taken over; else the
    lease renewed. Remembers why it stopped (a stop is not a failure)."""

    sessions: sessionmaker[Session]
    task_id: str
    taken: Claim
    lease_seconds: int
    reason: str | None = None

    def __call__(self) -> str | None:
        with self.sessions() as s, s.begin():
            self.reason = blocked(s, self.task_id)
            if self.reason is None and not _renew(s, self.taken, self.lease_seconds):
                self.reason = "another claim took the batch over"
        return self.reason


def release(sessions: sessionmaker[Session], taken: Claim) -> None:
    """Hand a stopped batch back: the coordinator publishes it again on its next run. A
    claim that marked no row is forgotten (its attempt given back), so that pauses and
    stops never wear a batch out."""
    mark = marker(taken.id, taken.attempt)
    with sessions() as s, s.begin():
        used = s.execute(
            select(delivery_log.c.id)
            .where(
                delivery_log.c.deliveryId
                == s.scalar(select(DeliveryBatch.delivery_id).where(DeliveryBatch.id == taken.id)),
                delivery_log.c.id.between(taken.first_id, taken.last_id),
                delivery_log.c.attempt == mark,
            )
            .limit(1)
        ).first()
        s.execute(
            update(DeliveryBatch)
            .where(DeliveryBatch.id == taken.id, DeliveryBatch.attempt == taken.attempt)
            .values(
                state="pending",
                lease_until=None,
                published_at=None,
                attempt=DeliveryBatch.attempt - (0 if used else 1),
            )
        )


def fail(sessions: sessionmaker[Session], taken: Claim, error: str) -> None:
    """A batch whose connector failed: the coordinator reports it and fails the task (as a
    delivery sent by one process does); the batch waits for the task's next attempt."""
    with sessions() as s, s.begin():
        s.execute(
            update(DeliveryBatch)
            .where(DeliveryBatch.id == taken.id, DeliveryBatch.attempt == taken.attempt)
            .values(state="failed", lease_until=None, error=error[:2000])
        )


def complete(sessions: sessionmaker[Session], taken: Claim, sent: int, failed: int) -> bool:
    with sessions() as s, s.begin():
        result: Any = s.execute(
            update(DeliveryBatch)
            .where(_held(taken))
            .values(state="done", lease_until=None, sent=sent, failed=failed)
        )
        return bool(result.rowcount)


def all_done(sessions: sessionmaker[Session], delivery_id: int) -> bool:
    with sessions() as s:
        left = s.scalar(
            select(func.count()).where(
                DeliveryBatch.delivery_id == delivery_id, DeliveryBatch.state != "done"
            )
        )
    return not left


def run_batches(payload: Mapping[str, Any]) -> dict[str, int]:
    """The batch task: claim and send free batches of one delivery until none is left."""
    from worker import runtime
    from worker.activities.delivery import profile_table_for

    settings = runtime.settings()
    sessions = runtime.sessions()
    delivery_id = int(payload["delivery_id"])
    task_id = str(payload["task_id"])
    lease = settings.lease_seconds
    compiled = {
        (variant or None): compile_content(content, max_chars=_MAX_BODY)
        for variant, content in payload["contents"].items()
    }
    compiled.setdefault(None, next(iter(compiled.values())))
    channel = str(payload["channel"])
    connector = connector_for(channel, settings)
    done = 0
    failed = False
    try:
        for _ in range(int(payload.get("batches", 1)) + 1):
            with sessions() as s:
                if blocked(s, task_id):
                    break
            taken = claim(sessions, delivery_id, lease)
            if taken is None:
                break
            guard = Guard(sessions, task_id, taken, lease)
            run = sending.Pass(
                sessions=sessions,
                delivery_id=delivery_id,
                org_id=int(payload["org_id"]),
                channel=channel,
                attempt=marker(taken.id, taken.attempt),
                connector=connector,
                contents=compiled,
                vars=payload.get("vars") or {},
                population=payload.get("population"),
                profile=profile_table_for(settings),
                sender=str(payload.get("sender") or ""),
                batch_size=int(payload["batch_size"]),
                should_stop=guard,
                decorate=sending.tracking(settings) if channel == "email" else None,
                first_id=taken.first_id,
                last_id=taken.last_id,
            )
            try:
                statuses = run.run()
            except ActivityError as exc:
                if guard.reason is not None:
                    release(sessions, taken)
                else:
                    fail(sessions, taken, exc.message)
                    failed = True
                log.warning("delivery %s batch %s: %s", delivery_id, taken.seq, exc.message)
                break
            if complete(sessions, taken, statuses["sent"], statuses["failed"]):
                done += 1
    finally:
        connector.close()
    if failed or all_done(sessions, delivery_id):
        wake_coordinator(sessions, task_id)
    return {"batches": done}


def wake_coordinator(sessions: sessionmaker[Session], task_id: str) -> None:
    """Wake the parked coordinator; while it is still running (it parks right after
    publishing), wait a little; its timer covers the rest."""
    from worker import runtime

    deadline = time.monotonic() + WAKE_PATIENCE
    while True:
        with sessions() as s:
            state = s.scalar(select(Task.state).where(Task.id == task_id))
        if state == "waiting":
            try:
                runtime.engine().wake(task_id, by="its last delivery batch")
                return
            except CommandRefused:
                pass  # woken by its timer meanwhile, or the workflow ended
        elif state not in ("pending", "running"):
            return
        if time.monotonic() > deadline:
            return
        time.sleep(0.1)


def register(app: Celery) -> None:
    """Bind the batch task to `app` (called by create_celery)."""

    @app.task(
        name=BATCH_TASK,
        acks_late=True,
        reject_on_worker_lost=True,
        ignore_result=True,
        shared=False,
    )
    def delivery_batch(payload: dict[str, Any]) -> dict[str, int]:
        return run_batches(payload)


def idempotent_channel(channel: str, settings: Any) -> bool:
    connector = connector_for(channel, settings)
    try:
        return is_idempotent(connector)
    finally:
        connector.close()


def current_app() -> Celery:
    """The app of the task running now (can_spread said there is one)."""
    app: Celery = current_task.app
    return app
