"""billing: the daily activity report (deliveries, messages, profiles) emailed to the billing user.

The report covers the UTC day before its fire's slot (the day before now for a run no fire
started), per organization: deliveries created, messages sent,
failed and ignored, transactional events received, and profiles at the time of the run. It
goes to `billingEmail` (option; default CARILLON_BILLING_EMAIL) through the email connector,
with a Message-ID derived from the day, so a rerun for the same day is recognisable. A fire
sent late (beat was down; on restart it sends the latest missed slot) thus reports the day
its slot follows, not the day before the late run, which the next slot reports.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from worker.activities.base import ActivityType, Context, Option, Outcome
from worker.channels.connectors import Message, connector_for
from worker.errors import ActivityError
from worker.marketing import profile
from worker.messaging import delivery, delivery_log, event
from worker.models import Organization, Workflow
from worker.registry import register
from worker.technical.install import SYSTEM_ORG
from worker.technical.tables import technical_fire

EMAIL_RE = re.compile(r"^[^@\s<>,;]{1,64}@[^@\s<>,;]{1,255}\Z")


def _check_email(value: Any) -> str | None:
    return None if EMAIL_RE.match(value) else "must be one email address"


def report(s: Session, day: dt.date) -> list[dict[str, Any]]:
    """Per organization figures of `day` (UTC), profiles as of now."""
    start = dt.datetime.combine(day, dt.time(), dt.UTC)
    end = start + dt.timedelta(days=1)
    orgs = dict(s.execute(select(Organization.id, Organization.name)).all())
    figures: dict[int, dict[str, Any]] = {
        org_id: {
            "org": name,
            "deliveries": 0,
            "sent": 0,
            "failed": 0,
            "ignored": 0,
            "events": 0,
            "profiles": 0,
        }
        for org_id, name in orgs.items()
    }
    for org_id, count in s.execute(
        select(delivery.c.org_id, func.count())
        .where(delivery.c.created >= start, delivery.c.created < end)
        .group_by(delivery.c.org_id)
    ):
        figures[org_id]["deliveries"] = count
    for org_id, status, count in s.execute(
        select(delivery_log.c.org_id, delivery_log.c.status, func.count())
        .where(delivery_log.c.created >= start, delivery_log.c.created < end)
        .group_by(delivery_log.c.org_id, delivery_log.c.status)
    ):
        if status in ("sent", "failed", "ignored"):
            figures[org_id][status] = count
    for org_id, count in s.execute(
        select(event.c.org_id, func.count())
        .where(event.c.created >= start, event.c.created < end)
        .group_by(event.c.org_id)
    ):
        figures[org_id]["events"] = count
    for org_id, count in s.execute(
        select(profile.c.org_id, func.count()).group_by(profile.c.org_id)
    ):
        figures[org_id]["profiles"] = count
    return sorted(figures.values(), key=lambda item: item["org"])


def report_day(ctx: Context) -> dt.date:
    """The day before this run's fire slot; the day before now for any other run."""
    s = ctx.session
    workflow = s.get(Workflow, ctx.workflow_id)
    system = s.scalar(select(Organization.id).where(Organization.name == SYSTEM_ORG))
    slot = None
    if workflow is not None and workflow.org_id == system:
        # The fire that started this run is the latest started one: while a run goes on,
        # every later fire of its workflow is skipped (fire._decide).
        slot = s.scalar(
            select(technical_fire.c.slot)
            .where(technical_fire.c.name == workflow.name, technical_fire.c.outcome == "started")
            .order_by(technical_fire.c.slot.desc())
            .limit(1)
        )
    start = slot if slot is not None else ctx.now.astimezone(dt.UTC)
    return start.date() - dt.timedelta(days=1)


def as_text(day: dt.date, rows: list[dict[str, Any]]) -> str:
    columns = ("org", "deliveries", "sent", "failed", "ignored", "events", "profiles")
    lines = [f"Carillon activity report for {day.isoformat()} (UTC)", "", "\t".join(columns)]
    lines += ["\t".join(str(row[c]) for c in columns) for row in rows]
    return "\n".join(lines) + "\n"


@register
class Billing(ActivityType):
    """Emails yesterday's activity report to the billing user."""

    name = "billing"
    family = "channel"
    options = {"billingEmail": Option((str,), check=_check_email)}

    def run(self, ctx: Context) -> Outcome:
        day = report_day(ctx)
        rows = report(ctx.session, day)
        to = ctx.activity.options.get("billingEmail") or ctx.settings.billing_email
        message = Message(
            message_id=f"billing-{day.isoformat()}",
            address=to,
            subject=f"Carillon activity report {day.isoformat()}",
            text=as_text(day, rows),
            sender=ctx.settings.smtp_sender,
        )
        connector = connector_for("email", ctx.settings)
        try:
            [result] = connector.send([message])
        finally:
            connector.close()
        if not result.ok:
            raise ActivityError(f"the billing report to {to} was refused: {result.reason}")
        ctx.log(f"activity report of {day.isoformat()} ({len(rows)} organization(s)) sent to {to}")
        return Outcome(counts={ctx.activity.name: len(rows)})
