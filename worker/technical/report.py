"""reportSendingNow: render the delivery report to PDF and email it to its recipients.

On demand (an admin runs it): the reporting aggregates of the last `days` are recomputed,
drawn as a table in a PDF (fpdf2), and sent as an attachment through the email connector to
`recipients` (option; default CARILLON_REPORT_EMAIL).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from fpdf import FPDF
from fpdf.enums import XPos, YPos
from sqlalchemy import select
from sqlalchemy.orm import Session

from worker.activities.base import ActivityType, Context, Option, Outcome
from worker.channels.connectors import Attachment, Message, connector_for
from worker.errors import ActivityError
from worker.models import Organization
from worker.registry import register
from worker.technical import reporting
from worker.technical.billing import EMAIL_RE
from worker.technical.tables import reporting_aggregate

COLUMNS = ("day", "org", "channel", "deliveries", "sent", "failed", "bounced", "opens", "clicks")
WIDTHS = (24, 40, 20, 22, 20, 18, 20, 18, 18)
#: Rows drawn at most: a report is for people, not an export.
MAX_ROWS = 5_000


def _check_recipients(value: Any) -> str | None:
    if not 1 <= len(value) <= 20:
        return "must list 1 to 20 email addresses"
    if not all(isinstance(v, str) and EMAIL_RE.match(v) for v in value):
        return "must hold email addresses"
    return None


def _check_days(value: Any) -> str | None:
    return None if 1 <= value <= 93 else "must be between 1 and 93"


def rows(s: Session, since: dt.date) -> list[dict[str, Any]]:
    found = s.execute(
        select(reporting_aggregate, Organization.name.label("org"))
        .join(Organization, Organization.id == reporting_aggregate.c.org_id)
        .where(reporting_aggregate.c.day >= since)
        .order_by(reporting_aggregate.c.day, Organization.name, reporting_aggregate.c.channel)
        .limit(MAX_ROWS)
    ).mappings()
    return [dict(row) for row in found]


def render_pdf(title: str, table: list[dict[str, Any]]) -> bytes:
    pdf = FPDF(orientation="landscape")
    pdf.set_title(title)
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 14)
    pdf.cell(0, 10, title, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_font("Helvetica", "B", 9)
    for name, width in zip(COLUMNS, WIDTHS, strict=True):
        pdf.cell(width, 7, name, border=1)
    pdf.ln()
    pdf.set_font("Helvetica", "", 9)
    for row in table:
        for name, width in zip(COLUMNS, WIDTHS, strict=True):
            value = row[name]
            pdf.cell(width, 6, value.isoformat() if name == "day" else str(value), border=1)
        pdf.ln()
    if not table:
        pdf.cell(0, 8, "No delivery in this period.")
    return bytes(pdf.output())


@register
class ReportSendingNow(ActivityType):
    """Renders the delivery report to PDF and emails it to its recipients."""

    name = "reportSendingNow"
    family = "channel"
    options = {
        "recipients": Option((list,), check=_check_recipients),
        "days": Option((int,), check=_check_days),
    }

    def run(self, ctx: Context) -> Outcome:
        days = ctx.activity.options.get("days", 7)
        reporting.aggregate(ctx.session, ctx.now, days)
        since = (ctx.now.astimezone(dt.UTC) - dt.timedelta(days=days - 1)).date()
        table = rows(ctx.session, since)
        title = f"Carillon delivery report, {since.isoformat()} to {ctx.now.date().isoformat()}"
        document = render_pdf(title, table)
        recipients = ctx.activity.options.get("recipients") or [ctx.settings.report_email]
        attachment = Attachment(
            f"report-{ctx.now.date().isoformat()}.pdf", "application/pdf", document
        )
        messages = [
            Message(
                message_id=f"report-{ctx.task_id}-{index}",
                address=address,
                subject=title,
                text=f"{title}: {len(table):,} line(s), in the attached PDF.\n",
                sender=ctx.settings.smtp_sender,
                attachments=(attachment,),
            )
            for index, address in enumerate(recipients)
        ]
        connector = connector_for("email", ctx.settings)
        try:
            results = connector.send(messages)
        finally:
            connector.close()
        refused = [r.reason for r in results if not r.ok]
        if refused:
            raise ActivityError(
                f"the report was refused for {len(refused)} recipient(s): {refused[0]}"
            )
        ctx.log(
            f"report ({len(table):,} line(s), {len(document):,} bytes PDF) sent to "
            f"{len(recipients)} recipient(s)"
        )
        return Outcome(counts={ctx.activity.name: len(recipients)})
