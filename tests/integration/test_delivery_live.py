"""Email deliveries through real Celery workers to a real SMTP server on loopback: messages
arrive personalised, excluded profiles get nothing, and a worker SIGKILLed mid-delivery and
replaced sends nobody a second message (counted at the server)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import insert, select

from tests.integration.conftest import Stack, wait_for
from tests.smtp_server import SmtpServer
from worker import catalog, validations
from worker.marketing import profile
from worker.messaging import delivery, delivery_log, validation
from worker.models import Task, Workflow


@pytest.fixture(scope="module", params=[True, False], ids=["pipelining", "no-pipelining"])
def smtp(stack: Stack, request: pytest.FixtureRequest) -> Iterator[SmtpServer]:
    """A loopback SMTP server, and the stack's worker restarted to send to it: one that
    advertises PIPELINING (as Postfix does: the connector pipelines), then one that does not
    (smtplib's dialogue)."""
    with SmtpServer(pipelining=request.param) as server:
        stack.env.update(CARILLON_SMTP_HOST="127.0.0.1", CARILLON_SMTP_PORT=str(server.port))
        stack.kill("w1")
        stack.start_worker("w1")
        yield server


def seed(stack: Stack, org: str, rows: list[dict[str, Any]]) -> None:
    with stack.sessions() as s, s.begin():
        org_id = catalog.ensure_org(s, org).id
        for row in rows:  # rows with different keys: one insert each
            s.execute(insert(profile).values(org_id=org_id, **row))


def email_workflow(name: str, segment: str, **options: Any) -> dict[str, Any]:
    return {
        "id": name,
        "activities": [
            {"name": "start1", "type": "start", "transitions": {"done": "query1"}},
            {
                "name": "query1",
                "type": "query",
                "filter": {"field": "segmentCode", "op": "eq", "value": segment},
                "transitions": {"result": "email1"},
            },
            {
                "name": "email1",
                "type": "email",
                "subject": "Hello {{ profile.firstName }}",
                "text": "Dear {{ profile.firstName }} of {{ profile.city }}",
                **options,
                "transitions": {"done": "end1"},
            },
            {"name": "end1", "type": "end"},
        ],
    }


def log_rows(stack: Stack, name: str) -> dict[str, tuple[str, str]]:
    """address -> (status, reason) of the delivery of workflow `name`'s email1."""
    with stack.sessions() as s:
        task_id = s.scalars(
            select(Task.id)
            .where(Task.activity == "email1")
            .join_from(Task, delivery, delivery.c.task_id == Task.id)
            .where(delivery.c.name == "email1")
        ).all()
        rows = s.execute(
            select(profile.c.crmId, delivery_log.c.status, delivery_log.c.reason)
            .join(profile, profile.c.id == delivery_log.c.profileId)
            .join(delivery, delivery.c.id == delivery_log.c.deliveryId)
            .where(delivery.c.task_id.in_(task_id), profile.c.segmentCode == name)
        ).all()
    return {crm: (status, reason) for crm, status, reason in rows}


def test_a_workflow_emails_personalised_messages_and_skips_excluded_profiles(
    stack: Stack, smtp: SmtpServer
) -> None:
    segment = f"s{uuid.uuid4().hex[:8]}"
    seed(
        stack,
        "acme",
        [
            {
                "crmId": f"{segment}-ann",
                "email": f"ann.{segment}@example.org",
                "firstName": "Ann",
                "city": "Lyon",
                "segmentCode": segment,
            },
            {
                "crmId": f"{segment}-bob",
                "email": f"bob.{segment}@example.org",
                "firstName": "Bob",
                "city": "Nice",
                "segmentCode": segment,
            },
            {
                "crmId": f"{segment}-out",
                "email": f"out.{segment}@example.org",
                "emailOptOut": True,
                "segmentCode": segment,
            },
            {
                "crmId": f"{segment}-bl",
                "email": f"bl.{segment}@example.org",
                "blacklisted": True,
                "segmentCode": segment,
            },
        ],
    )
    name = stack.save(email_workflow(segment, segment))
    stack.engine.command(None, name, "start")
    stack.wait_state(name, "finished", timeout=60)
    received = {r: got for r, got in smtp.by_recipient().items() if segment in r}
    assert sorted(received) == [f"ann.{segment}@example.org", f"bob.{segment}@example.org"]
    ann = received[f"ann.{segment}@example.org"]
    assert [m.subject for m in ann] == ["Hello Ann"]
    assert ann[0].body().strip() == "Dear Ann of Lyon"
    assert received[f"bob.{segment}@example.org"][0].body().strip() == "Dear Bob of Nice"
    assert log_rows(stack, segment) == {
        f"{segment}-ann": ("sent", ""),
        f"{segment}-bob": ("sent", ""),
        f"{segment}-out": ("ignored", "optedOut"),
        f"{segment}-bl": ("ignored", "blacklisted"),
    }


def test_a_worker_killed_mid_delivery_sends_no_message_twice(
    stack: Stack, smtp: SmtpServer
) -> None:
    segment = f"k{uuid.uuid4().hex[:8]}"
    count, batch = 60, 10
    seed(
        stack,
        "acme",
        [
            {
                "crmId": f"{segment}-{i}",
                "email": f"p{i}.{segment}@example.org",
                "firstName": f"P{i}",
                "segmentCode": segment,
            }
            for i in range(count)
        ],
    )
    # Given a slow server (50 ms a message) and a delivery in batches of 10
    smtp.delay = 0.05
    try:
        name = stack.save(email_workflow(segment, segment, batchSize=batch))
        stack.engine.command(None, name, "start")

        def arrived() -> int:
            return sum(1 for m in smtp.messages if segment in m.recipients[0])

        # When the worker is SIGKILLed once some messages have arrived, and replaced
        wait_for(lambda: arrived() >= 15, 60, "15 messages to arrive")
        stack.kill("w1")
        at_kill = arrived()
        stack.start_worker("w1")
        # Then the task runs again and the workflow finishes
        stack.wait_state(name, "finished", timeout=120)
    finally:
        smtp.delay = 0.0
    assert at_kill < count
    per_recipient = {r: len(got) for r, got in smtp.by_recipient().items() if segment in r}
    # Nobody received two messages
    assert max(per_recipient.values()) == 1
    logs = log_rows(stack, segment)
    assert len(logs) == count
    statuses = {status for status, _ in logs.values()}
    assert statuses <= {"sent", "unknown"}
    # Every `sent` row arrived once; `unknown` rows are at most one batch
    sent = {
        f"p{crm.rsplit('-', 1)[1]}.{segment}@example.org"
        for crm, (st, _) in logs.items()
        if st == "sent"
    }
    assert sent <= set(per_recipient)
    unknown = [crm for crm, (st, _) in logs.items() if st == "unknown"]
    assert len(unknown) <= batch
    assert len(sent) + len(unknown) == count
    with stack.sessions() as s:
        attempts = s.scalars(
            select(Task.attempt)
            .where(Task.activity == "email1", Task.state == "done")
            .join(delivery, delivery.c.task_id == Task.id)
            .where(
                delivery.c.id.in_(
                    select(delivery_log.c.deliveryId)
                    .join(profile, profile.c.id == delivery_log.c.profileId)
                    .where(profile.c.segmentCode == segment)
                )
            )
        ).all()
    assert attempts and attempts[0] >= 2


def test_a_validated_delivery_waits_on_a_real_worker_then_sends_once_approved(
    stack: Stack, smtp: SmtpServer
) -> None:
    segment = f"v{uuid.uuid4().hex[:8]}"
    people = [
        {"crmId": f"{segment}-{n}", "email": f"{n}.{segment}@example.org", "segmentCode": segment}
        for n in ("ann", "bob")
    ]
    seed(stack, "acme", people)
    proof = f"qa.{segment}@example.org"
    name = stack.save(
        email_workflow(segment, segment, proof=[proof], validation={"assignee": "alice"})
    )
    stack.engine.command(None, name, "start")

    def received() -> list[str]:
        return sorted(m.recipients[0] for m in smtp.messages if segment in m.recipients[0])

    def pending_validation() -> str | None:
        with stack.sessions() as s:
            return s.scalar(
                select(validation.c.pkey)
                .join(Task, Task.id == validation.c.task_id)
                .join(Workflow, Workflow.id == Task.workflow_id)
                .where(
                    Workflow.name == name,
                    Task.state == "waiting",
                    validation.c.state == "pending",
                )
            )

    pkey = wait_for(pending_validation, 60, "the delivery to park for its validation")
    assert received() == [proof]  # the proof only, nobody else before the approval
    validations.decide(stack.engine, None, f"@{pkey}", "approve", None, "alice")
    stack.wait_state(name, "finished", timeout=60)
    assert received() == sorted([proof, *(p["email"] for p in people)])
