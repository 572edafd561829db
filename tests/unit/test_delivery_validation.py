"""The validation step of a delivery: after the proof, before any real message, against a
real loopback SMTP server (what it received is the ground truth)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from tests.conftest import Harness
from tests.smtp_server import SmtpServer
from tests.unit.test_delivery import PEOPLE, email, lines, mail, seed, smtp, workflow
from tests.unit.test_validation import decide, make_due, only_validation
from worker.errors import DefinitionError
from worker.messaging import delivery, delivery_log
from worker.models import Task, Workflow

__all__ = ["mail", "smtp"]  # fixtures, imported to be used here

PROOFS = ["qa@example.org"]


def gated(**validation: Any) -> dict[str, Any]:
    """A proofed email that waits for a validation; rejected goes to its own end."""
    return workflow(
        email(subject="Hi {{ profile.firstName }}", text="t", proof=PROOFS, validation=validation),
        transitions={"sent": "end1", "rejected": "end3"},
    )


def task_row(h: Harness, activity: str) -> Any:
    (row,) = h.query(
        select(Task.state, Task.reason, Task.vars, Task.outlets, Task.attempt).where(
            Task.activity == activity
        )
    )
    return row


def recipients(smtp: SmtpServer) -> list[str]:
    return sorted(m.recipients[0] for m in smtp.messages)


def test_the_proof_goes_out_then_nothing_until_approved_then_everyone_once(
    mail: Harness, smtp: SmtpServer
) -> None:
    seed(mail, PEOPLE)
    mail.start(gated(assignee="alice", timeout="1d"))
    mail.stub.drain()

    # Only the proof left; the task waits for alice, holding no worker, and says so
    assert recipients(smtp) == ["qa@example.org"]
    parked = task_row(mail, "email1")
    assert parked.state == "waiting"
    assert parked.reason == "waiting for validation by alice"
    row = only_validation(mail)
    assert (row["state"], row["assignee"]) == ("pending", "alice")
    assert row["subject"] == "Validate the email 'email1' before it is sent"
    assert mail.query(select(delivery.c.state)) == [("toValidate",)]
    assert mail.query(select(delivery_log.c.id)) == []  # no recipient claimed yet

    decide(mail, "approve", "looks good", user="alice")
    mail.stub.drain()

    # The proof is not sent again; each eligible profile gets its message once
    assert recipients(smtp) == ["ann@example.org", "gus@example.org", "qa@example.org"]
    done = task_row(mail, "email1")
    assert done.state == "done" and done.outlets == ["sent"]
    assert mail.query(select(delivery.c.state)) == [("sent",)]
    assert "approved by alice: looks good" in lines(mail, "email1")
    assert "end3" not in {name for (name,) in mail.query(select(Task.activity))}
    assert mail.query(select(Workflow.state)) == [("finished",)]


def test_a_rejection_sends_nothing_and_takes_the_rejected_outlet(
    mail: Harness, smtp: SmtpServer
) -> None:
    seed(mail, PEOPLE)
    mail.start(gated(group="marketing"))
    mail.stub.drain()
    decide(mail, "reject", "wrong offer", user="bob")
    mail.stub.drain()

    assert recipients(smtp) == ["qa@example.org"]
    assert mail.query(select(delivery_log.c.id)) == []
    assert mail.query(select(delivery.c.state)) == [("rejected",)]
    done = task_row(mail, "email1")
    assert done.state == "done" and done.outlets == ["rejected"]
    assert task_row(mail, "end3").vars["validationDecision"] == "rejected"
    assert task_row(mail, "end3").vars["validationComment"] == "wrong offer"
    assert "not sent: the validation ended rejected" in lines(mail, "email1")


def test_without_a_decision_the_timeout_sends_nothing(mail: Harness, smtp: SmtpServer) -> None:
    seed(mail, PEOPLE)
    mail.start(gated(assignee="alice", timeout="2h"))
    mail.stub.drain()
    make_due(mail, "email1")
    assert mail.engine.tick()["timers"] == 1
    mail.stub.drain()

    assert recipients(smtp) == ["qa@example.org"]
    assert only_validation(mail)["state"] == "timedOut"
    assert task_row(mail, "end3").vars["validationDecision"] == "timedOut"
    assert mail.query(select(delivery.c.state)) == [("rejected",)]


def test_a_rejection_without_a_rejected_transition_just_ends_the_branch(
    mail: Harness, smtp: SmtpServer
) -> None:
    seed(mail, PEOPLE[:1])
    body = workflow(
        email(subject="s", text="t", validation={"assignee": "alice"}),
        transitions={"sent": "end1"},
    )
    mail.start(body)
    mail.stub.drain()
    decide(mail, "reject", "no", user="alice")
    mail.stub.drain()
    assert smtp.count() == 0
    assert task_row(mail, "email1").outlets == []
    assert mail.query(select(Workflow.state)) == [("finished",)]


def test_stopping_the_workflow_cancels_the_pending_validation(
    mail: Harness, smtp: SmtpServer
) -> None:
    seed(mail, PEOPLE[:1])
    workflow_id = mail.start(gated(assignee="alice"))
    mail.stub.drain()
    mail.engine.command(None, workflow_id, "stop")
    mail.stub.drain()
    assert only_validation(mail)["state"] == "cancelled"
    assert task_row(mail, "email1").state == "aborted"
    assert recipients(smtp) == ["qa@example.org"]


def test_sms_and_push_take_the_validation_step_too(harness: Harness) -> None:
    seed(harness, [{"crmId": "ann", "mobilePhone": "+33600000001"}])
    body = workflow(
        {"name": "sms1", "type": "sms", "text": "hi", "validation": {"group": "ops"}},
        transitions={"sent": "end1"},
    )
    harness.start(body)
    harness.stub.drain()
    assert task_row(harness, "sms1").state == "waiting"
    assert harness.query(select(delivery_log.c.id)) == []


HOSTILE = [
    ("nope", "option 'validation' must be dict"),
    ({}, "give 'assignee', 'group' or both"),
    ({"assignee": "a", "when": "now"}, "unknown key(s) when"),
    ({"assignee": 7}, "'assignee' must be a string"),
    ({"assignee": "a" * 129}, "'assignee' at most 128 characters"),
    ({"assignee": " "}, "'assignee' must not be empty"),
    ({"group": "g", "subject": "s" * 256}, "'subject' at most 255 characters"),
    ({"group": "g", "timeout": "soon"}, "timeout"),
    ({"group": "g", "instructions": "x" * 4001}, "at most 4000 characters"),
]


@pytest.mark.parametrize(("validation", "message"), HOSTILE)
def test_a_bad_validation_option_is_refused_on_save(
    harness: Harness, validation: Any, message: str
) -> None:
    body = workflow(email(subject="s", text="t", validation=validation))
    with pytest.raises(DefinitionError) as raised:
        harness.save(body)
    assert message in raised.value.message or message in str(raised.value.details)
    assert harness.query(select(Workflow.id)) == []
