"""updateEventsStatus: event statuses follow their delivery logs, forward only, from a pointer."""

from __future__ import annotations

from sqlalchemy import select, update

from tests.conftest import Harness
from tests.technical import run_technical
from worker import catalog
from worker.db import utcnow
from worker.messaging import delivery, delivery_log, event


def _seed(harness: Harness) -> None:
    with harness.sessions() as s, s.begin():
        org_id = catalog.ensure_org(s, "acme").id
        delivery_id = s.execute(
            delivery.insert()
            .values(org_id=org_id, channel="email", name="order", content={})
            .returning(delivery.c.id)
        ).scalar_one()
        for index, log_status in enumerate(["sent", "failed", "ignored", "pending"]):
            log_id = s.execute(
                delivery_log.insert()
                .values(
                    deliveryId=delivery_id,
                    org_id=org_id,
                    eventId=index + 1,
                    status=log_status,
                    messageId=f"m{index}",
                )
                .returning(delivery_log.c.id)
            ).scalar_one()
            s.execute(
                event.insert().values(
                    id=index + 1,
                    org_id=org_id,
                    pkey=f"@e{index}",
                    eventType="order",
                    status="processing",
                    deliveryLogId=log_id,
                )
            )


def _statuses(harness: Harness) -> list[str]:
    with harness.sessions() as s:
        return list(s.scalars(select(event.c.status).order_by(event.c.id)))


def _run(harness: Harness) -> None:
    assert run_technical(harness, "updateEventsStatus") == "finished"


def test_event_statuses_follow_their_logs_and_a_bounce_turns_processed_into_failed(
    harness: Harness,
) -> None:
    _seed(harness)
    _run(harness)
    assert _statuses(harness) == ["processed", "deliveryFailed", "ignored", "processing"]
    with harness.sessions() as s, s.begin():
        s.execute(
            update(delivery_log)
            .where(delivery_log.c.messageId.in_(["m0", "m3"]))
            .values(status="bounced", lastModified=utcnow())
        )
    _run(harness)
    assert _statuses(harness) == ["deliveryFailed", "deliveryFailed", "ignored", "deliveryFailed"]
    with harness.sessions() as s, s.begin():
        # A log going back to `sent` never moves a final event back.
        s.execute(update(delivery_log).values(status="sent", lastModified=utcnow()))
    _run(harness)
    assert _statuses(harness) == ["deliveryFailed", "deliveryFailed", "ignored", "deliveryFailed"]
