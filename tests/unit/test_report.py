"""reportSendingNow: the delivery report as a PDF attachment, at a real SMTP server."""

from __future__ import annotations

import dataclasses
import datetime as dt

from sqlalchemy import select

from tests.conftest import Harness
from tests.smtp_server import SmtpServer
from tests.unit.test_indicators import _hits, _seed
from worker.models import Workflow
from worker.technical import admin, report


def test_the_report_is_rendered_to_pdf_and_emailed(harness: Harness) -> None:
    org_id, email_id, _ = _seed(harness)
    _hits(harness, org_id, email_id, ("open", 1))
    with SmtpServer() as smtp:
        harness.settings = dataclasses.replace(
            harness.settings,
            smtp_host="127.0.0.1",
            smtp_port=smtp.port,
            report_email="boss@example.org",
        )
        harness.engine.settings = harness.settings
        result = admin.run_now(harness.engine, "reportSendingNow")
        harness.stub.drain()
        messages = list(smtp.messages)
    with harness.sessions() as s:
        state = s.scalars(select(Workflow.state).where(Workflow.id == result.workflow_id)).one()
    assert state == "finished"
    [received] = messages
    assert received.recipients == ("boss@example.org",)
    [pdf] = [part for part in received.message.iter_attachments()]
    data = pdf.get_content()
    assert pdf.get_content_type() == "application/pdf" and data.startswith(b"%PDF-")
    assert "line(s)" in received.body()


def test_the_pdf_holds_every_row() -> None:
    row = {
        "day": dt.date(2026, 11, 23),
        "org": "acme",
        "channel": "email",
        "deliveries": 1,
        "sent": 4,
        "failed": 1,
        "bounced": 1,
        "opens": 2,
        "clicks": 0,
    }
    small = report.render_pdf("t", [row])
    large = report.render_pdf("t", [row] * 200)
    assert small.startswith(b"%PDF-") and len(large) > len(small)
