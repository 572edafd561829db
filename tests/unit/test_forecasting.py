"""forecasting: the deliveries that started scheduled workflows will send within the horizon."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select, update

from tests.conftest import Harness
from worker.db import utcnow
from worker.models import Task, Workflow
from worker.technical import fire, forecasting
from worker.technical.tables import forecast_log

SCHEDULED = {
    "id": "weekly",
    "activities": [
        {
            "name": "scheduler1",
            "type": "scheduler",
            "frequency": "daily",
            "times": ["09:00", "18:00"],
            "transitions": {"done": "query1"},
        },
        {
            "name": "query1",
            "type": "query",
            "resource": "profile",
            "filter": {"field": "country", "op": "eq", "value": "FR"},
            "transitions": {"result": "email1", "complement": "sms1"},
        },
        {
            "name": "email1",
            "type": "email",
            "subject": "Hello",
            "text": "Hi {{ profile.firstName }}",
            "transitions": {"done": "end1"},
        },
        {"name": "sms1", "type": "sms", "text": "Hi", "transitions": {"done": "end2"}},
        {"name": "end1", "type": "end"},
        {"name": "end2", "type": "end"},
    ],
}


def test_forecasts_list_each_delivery_at_each_fire_within_the_horizon(harness: Harness) -> None:
    harness.start(SCHEDULED)
    harness.stub.drain()
    # The email's last run sent to 42 recipients: that is the estimate.
    with harness.sessions() as s, s.begin():
        workflow_id = s.scalars(select(Workflow.id).where(Workflow.name == "weekly")).one()
        due = s.scalars(select(Task.due_at).where(Task.activity == "scheduler1")).one()
        s.add(
            Task(
                workflow_id=workflow_id,
                job_id=s.scalars(select(Task.job_id).where(Task.activity == "scheduler1")).one(),
                activity="email1",
                activity_type="email",
                version=1,
                state="done",
                counts={"email1": 42},
                finished_at=utcnow(),
            )
        )
    result = fire.fire(harness.engine, "forecasting", utcnow(), manual=True)
    harness.stub.drain()
    with harness.sessions() as s:
        state = s.scalars(select(Workflow.state).where(Workflow.id == result.workflow_id)).one()
        rows = s.execute(
            select(
                forecast_log.c.activity,
                forecast_log.c.channel,
                forecast_log.c.plannedAt,
                forecast_log.c.estimated,
            ).order_by(forecast_log.c.plannedAt, forecast_log.c.activity)
        ).all()
    assert state == "finished"
    # Two fires a day over 7 days, for each of the two deliveries.
    assert len(rows) == 28
    assert rows[0].plannedAt == due
    assert {(r.activity, r.channel, r.estimated) for r in rows} == {
        ("email1", "email", 42),
        ("sms1", "sms", None),
    }
    assert all(r.plannedAt <= utcnow() + dt.timedelta(days=7) for r in rows)


def test_paused_or_unscheduled_workflows_have_no_forecast(harness: Harness) -> None:
    harness.start(SCHEDULED)
    harness.stub.drain()
    with harness.sessions() as s, s.begin():
        s.execute(update(Workflow).where(Workflow.name == "weekly").values(state="paused"))
        assert forecasting.forecast(s, utcnow()) == 0
        s.execute(update(Workflow).where(Workflow.name == "weekly").values(state="started"))
        assert forecasting.forecast(s, utcnow(), horizon_days=1) == 2 * 2
