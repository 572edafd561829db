"""The transactional event pipeline on SQLite: routing, statuses, sends, bounces, repairs.

Emails go to a real SMTP server on loopback (aiosmtpd). SmtpSink below is a minimal one kept
here until tests/smtp_server.py (the deliveries' server) can be shared; merge them then.
"""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import socket
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import insert, select, update

from tests.conftest import Harness
from worker import catalog, events, feedback, templates_store
from worker.channels import tracking
from worker.config import Settings
from worker.db import utcnow
from worker.event_statuses import SyncPointer, sync_statuses
from worker.marketing import profile
from worker.messaging import delivery_log, event
from worker.technical import archive

#: Recipients the sink refuses with a permanent error.
REFUSED = "refused@example.com"


class SmtpSink:
    """aiosmtpd handler keeping every accepted message; refuses REFUSED."""

    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, *_: Any):
        if address == REFUSED:
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.messages.append(parsed)  # type: ignore[arg-type]
        return "250 Message accepted"


@pytest.fixture
def smtp() -> Iterator[tuple[SmtpSink, int]]:
    sink = SmtpSink()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield sink, port
    finally:
        controller.stop()


def smtp_settings(settings: Settings, port: int) -> Settings:
    """The settings with the SMTP connector pointed at the sink (H1's setting names)."""
    return replace(settings, smtp_host="127.0.0.1", smtp_port=port)


ORDER = {
    "name": "orderConfirmation",
    "eventType": "orderPlaced",
    "channel": "email",
    "content": {
        "subject": "Order {{ ctx.orderId }}",
        "html": '<p>Hi {{ ctx.firstName }}</p><a href="https://shop.example.com/o">order</a>',
        "text": "Hi {{ ctx.firstName }}",
    },
    "expiryHours": 2,
}


def org_id(harness: Harness, name: str = "acme") -> int:
    with harness.sessions() as s, s.begin():
        return catalog.ensure_org(s, name).id


def template(harness: Harness, body: dict[str, Any] = ORDER, org: str = "acme") -> Any:
    with harness.sessions() as s, s.begin():
        return templates_store.create(s, org_id(harness, org), body)


#: What the ORDER template reads; events posted without a ctx get it. Templates are strict:
#: a field the event lacks fails its delivery (the "fails_on_this_events_data" test).
ORDER_CTX = {"firstName": "Ada", "orderId": 7}


def post(harness: Harness, body: dict[str, Any], event_type: str = "orderPlaced") -> int:
    values = events.validate(event_type, {"ctx": ORDER_CTX, **body})
    with harness.sessions() as s, s.begin():
        return int(events.store(s, org_id(harness), values)["id"])


def status(harness: Harness, event_id: int) -> tuple[str, str]:
    with harness.sessions() as s:
        row = s.execute(select(event.c.status, event.c.reason).where(event.c.id == event_id)).one()
    return row.status, row.reason


def logs(harness: Harness) -> list[Any]:
    with harness.sessions() as s:
        return list(s.execute(select(delivery_log).order_by(delivery_log.c.id)).mappings())


# ---------------------------------------------------------------------------------- routing


def test_an_event_is_routed_rendered_sent_and_processed(
    harness: Harness, smtp: tuple[SmtpSink, int]
) -> None:
    sink, port = smtp
    settings = smtp_settings(harness.settings, port)
    template(harness)
    event_id = post(
        harness, {"email": "ada@example.com", "ctx": {"firstName": "Ada", "orderId": 7}}
    )

    outcome = events.process(harness.sessions, settings)

    assert dict(outcome.statuses) == {"processed": 1}
    assert status(harness, event_id) == ("processed", "")
    [message] = sink.messages
    assert message["To"] == "ada@example.com" and message["Subject"] == "Order 7"
    html = message.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert "Hi Ada" in html
    [row] = logs(harness)
    assert row["status"] == "sent" and row["eventId"] == event_id
    # The link and the pixel of the sent HTML are signed for this delivery log.
    assert tracking.open_url(settings, row["id"]) in html
    assert tracking.click_url(settings, row["id"], "https://shop.example.com/o") in html


def test_processing_twice_never_sends_twice(harness: Harness, smtp: tuple[SmtpSink, int]) -> None:
    sink, port = smtp
    settings = smtp_settings(harness.settings, port)
    template(harness)
    event_id = post(harness, {"email": "ada@example.com"})

    events.process(harness.sessions, settings, [event_id])
    again = events.process(harness.sessions, settings, [event_id])

    assert again.claimed == 0 and len(sink.messages) == 1 and len(logs(harness)) == 1


