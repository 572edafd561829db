"""Delivery batches on real PostgreSQL: how a delivery is cut, claimed (`SKIP LOCKED`),
released, taken over after its lease, and what a coordinator's look at them does."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from sqlalchemy import insert, select, update

from tests.conftest import Harness
from worker import catalog
from worker.channels import delivery_batch as db_
from worker.channels import sending
from worker.channels.connectors import SmtpConnector
from worker.config import Settings
from worker.db import utcnow
from worker.messaging import delivery, delivery_log
from worker.models import DeliveryBatch


@dataclass
class Seeded:
    harness: Harness
    delivery_id: int
    #: delivery_log ids of the pending rows, in order.
    ids: list[int]


@pytest.fixture
def seeded(pg_harness: Harness) -> Iterator[Seeded]:
    """A delivery with 25 pending rows and 3 ignored ones, under an organization of its own."""
    h = pg_harness
    with h.sessions() as s, s.begin():
        org_id = catalog.ensure_org(s, f"batch_{uuid.uuid4().hex[:8]}").id
        row = sending.ensure_delivery(
            s,
            org_id=org_id,
            channel="email",
            name="email1",
            label="",
            workflow_id=0,
            job_id=str(uuid.uuid4()),
            task_id=str(uuid.uuid4()),
            content={},
            ab_test=None,
        )
        now = utcnow()
        rows = [
            {
                "deliveryId": row["id"],
                "org_id": org_id,
                "profileId": n,
                "address": f"p{n}@example.org",
                "status": "ignored" if n % 10 == 5 and n < 30 else "pending",
                "reason": "optedOut" if n % 10 == 5 and n < 30 else "",
                "messageId": f"{sending.message_prefix(row['id'])}{n}",
                "attempt": 0,
                "created": now,
                "lastModified": now,
            }
            for n in range(1, 29)
        ]
        s.execute(insert(delivery_log), rows)
        ids = list(
            s.scalars(
                select(delivery_log.c.id)
                .where(delivery_log.c.deliveryId == row["id"], delivery_log.c.reason == "")
                .order_by(delivery_log.c.id)
            )
        )
    yield Seeded(h, int(row["id"]), ids)
    with h.sessions() as s, s.begin():
        s.execute(delivery.delete().where(delivery.c.id == row["id"]))


def planned(seeded: Seeded, size: int = 10, least: int = 0) -> list[DeliveryBatch]:
    with seeded.harness.sessions() as s, s.begin():
        db_.plan(s, seeded.delivery_id, size, min_recipients=least)
    return batches(seeded)


def batches(seeded: Seeded) -> list[DeliveryBatch]:
    with seeded.harness.sessions() as s:
        return list(
            s.scalars(
                select(DeliveryBatch)
                .where(DeliveryBatch.delivery_id == seeded.delivery_id)
                .order_by(DeliveryBatch.seq)
            )
        )


def statuses(seeded: Seeded, first: int, last: int) -> list[tuple[str, int]]:
    with seeded.harness.sessions() as s:
        return [
            (r.status, r.attempt)
            for r in s.execute(
                select(delivery_log.c.status, delivery_log.c.attempt)
                .where(
                    delivery_log.c.deliveryId == seeded.delivery_id,
                    delivery_log.c.id.between(first, last),
                    delivery_log.c.reason.in_(("", sending.UNKNOWN_REASON)),
                )
                .order_by(delivery_log.c.id)
            )
        ]


def in_flight(seeded: Seeded, taken: db_.Claim, mark: int) -> None:
    """What `Pass._take` does to a batch's rows before the connector gets them."""
    with seeded.harness.sessions() as s, s.begin():
        s.execute(
            update(delivery_log)
            .where(
                delivery_log.c.deliveryId == seeded.delivery_id,
                delivery_log.c.id.between(taken.first_id, taken.last_id),
                delivery_log.c.status == "pending",
                delivery_log.c.reason == "",
            )
            .values(attempt=mark)
        )


