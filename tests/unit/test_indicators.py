"""Delivery indicators and reporting aggregates: incremental, each log counted exactly once."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import select, update

from tests.conftest import Harness
from tests.technical import run_technical
from worker import catalog
from worker.db import utcnow
from worker.messaging import delivery, delivery_log, tracking_log
from worker.technical import indicators, reporting
from worker.technical.tables import reporting_aggregate, technical_pointer

SETTLED = utcnow() - dt.timedelta(minutes=5)


class Crash(Exception):
    """Stands for a worker dying between reading the logs and writing the pointer."""


def _seed(harness: Harness) -> tuple[int, int, int]:
    with harness.sessions() as s, s.begin():
        org_id = catalog.ensure_org(s, "acme").id
        ids = []
        for channel in ("email", "sms"):
            ids.append(
                s.execute(
                    delivery.insert()
                    .values(org_id=org_id, channel=channel, name=f"{channel}1", content={})
                    .returning(delivery.c.id)
                ).scalar_one()
            )
        statuses = ["sent", "sent", "sent", "sent", "failed", "ignored", "bounced"]
        for profile_id, status in enumerate(statuses, start=1):
            s.execute(
                delivery_log.insert().values(
                    deliveryId=ids[0],
                    org_id=org_id,
                    profileId=profile_id,
                    status=status,
                    messageId=f"m{profile_id}",
                    created=SETTLED,
                )
            )
    return org_id, ids[0], ids[1]


def _hits(harness: Harness, org_id: int, delivery_id: int, *hits: tuple[str, int]) -> None:
    with harness.sessions() as s, s.begin():
        for kind, profile_id in hits:
            s.execute(
                tracking_log.insert().values(
                    org_id=org_id,
                    deliveryId=delivery_id,
                    profileId=profile_id,
                    kind=kind,
                    created=SETTLED,
                )
            )


def _indicators(harness: Harness, delivery_id: int) -> dict[str, Any]:
    with harness.sessions() as s:
        return dict(
            s.execute(
                select(delivery.c.indicators).where(delivery.c.id == delivery_id)
            ).scalar_one()
        )


def _run(harness: Harness, name: str) -> None:
    assert run_technical(harness, name) == "finished"


def test_tracking_indicators_add_each_log_once_across_runs(harness: Harness) -> None:
    org_id, email_id, _ = _seed(harness)
    _hits(harness, org_id, email_id, ("open", 1), ("open", 1), ("open", 2), ("click", 1))
    _run(harness, "updateDeliveryExecInfo")
    first = _indicators(harness, email_id)
    assert (first["opens"], first["uniqueOpens"], first["clicks"], first["uniqueClicks"]) == (
        3,
        2,
        1,
        1,
    )
    _hits(harness, org_id, email_id, ("open", 1), ("open", 3))
    with harness.sessions() as s, s.begin():
        # Not settled yet: a transaction may still commit a smaller id; left for next time.
        s.execute(
            tracking_log.insert().values(
                org_id=org_id, deliveryId=email_id, profileId=4, kind="open", created=utcnow()
            )
        )
    _run(harness, "updateDeliveryExecInfo")
    second = _indicators(harness, email_id)
    assert (second["opens"], second["uniqueOpens"]) == (5, 3)
    _run(harness, "updateDeliveryExecInfo")
    assert _indicators(harness, email_id)["opens"] == 5


def test_a_crash_between_reading_and_writing_the_pointer_replays_once(harness: Harness) -> None:
    org_id, email_id, _ = _seed(harness)
    _hits(harness, org_id, email_id, ("open", 1), ("click", 2))
    with pytest.raises(Crash), harness.sessions() as s, s.begin():
        assert indicators.add_tracking(s, utcnow()) == 2
        raise Crash
    assert _indicators(harness, email_id) == {}
    assert harness.query(select(technical_pointer.c.position)) == []
    _run(harness, "updateDeliveryExecInfo")
    after = _indicators(harness, email_id)
    assert (after["opens"], after["clicks"]) == (1, 1)


def test_delivery_kpis_are_recounted_for_deliveries_whose_logs_changed(harness: Harness) -> None:
    org_id, email_id, sms_id = _seed(harness)
    _hits(harness, org_id, email_id, ("open", 1), ("open", 2))
    _run(harness, "updateDeliveryExecInfo")
    _run(harness, "updateDeliveryIndicators")
    kpis = _indicators(harness, email_id)
    assert {k: kpis[k] for k in ("sent", "failed", "ignored", "bounced", "processed")} == {
        "sent": 4,
        "failed": 1,
        "ignored": 1,
        "bounced": 1,
        "processed": 7,
    }
    assert kpis["openRate"] == 0.5 and kpis["bounceRate"] == 0.25
    assert _indicators(harness, sms_id) == {}
    with harness.sessions() as s, s.begin():
        s.execute(
            update(delivery_log)
            .where(delivery_log.c.messageId == "m1")
            .values(status="bounced", lastModified=utcnow())
        )
    _run(harness, "updateDeliveryIndicators")
    kpis = _indicators(harness, email_id)
    assert (kpis["sent"], kpis["bounced"], kpis["opens"]) == (3, 2, 2)


def test_reporting_aggregates_are_per_day_and_channel_and_idempotent(harness: Harness) -> None:
    org_id, email_id, _ = _seed(harness)
    _hits(harness, org_id, email_id, ("open", 1), ("click", 1))
    _run(harness, "reportingAggregates")
    with harness.sessions() as s, s.begin():
        assert reporting.aggregate(s, utcnow()) == 1  # a rerun recomputes, never adds
    rows = harness.query(
        select(
            reporting_aggregate.c.day,
            reporting_aggregate.c.channel,
            reporting_aggregate.c.deliveries,
            reporting_aggregate.c.sent,
            reporting_aggregate.c.failed,
            reporting_aggregate.c.bounced,
            reporting_aggregate.c.opens,
            reporting_aggregate.c.clicks,
        )
    )
    assert rows == [(SETTLED.date(), "email", 1, 4, 1, 1, 1, 1)]