def test_no_published_template_is_routing_failed_and_never_retried(
    harness: Harness, smtp: tuple[SmtpSink, int]
) -> None:
    _, port = smtp
    settings = smtp_settings(harness.settings, port)
    template(harness, {**ORDER, "published": False})
    template(harness, {**ORDER, "name": "sms", "channel": "sms", "content": {"text": "x"}})
    unknown_type = post(harness, {"email": "a@example.com"}, "neverConfigured")
    unpublished = post(harness, {"email": "b@example.com"})

    events.process(harness.sessions, settings)

    assert status(harness, unknown_type)[0] == "routingFailed"
    assert "no published email message template" in status(harness, unknown_type)[1]
    assert status(harness, unpublished)[0] == "routingFailed"
    assert events.process(harness.sessions, settings).claimed == 0
    assert logs(harness) == []


def test_the_address_present_chooses_the_channel_email_first(harness: Harness) -> None:
    template(harness, {**ORDER, "name": "sms", "channel": "sms", "content": {"text": "Hi"}})
    by_phone = post(harness, {"mobilePhone": "+33612345678"})
    both = post(harness, {"email": "a@example.com", "mobilePhone": "+33612345678"})

    events.process(harness.sessions, harness.settings)

    assert status(harness, by_phone)[0] == "processed"
    assert status(harness, both)[0] == "routingFailed"  # email wins; no email template


def test_an_event_older_than_the_templates_expiry_is_too_old(harness: Harness) -> None:
    template(harness)
    event_id = post(harness, {"email": "late@example.com"})
    with harness.sessions() as s, s.begin():
        s.execute(
            update(event)
            .where(event.c.id == event_id)
            .values(created=utcnow() - dt.timedelta(hours=3))
        )

    events.process(harness.sessions, harness.settings)

    assert status(harness, event_id) == ("tooOld", "older than 2 h")
    assert logs(harness) == []


def test_a_quarantined_address_is_ignored_and_not_sent(
    harness: Harness, smtp: tuple[SmtpSink, int]
) -> None:
    sink, port = smtp
    template(harness)
    acme, globex = org_id(harness), org_id(harness, "globex")
    with harness.sessions() as s, s.begin():
        s.execute(insert(profile).values(org_id=acme, email="q@example.com", emailBlacklisted=True))
        # Another organization's quarantine says nothing about ours.
        s.execute(insert(profile).values(org_id=globex, email="ok@example.com", blacklisted=True))
    quarantined = post(harness, {"email": "q@example.com"})
    fine = post(harness, {"email": "ok@example.com"})

    events.process(harness.sessions, smtp_settings(harness.settings, port))

    assert status(harness, quarantined)[0] == "ignored"
    assert status(harness, fine)[0] == "processed"
    assert [m["To"] for m in sink.messages] == ["ok@example.com"]
    assert [row["status"] for row in logs(harness)] == ["ignored", "sent"]


def test_a_refused_recipient_is_delivery_failed(
    harness: Harness, smtp: tuple[SmtpSink, int]
) -> None:
    _, port = smtp
    template(harness)
    event_id = post(harness, {"email": REFUSED})

    events.process(harness.sessions, smtp_settings(harness.settings, port))

    assert status(harness, event_id)[0] == "deliveryFailed"
    assert logs(harness)[0]["status"] == "failed"


def test_a_template_that_fails_on_this_events_data_is_delivery_failed(harness: Harness) -> None:
    template(
        harness,
        {**ORDER, "name": "div", "content": {"subject": "x", "text": "{{ 1 // ctx.zero }}"}},
    )
    event_id = post(harness, {"email": "a@example.com", "ctx": {"zero": 0}})

    events.process(harness.sessions, harness.settings)

    found, reason = status(harness, event_id)
    assert found == "deliveryFailed" and reason.startswith("template error")


# ---------------------------------------------------------------------------------- bounces


def test_a_bounce_turns_a_processed_event_into_delivery_failed(
    harness: Harness, smtp: tuple[SmtpSink, int]
) -> None:
    _, port = smtp
    template(harness)
    event_id = post(harness, {"email": "ada@example.com"})
    events.process(harness.sessions, smtp_settings(harness.settings, port))
    message_id = logs(harness)[0]["messageId"]

    with harness.sessions() as s, s.begin():
        report = feedback.record_bounces(
            s, org_id(harness), feedback.parse_bounces({"messageId": message_id, "kind": "hard"})
        )

    assert report.events_failed == 1
    assert status(harness, event_id) == ("deliveryFailed", "hard bounce: ")
    assert logs(harness)[0]["status"] == "bounced"