def expire(seeded: Seeded, batch_id: int) -> None:
    with seeded.harness.sessions() as s, s.begin():
        s.execute(
            update(DeliveryBatch)
            .where(DeliveryBatch.id == batch_id)
            .values(lease_until=utcnow() - dt.timedelta(seconds=1))
        )


def a_pass(seeded: Seeded, attempt: int, taken: db_.Claim | None = None) -> sending.Pass:
    return sending.Pass(
        sessions=seeded.harness.sessions,
        delivery_id=seeded.delivery_id,
        org_id=0,
        channel="email",
        attempt=attempt,
        connector=SmtpConnector(Settings(smtp_host="127.0.0.1", smtp_port=9)),
        contents={},
        first_id=taken.first_id if taken else 0,
        last_id=taken.last_id if taken else None,
    )


def test_pending_rows_are_cut_into_id_ranges_of_the_batch_size(seeded: Seeded) -> None:
    found = planned(seeded)
    ids = seeded.ids
    assert len(ids) == 25
    assert [(b.seq, b.first_id, b.last_id) for b in found] == [
        (0, ids[0], ids[9]),
        (1, ids[10], ids[19]),
        (2, ids[20], ids[24]),
    ]
    assert {b.state for b in found} == {"pending"}


def test_fewer_than_two_batches_or_too_few_recipients_are_not_cut(seeded: Seeded) -> None:
    assert planned(seeded, size=25) == []
    assert planned(seeded, size=10_000) == []
    assert planned(seeded, size=5, least=26) == []
    assert db_.MIN_RECIPIENTS == 1_000  # the default: 25 recipients are sent by the task
    with seeded.harness.sessions() as s, s.begin():
        assert db_.plan(s, seeded.delivery_id, 5) == 0
    assert len(planned(seeded, size=5, least=25)) == 5


def test_concurrent_claims_take_different_batches(seeded: Seeded) -> None:
    planned(seeded)
    h = seeded.harness
    # Given a claim in progress on the first batch (its row locked, not committed)
    with h.sessions() as other, other.begin():
        other.execute(
            select(DeliveryBatch)
            .where(DeliveryBatch.delivery_id == seeded.delivery_id, DeliveryBatch.seq == 0)
            .with_for_update()
        ).one()
        # When another process claims: it skips the locked row instead of waiting
        taken = db_.claim(h.sessions, seeded.delivery_id, 60)
        assert taken is not None and taken.seq == 1
    claims = [db_.claim(h.sessions, seeded.delivery_id, 60) for _ in range(3)]
    assert [c.seq if c else None for c in claims] == [0, 2, None]
    found = batches(seeded)
    assert {b.state for b in found} == {"running"}
    assert all(b.owner and b.attempt == 1 for b in found)


def test_a_coordinators_later_attempt_leaves_a_live_batchs_rows_alone(seeded: Seeded) -> None:
    planned(seeded)
    h = seeded.harness
    taken = db_.claim(h.sessions, seeded.delivery_id, 60)
    assert taken is not None
    mark = db_.marker(taken.id, taken.attempt)
    in_flight(seeded, taken, mark)
    # When the coordinator runs again (attempt 7) and settles what earlier attempts left
    assert a_pass(seeded, 7).settle_in_flight() == 0
    # Then the batch's rows are still in flight under the batch's marker
    assert set(statuses(seeded, taken.first_id, taken.last_id)) == {("pending", mark)}


