"""The cleanup technical workflow purges past retention and never touches live jobs."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import func, inspect, select, text, update

from tests.conftest import Harness
from worker import catalog
from worker.db import utcnow
from worker.marketing import working_table
from worker.messaging import delivery, delivery_log, event, tracking_log
from worker.models import Job, LogLine, Task, Workflow
from worker.technical import fire
from worker.technical.tables import event_history

NOW = utcnow()


def _flow(name: str, *, wait: bool = False, history_days: int | None = None) -> dict[str, Any]:
    middle = (
        {"name": "wait1", "type": "wait", "duration": "3d", "transitions": {"done": "end1"}}
        if wait
        else {"name": "end1", "type": "end"}
    )
    activities = [
        {"name": "start1", "type": "start", "transitions": {"done": middle["name"]}},
        middle,
    ]
    if wait:
        activities.append({"name": "end1", "type": "end"})
    body: dict[str, Any] = {"id": name, "activities": activities}
    if history_days is not None:
        body["historyDays"] = history_days
    return body


def _age_jobs(harness: Harness, workflow: str, days: float) -> None:
    when = NOW - dt.timedelta(days=days)
    with harness.sessions() as s, s.begin():
        workflow_id = s.scalars(select(Workflow.id).where(Workflow.name == workflow)).one()
        s.execute(update(Job).where(Job.workflow_id == workflow_id).values(created_at=when))
        s.execute(update(LogLine).where(LogLine.workflow_id == workflow_id).values(created_at=when))


def _count(harness: Harness, model: Any, *where: Any) -> int:
    with harness.sessions() as s:
        return int(s.execute(select(func.count()).select_from(model).where(*where)).scalar_one())


def _workflow_id(harness: Harness, name: str) -> int:
    with harness.sessions() as s:
        return int(s.scalars(select(Workflow.id).where(Workflow.name == name)).one())


def _seed_messaging(harness: Harness) -> None:
    old, recent = NOW - dt.timedelta(days=200), NOW - dt.timedelta(days=2)
    with harness.sessions() as s, s.begin():
        org_id = catalog.ensure_org(s, "acme").id
        delivery_id = s.execute(
            delivery.insert()
            .values(org_id=org_id, channel="email", name="email1", content={})
            .returning(delivery.c.id)
        ).scalar_one()
        for profile_id, (status, created) in enumerate(
            [("sent", old), ("pending", old), ("sent", recent)], start=1
        ):
            s.execute(
                delivery_log.insert().values(
                    deliveryId=delivery_id,
                    org_id=org_id,
                    profileId=profile_id,
                    status=status,
                    messageId=f"m{profile_id}",
                    created=created,
                )
            )
        for created in (old, recent):
            s.execute(
                tracking_log.insert().values(
                    org_id=org_id, deliveryId=delivery_id, kind="open", created=created
                )
            )
        for pkey, (status, created) in enumerate(
            [("processed", old), ("pending", old), ("processed", recent)]
        ):
            s.execute(
                event.insert().values(
                    org_id=org_id,
                    pkey=f"@e{pkey}",
                    eventType="order",
                    status=status,
                    created=created,
                )
            )


def _seed_history(harness: Harness) -> None:
    with harness.sessions() as s, s.begin():
        org_id = catalog.ensure_org(s, "acme").id
        for pkey, days in (("@old", 200), ("@recent", 20)):
            when = NOW - dt.timedelta(days=days)
            s.execute(
                event_history.insert().values(
                    org_id=org_id,
                    pkey=pkey,
                    eventType="order",
                    status="processed",
                    created=when,
                    lastModified=when,
                    archived=when,
                )
            )


def _working_table(harness: Harness, name: str, job_id: str, days: float) -> None:
    with harness.sessions() as s, s.begin():
        org_id = catalog.ensure_org(s, "acme").id
        s.execute(text(f"CREATE TABLE {name} (id INTEGER)"))
        s.execute(
            working_table.insert().values(
                name=name,
                org_id=org_id,
                workflow_id=0,
                job_id=job_id,
                task_id="t",
                resource="profile",
                created=NOW - dt.timedelta(days=days),
            )
        )


def _run_cleanup(harness: Harness) -> None:
    result = fire.fire(harness.engine, "cleanup", NOW, manual=True)
    assert result.status == "started"
    harness.stub.drain()
    with harness.sessions() as s:
        assert s.scalars(select(Workflow.state).where(Workflow.name == "cleanup")).one() == (
            "finished"
        )


def test_cleanup_purges_past_retention_and_keeps_live_and_recent_rows(harness: Harness) -> None:
    harness.start(_flow("oldDone"))
    harness.start(_flow("oldWaiting", wait=True))
    harness.start(_flow("shortHistory", history_days=5))
    harness.start(_flow("recentDone"))
    harness.stub.drain()
    _age_jobs(harness, "oldDone", 40)
    _age_jobs(harness, "oldWaiting", 40)
    _age_jobs(harness, "shortHistory", 6)
    _age_jobs(harness, "recentDone", 10)
    _seed_messaging(harness)
    _seed_history(harness)
    with harness.sessions() as s:
        waiting_job = s.scalars(select(Task.job_id).where(Task.state == "waiting")).one()
    _working_table(harness, "wk_old_done", "finished-job", 8)
    _working_table(harness, "wk_old_live", waiting_job, 8)
    _working_table(harness, "wk_recent", "finished-job", 1)

    _run_cleanup(harness)

    for name, kept in [
        ("oldDone", False),
        ("oldWaiting", True),
        ("shortHistory", False),
        ("recentDone", True),
    ]:
        workflow_id = _workflow_id(harness, name)
        assert (_count(harness, Job, Job.workflow_id == workflow_id) > 0) is kept, name
        assert (_count(harness, Task, Task.workflow_id == workflow_id) > 0) is kept, name
        assert (_count(harness, LogLine, LogLine.workflow_id == workflow_id) > 0) is kept, name
    assert _count(harness, Task, Task.state == "waiting") == 1
    assert sorted(harness.query(select(delivery_log.c.messageId))) == [("m2",), ("m3",)]
    assert _count(harness, tracking_log) == 1
    assert sorted(harness.query(select(event.c.pkey))) == [("@e1",), ("@e2",)]
    assert harness.query(select(event_history.c.pkey)) == [("@recent",)]
    assert sorted(harness.query(select(working_table.c.name))) == [
        ("wk_old_live",),
        ("wk_recent",),
    ]
    with harness.sessions() as s:
        tables = set(inspect(s.connection()).get_table_names())
        logs = s.scalars(select(LogLine.message).where(LogLine.activity == "databaseCleanup1"))
        messages = list(logs)
    assert "wk_old_done" not in tables and {"wk_old_live", "wk_recent"} <= tables
    assert any("row(s) purged" in message for message in messages), messages
    assert any("statistics refreshed" in message for message in messages), messages


def test_cleanup_keeps_its_own_run_and_a_second_run_purges_nothing_more(
    harness: Harness,
) -> None:
    harness.start(_flow("oldDone"))
    harness.stub.drain()
    _age_jobs(harness, "oldDone", 40)
    _run_cleanup(harness)
    cleanup_id = _workflow_id(harness, "cleanup")
    assert _count(harness, Job, Job.workflow_id == cleanup_id) == 1
    later = fire.fire(harness.engine, "cleanup", NOW + dt.timedelta(seconds=1), manual=True)
    assert later.status == "started"
    harness.stub.drain()
    with harness.sessions() as s:
        counts = s.scalars(
            select(Task.counts).where(Task.activity == "databaseCleanup1").order_by(Task.created_at)
        ).all()
    purged = [c["databaseCleanup1"] for c in counts]
    assert len(purged) == 2 and purged[0] > 0 and purged[1] == 0, purged
    assert _count(harness, Job, Job.workflow_id == cleanup_id) == 2