def test_an_archived_event_stays_readable_and_a_late_bounce_still_fails_it(
    harness: Harness, smtp: tuple[SmtpSink, int]
) -> None:
    # Given a processed event archived by mcSynch_local
    _, port = smtp
    template(harness)
    event_id = post(harness, {"email": "ada@example.com"})
    events.process(harness.sessions, smtp_settings(harness.settings, port))
    with harness.sessions() as s, s.begin():
        pkey = s.execute(select(event.c.pkey).where(event.c.id == event_id)).scalar_one()
        assert archive.archive(s, utcnow() + dt.timedelta(hours=2), dt.timedelta(hours=1)) == 1
    acme, globex = org_id(harness), org_id(harness, "globex")
    with harness.sessions() as s:
        # Then GET still finds it, by PKey, from the history
        found = events.find(s, acme, "orderPlaced", f"@{pkey}")
        assert found is not None and found["status"] == "processed"
        assert events.find(s, acme, "otherType", f"@{pkey}") is None
        assert events.find(s, globex, "orderPlaced", f"@{pkey}") is None

    # When its message bounces after the archive
    message_id = logs(harness)[0]["messageId"]
    with harness.sessions() as s, s.begin():
        report = feedback.record_bounces(
            s, acme, feedback.parse_bounces({"messageId": message_id, "kind": "hard"})
        )

    # Then the archived event turns deliveryFailed, as it would have in the realtime table
    assert report.events_failed == 1
    with harness.sessions() as s:
        found = events.find(s, acme, "orderPlaced", pkey)
        assert found is not None
        assert (found["status"], found["reason"]) == ("deliveryFailed", "hard bounce: ")
        assert s.execute(select(event.c.id)).all() == []


def test_sync_statuses_copies_log_changes_forward_only_and_moves_its_pointer(
    harness: Harness, smtp: tuple[SmtpSink, int]
) -> None:
    # Given two processed events whose logs another writer then changes
    _, port = smtp
    template(harness)
    first = post(harness, {"email": "a@example.com"})
    second = post(harness, {"email": "b@example.com"})
    events.process(harness.sessions, smtp_settings(harness.settings, port))
    with harness.sessions() as s, s.begin():
        start = sync_statuses(s).pointer
        s.execute(
            update(delivery_log)
            .where(delivery_log.c.eventId == first)
            .values(status="bounced", reason="late bounce", lastModified=utcnow())
        )

    # When the status sync runs from the pointer
    with harness.sessions() as s, s.begin():
        report = sync_statuses(s, start)

    # Then only the changed event moved, and the pointer went forward
    assert report.updated == 1
    assert status(harness, first) == ("deliveryFailed", "late bounce")
    assert status(harness, second)[0] == "processed"
    assert start is not None and report.pointer is not None
    assert report.pointer.modified >= start.modified
    assert SyncPointer.from_json(report.pointer.to_json()) == report.pointer


# ---------------------------------------------------------------------------------- repairs


def test_a_send_left_half_done_is_closed_as_unknown_never_resent(harness: Harness) -> None:
    # Given an event a dead worker claimed: processing, its log pending
    template(harness)
    event_id = post(harness, {"email": "a@example.com"})
    with harness.sessions() as s, s.begin():
        sends = events._decide(s, events._claim(s, [event_id], 10), utcnow(), events.Outcome())
    assert len(sends) == 1 and status(harness, event_id)[0] == "processing"

    # When the sweep runs past the lease
    report = events.sweep(harness.sessions, pending_after=60, processing_after=0)

    # Then the log is unknown and the event failed, saying why; nothing is sent again
    assert report.abandoned == 1
    assert logs(harness)[0]["status"] == "unknown"
    assert status(harness, event_id) == ("deliveryFailed", events.UNKNOWN_REASON)
    assert events.process(harness.sessions, harness.settings).claimed == 0


def test_the_sweep_finds_old_pending_events_to_publish_again(harness: Harness) -> None:
    event_id = post(harness, {"email": "a@example.com"})

    assert events.sweep(harness.sessions, pending_after=3600, processing_after=60).republish == []
    assert events.sweep(harness.sessions, pending_after=0, processing_after=60).republish == [
        event_id
    ]


def test_batches_are_bounded(harness: Harness) -> None:
    ids = [post(harness, {"email": f"u{n}@example.com"}) for n in range(5)]

    first = events.process(harness.sessions, harness.settings, limit=2)

    assert first.claimed == 2
    assert [status(harness, i)[0] for i in ids].count("pending") == 3