def test_a_batch_claimed_again_after_its_lease_settles_the_dead_claims_rows(
    seeded: Seeded,
) -> None:
    planned(seeded)
    h = seeded.harness
    first = db_.claim(h.sessions, seeded.delivery_id, 60)
    second = db_.claim(h.sessions, seeded.delivery_id, 60)
    assert first is not None and second is not None
    in_flight(seeded, first, db_.marker(first.id, first.attempt))
    in_flight(seeded, second, db_.marker(second.id, second.attempt))
    # Given the first claim's process died (its lease ran out), a live claim not yet
    assert db_.claim(h.sessions, seeded.delivery_id, 60) is not None  # the third batch
    assert db_.claim(h.sessions, seeded.delivery_id, 60) is None
    expire(seeded, first.id)
    again = db_.claim(h.sessions, seeded.delivery_id, 60)
    assert again is not None and (again.id, again.attempt) == (first.id, 2)
    # When the new claim settles its slice: the dead claim's rows are unknown (SMTP)
    assert a_pass(seeded, db_.marker(again.id, again.attempt), again).settle_in_flight() == 10
    assert set(statuses(seeded, first.first_id, first.last_id)) == {
        ("unknown", db_.marker(first.id, 1))
    }
    # And the live batch's rows are untouched; the old claim can neither renew nor finish
    second_mark = db_.marker(second.id, second.attempt)
    assert set(statuses(seeded, second.first_id, second.last_id)) == {("pending", second_mark)}
    assert not db_.complete(h.sessions, first, 10, 0)
    guard = db_.Guard(h.sessions, "no-such-task", first, 60)
    assert guard() == "the task no longer exists"


def test_a_released_claim_that_marked_nothing_gives_its_attempt_back(seeded: Seeded) -> None:
    planned(seeded)
    h = seeded.harness
    taken = db_.claim(h.sessions, seeded.delivery_id, 60)
    assert taken is not None
    db_.release(h.sessions, taken)
    found = batches(seeded)[taken.seq]
    assert (found.state, found.attempt, found.lease_until) == ("pending", 0, None)
    # A claim that marked rows keeps its attempt: its marker stays unique
    taken = db_.claim(h.sessions, seeded.delivery_id, 60)
    assert taken is not None and taken.attempt == 1
    in_flight(seeded, taken, db_.marker(taken.id, taken.attempt))
    db_.release(h.sessions, taken)
    assert batches(seeded)[taken.seq].attempt == 1


def test_the_coordinators_look_publishes_reports_failures_and_abandons(seeded: Seeded) -> None:
    found = planned(seeded)
    h = seeded.harness
    seen = db_.tick(h.sessions, seeded.delivery_id, 60, idempotent=False)
    assert (seen.total, seen.done, seen.publish, seen.errors) == (3, 0, 3, ())
    # Published a moment ago and unclaimed: not published again before a lease
    assert db_.tick(h.sessions, seeded.delivery_id, 60, idempotent=False).publish == 0
    # A batch whose connector failed: reported once, then pending for the next attempt
    taken = db_.claim(h.sessions, seeded.delivery_id, 60)
    assert taken is not None
    db_.fail(h.sessions, taken, "SMTP connection refused")
    seen = db_.tick(h.sessions, seeded.delivery_id, 60, idempotent=False)
    assert seen.errors == (f"batch {taken.seq + 1}: SMTP connection refused",)
    assert batches(seeded)[taken.seq].state == "pending"
    # A batch claimed too many times is given up: in flight unknown, the rest failed
    last = found[-1]
    with h.sessions() as s, s.begin():
        s.execute(
            update(DeliveryBatch)
            .where(DeliveryBatch.id == last.id)
            .values(attempt=db_.MAX_BATCH_ATTEMPTS, state="pending")
        )
        s.execute(
            update(delivery_log)
            .where(delivery_log.c.id == last.first_id)
            .values(attempt=db_.marker(last.id, db_.MAX_BATCH_ATTEMPTS))
        )
    seen = db_.tick(h.sessions, seeded.delivery_id, 60, idempotent=False)
    assert seen.done == 1
    with h.sessions() as s:
        rows = s.execute(
            select(delivery_log.c.status, delivery_log.c.reason)
            .where(delivery_log.c.id.between(last.first_id, last.last_id))
            .where(delivery_log.c.reason != "optedOut")
            .order_by(delivery_log.c.id)
        ).all()
    assert rows[0] == ("unknown", sending.UNKNOWN_REASON)
    assert set(rows[1:]) == {("failed", db_.ABANDONED_REASON)}
