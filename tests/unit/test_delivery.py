"""The email, sms and push activities on the SQLite harness, against a real loopback SMTP
server: personalisation, exclusions with reasons, proofs, never twice, A/B split and winner."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from sqlalchemy import func, insert, select, update

from tests.conftest import Harness
from tests.smtp_server import SmtpServer
from worker import catalog, definitions, populations
from worker.channels import abtest, sending
from worker.channels.connectors import ConnectorError, Message, SendResult
from worker.channels.templates import compile_content
from worker.errors import ActivityError, DefinitionError
from worker.marketing import profile
from worker.messaging import delivery, delivery_log, tracking_log
from worker.models import LogLine, Task

ORG = "acme"

PEOPLE: list[dict[str, Any]] = [
    {"crmId": "ann", "email": "ann@example.org", "firstName": "Ann", "city": "Lyon"},
    {"crmId": "bob", "email": "bob@example.org", "firstName": "Bob", "emailOptOut": True},
    {"crmId": "cid", "email": "cid@example.org", "firstName": "Cid", "blacklisted": True},
    {"crmId": "dan", "email": "dan@example.org", "firstName": "Dan", "emailBlacklisted": True},
    {"crmId": "eve", "email": None, "firstName": "Eve"},
    {"crmId": "fay", "email": " ANN@example.org", "firstName": "Fay"},
    {"crmId": "gus", "email": "gus@example.org", "firstName": "Gus <b>", "city": "Nice"},
]


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    with SmtpServer(refuse={"nobody@example.org"}) as server:
        yield server


@pytest.fixture
def mail(harness: Harness, smtp: SmtpServer) -> Harness:
    """The harness whose engine sends email to the loopback server."""
    harness.engine.settings = dataclasses.replace(
        harness.settings, smtp_host="127.0.0.1", smtp_port=smtp.port
    )
    return harness


def seed(harness: Harness, rows: Sequence[dict[str, Any]], org: str = ORG) -> list[int]:
    with harness.sessions() as s, s.begin():
        org_id = catalog.ensure_org(s, org).id
        return [
            s.execute(insert(profile).values(org_id=org_id, **row)).inserted_primary_key[0]
            for row in rows
        ]


def workflow(
    channel: dict[str, Any], transitions: dict[str, str] | None = None, enrich: bool = False
) -> dict[str, Any]:
    transitions = {"sent": "end1", "failed": "end2"} if transitions is None else transitions
    chain: list[dict[str, Any]] = [
        {"name": "start1", "type": "start", "transitions": {"done": "query1"}},
        {
            "name": "query1",
            "type": "query",
            "filter": {"field": "crmId", "op": "notEmpty"},
            "transitions": {"result": "enrichment1" if enrich else channel["name"]},
        },
    ]
    if enrich:
        chain.append(
            {
                "name": "enrichment1",
                "type": "enrichment",
                "columns": [{"name": "town", "field": "city"}],
                "transitions": {"done": channel["name"]},
            }
        )
    ends = [{"name": n, "type": "end"} for n in sorted(set(transitions.values()))]
    return {"id": "d", "activities": [*chain, {**channel, "transitions": transitions}, *ends]}


def email(**options: Any) -> dict[str, Any]:
    return {"name": "email1", "type": "email", **options}


def run(harness: Harness, body: dict[str, Any], vars: dict[str, Any] | None = None) -> None:
    harness.start(body)
    harness.stub.drain()


def logs_of(harness: Harness) -> dict[str, tuple[str, str, str | None]]:
    """crmId -> (status, reason, variant) of every delivery log row."""
    rows = harness.query(
        select(
            profile.c.crmId, delivery_log.c.status, delivery_log.c.reason, delivery_log.c.variant
        ).join(profile, profile.c.id == delivery_log.c.profileId)
    )
    return {crm: (status, reason, variant) for crm, status, reason, variant in rows}


def task(harness: Harness, activity: str) -> Any:
    rows = harness.query(
        select(Task.state, Task.error, Task.outlets, Task.counts, Task.attempt).where(
            Task.activity == activity
        )
    )
    assert len(rows) == 1, rows
    return rows[0]


def lines(harness: Harness, activity: str) -> list[str]:
    return [
        r[0] for r in harness.query(select(LogLine.message).where(LogLine.activity == activity))
    ]


# -- sending, personalisation, exclusions ----------------------------------------------------


def test_email_reaches_each_eligible_profile_once_personalised(
    mail: Harness, smtp: SmtpServer
) -> None:
    # Given profiles opted out, denylisted, quarantined, without or with a duplicate address
    seed(mail, PEOPLE)
    # When a workflow emails them with profile fields, vars and an enrichment column
    run(
        mail,
        workflow(
            email(
                subject="Hello {{ profile.firstName }}",
                text="Hi {{ profile.firstName }} from {{ town }}",
                html="<p>Hi {{ profile.firstName }}</p>",
                sender="news@example.org",
            ),
            enrich=True,
        ),
    )
    # Then only Ann and Gus receive one message each, personalised and escaped in HTML
    received = smtp.by_recipient()
    assert sorted(received) == ["ann@example.org", "gus@example.org"]
    assert [m.subject for m in received["ann@example.org"]] == ["Hello Ann"]
    gus = received["gus@example.org"][0]
    assert gus.subject == "Hello Gus <b>"
    assert gus.body().strip() == "Hi Gus <b> from Nice"
    assert "<p>Hi Gus &lt;b&gt;</p>" in gus.body("html")
    assert gus.sender == "news@example.org"
    # And the delivery log says why each other profile got nothing
    assert logs_of(mail) == {
        "ann": ("sent", "", None),
        "bob": ("ignored", "optedOut", None),
        "cid": ("ignored", "blacklisted", None),
        "dan": ("ignored", "quarantined", None),
        "eve": ("ignored", "noAddress", None),
        "fay": ("ignored", "duplicateAddress", None),
        "gus": ("sent", "", None),
    }
    # And the message ids on the wire are the log's
    ids = {r[0] for r in mail.query(select(delivery_log.c.messageId))}
    assert {m.message_id for m in smtp.messages} <= ids
    state = task(mail, "email1")
    assert state.state == "done"
    assert state.counts["email1"] == 2
    assert state.counts["email1_failed"] == 5
    assert lines(mail, "email1") == [
        "2 message(s) sent, 5 ignored (blacklisted 1, duplicateAddress 1, noAddress 1, "
        "optedOut 1, quarantined 1), 0 failed"
    ]
    assert mail.query(select(delivery.c.state, delivery.c.channel)) == [("sent", "email")]


def test_sent_and_failed_outlets_carry_their_recipients(mail: Harness, smtp: SmtpServer) -> None:
    ids = seed(mail, [*PEOPLE, {"crmId": "zed", "email": "nobody@example.org"}])
    run(mail, workflow(email(subject="s", text="t")))
    inputs = {
        name: row[0]
        for name in ("end1", "end2")
        for row in mail.query(select(Task.inputs).where(Task.activity == name))
    }
    (sent,) = inputs["end1"].values()
    (failed,) = inputs["end2"].values()
    with mail.sessions() as s:
        sent_ids = sorted(s.scalars(select(populations.as_table(sent).c.id)))
        failed_ids = sorted(s.scalars(select(populations.as_table(failed).c.id)))
    assert sent_ids == [ids[0], ids[6]]
    assert failed_ids == sorted(set(ids) - set(sent_ids))
    # The 550 for one recipient failed that message only, with the server's words
    assert logs_of(mail)["zed"][0] == "failed"
    assert "550" in logs_of(mail)["zed"][1]


def test_a_template_error_at_run_fails_the_activity_naming_field_and_line(
    mail: Harness, smtp: SmtpServer
) -> None:
    seed(mail, PEOPLE[:1])
    run(mail, workflow(email(subject="Hi", text="line one\n{{ profile.nope }}")))
    state = task(mail, "email1")
    assert state.state == "failed"
    assert "text, line 2" in state.error
    assert smtp.count() == 0
    # Nothing was handed over: the rows are still waiting, never in flight
    assert mail.query(select(delivery_log.c.status, delivery_log.c.attempt)) == [("pending", 0)]


def test_proof_goes_to_the_test_addresses_first_and_once(mail: Harness, smtp: SmtpServer) -> None:
    seed(mail, PEOPLE[:1])
    run(
        mail,
        workflow(
            email(
                subject="Hello {{ profile.firstName }}",
                text="t",
                proof=["qa1@example.org", "qa2@example.org"],
            )
        ),
    )
    subjects = [(m.recipients[0], m.subject) for m in smtp.messages]
    assert subjects == [
        ("qa1@example.org", "[PROOF] Hello Ann"),
        ("qa2@example.org", "[PROOF] Hello Ann"),
        ("ann@example.org", "Hello Ann"),
    ]
    assert "proof sent to 2 address(es)" in lines(mail, "email1")


def test_sms_and_push_go_to_the_local_outbox_by_default(harness: Harness) -> None:
    seed(
        harness,
        [
            {"crmId": "a", "mobilePhone": "+33600000001", "pushToken": "tok-a", "firstName": "A"},
            {"crmId": "b", "mobilePhone": "+33600000002", "smsOptOut": True, "pushOptOut": True},
            {"crmId": "c", "mobilePhone": "+33600000003", "mobileBlacklisted": True},
        ],
    )
    run(harness, workflow({"name": "sms1", "type": "sms", "text": "Hi {{ profile.firstName }}"}))
    outbox = harness.settings.home / "outbox"
    sms = [json.loads(line) for line in (outbox / "sms.jsonl").read_text().splitlines()]
    assert [(m["to"], m["text"]) for m in sms] == [("+33600000001", "Hi A")]
    assert sorted(v[:2] for v in logs_of(harness).values()) == [
        ("ignored", "optedOut"),
        ("ignored", "quarantined"),
        ("sent", ""),
    ]
    harness.start(
        {
            **workflow({"name": "push1", "type": "push", "title": "T", "body": "B {{ vars }}"}),
            "id": "p",
        }
    )
    harness.stub.drain()
    push = [json.loads(line) for line in (outbox / "push.jsonl").read_text().splitlines()]
    assert [(m["to"], m["title"], m["body"]) for m in push] == [("tok-a", "T", "B {}")]


# -- never twice --------------------------------------------------------------------------


class Recorder:
    """A connector that records what it was handed (the sink under our control)."""

    channel = "email"
    idempotent = False

    def __init__(self, fail_at: int | None = None) -> None:
        self.handed: list[str] = []
        self.fail_at = fail_at

    def send(self, messages: Sequence[Message]) -> list[SendResult]:
        results = []
        for message in messages:
            if self.fail_at is not None and len(self.handed) == self.fail_at:
                self.fail_at = None
                self.handed.append(message.message_id)
                raise ConnectorError(
                    "connection lost", results=results, in_flight=message.message_id
                )
            self.handed.append(message.message_id)
            results.append(SendResult(message.message_id, True))
        return results

    def close(self) -> None:
        pass


def claimed_delivery(harness: Harness, count: int) -> tuple[int, int, dict[str, Any]]:
    """A delivery with `count` claimed recipients; (delivery id, org id, population)."""
    ids = seed(harness, [{"crmId": f"p{i}", "email": f"p{i}@example.org"} for i in range(count)])
    with harness.sessions() as s, s.begin():
        org_id = catalog.ensure_org(s, ORG).id
        owner = populations.Owner(s, org_id, 0, "job", "00000000-0000-0000-0000-000000000001", 1)
        population = populations.create(
            owner, "profile", select(profile.c.id).where(profile.c.id.in_(ids))
        )
        row = sending.ensure_delivery(
            s,
            org_id=org_id,
            channel="email",
            name="email1",
            label="",
            workflow_id=0,
            job_id="job",
            task_id="00000000-0000-0000-0000-000000000001",
            content={"subject": "s", "text": "t"},
            ab_test=None,
        )
        inserted = sending.claim(
            s, delivery_id=row["id"], org_id=org_id, channel="email", population=population
        )
        assert inserted == count
        # Claiming again (a later attempt) inserts nothing: one row per recipient
        again = sending.claim(
            s, delivery_id=row["id"], org_id=org_id, channel="email", population=population
        )
        assert again == 0
    return row["id"], org_id, population


def a_pass(harness: Harness, delivery_id: int, org_id: int, attempt: int, connector: Any) -> Any:
    return sending.Pass(
        sessions=harness.sessions,
        delivery_id=delivery_id,
        org_id=org_id,
        channel="email",
        attempt=attempt,
        connector=connector,
        contents={None: compile_content({"subject": "s", "text": "t"})},
        batch_size=4,
    )


def test_a_later_attempt_never_resends_the_batch_left_in_flight(harness: Harness) -> None:
    delivery_id, org_id, _ = claimed_delivery(harness, 10)
    # Given attempt 1 handed rows 1-4 to the connector and died before recording the outcome
    with harness.sessions() as s, s.begin():
        first = s.scalars(select(delivery_log.c.id).order_by(delivery_log.c.id).limit(4)).all()
        s.execute(update(delivery_log).where(delivery_log.c.id.in_(first)).values(attempt=1))
    # When attempt 2 runs
    recorder = Recorder()
    statuses = a_pass(harness, delivery_id, org_id, 2, recorder).run()
    # Then those 4 are `unknown`, never resent, and the 6 never handed over are sent once
    assert statuses["unknown"] == 4 and statuses["sent"] == 6
    assert len(recorder.handed) == len(set(recorder.handed)) == 6
    rows = dict(
        harness.query(select(delivery_log.c.status, func.count()).group_by(delivery_log.c.status))
    )
    assert rows == {"unknown": 4, "sent": 6}
    reasons = {
        r[0]
        for r in harness.query(
            select(delivery_log.c.reason).where(delivery_log.c.status == "unknown")
        )
    }
    assert reasons == {sending.UNKNOWN_REASON}


def test_a_connection_lost_mid_batch_leaves_one_message_unknown(harness: Harness) -> None:
    delivery_id, org_id, _ = claimed_delivery(harness, 10)
    # Given the connection drops while the 6th message is handed over
    dropping = Recorder(fail_at=5)
    with pytest.raises(ActivityError, match="connection lost"):
        a_pass(harness, delivery_id, org_id, 1, dropping).run()
    # Then 5 are sent, the 6th unknown, the rest of its batch back to be sent later
    # And the next attempt sends the rest, each once
    retry = Recorder()
    a_pass(harness, delivery_id, org_id, 2, retry).run()
    handed = dropping.handed + retry.handed
    assert len(handed) == len(set(handed)) == 10
    rows = dict(
        harness.query(select(delivery_log.c.status, func.count()).group_by(delivery_log.c.status))
    )
    assert rows == {"sent": 9, "unknown": 1}


class TwoLanesLost(Recorder):
    """Two parallel connections drop in one batch: two messages in flight at once."""

    def send(self, messages: Sequence[Message]) -> list[SendResult]:
        if self.fail_at is None:
            return super().send(messages)
        self.fail_at = None
        lost = [messages[1].message_id, messages[3].message_id]
        self.handed += [m.message_id for m in messages]
        results = [SendResult(m.message_id, True) for m in messages if m.message_id not in lost]
        raise ConnectorError(
            "connection lost", results=results, in_flight=lost[0], also_in_flight=lost[1:]
        )


def test_every_message_in_flight_on_a_lost_connection_is_unknown_never_resent(
    harness: Harness,
) -> None:
    delivery_id, org_id, _ = claimed_delivery(harness, 8)
    dropping = TwoLanesLost(fail_at=0)
    with pytest.raises(ActivityError, match="connection lost"):
        a_pass(harness, delivery_id, org_id, 1, dropping).run()
    retry = Recorder()
    a_pass(harness, delivery_id, org_id, 2, retry).run()
    handed = dropping.handed + retry.handed
    assert len(handed) == len(set(handed)) == 8
    rows = dict(
        harness.query(select(delivery_log.c.status, func.count()).group_by(delivery_log.c.status))
    )
    assert rows == {"sent": 6, "unknown": 2}


def test_an_idempotent_connector_gets_the_in_flight_batch_again_under_the_same_ids(
    harness: Harness,
) -> None:
    delivery_id, org_id, _ = claimed_delivery(harness, 6)
    with harness.sessions() as s, s.begin():
        s.execute(update(delivery_log).where(delivery_log.c.id <= 2).values(attempt=1))
    keyed = Recorder()
    keyed.idempotent = True  # type: ignore[misc]
    statuses = a_pass(harness, delivery_id, org_id, 2, keyed).run()
    assert statuses["sent"] == 6 and statuses["unknown"] == 0
    assert len(set(keyed.handed)) == 6


def test_a_superseded_attempt_stops_between_batches(harness: Harness) -> None:
    delivery_id, org_id, _ = claimed_delivery(harness, 10)
    recorder = Recorder()
    run = a_pass(harness, delivery_id, org_id, 1, recorder)
    run.should_stop = lambda: "a later attempt took the task over" if recorder.handed else None
    with pytest.raises(ActivityError, match="later attempt"):
        run.run()
    assert len(recorder.handed) == 4  # one batch, then it stopped


# -- options -------------------------------------------------------------------------------

HOSTILE: list[tuple[dict[str, Any], str]] = [
    ({"subject": "s"}, "option 'html or text' is required"),
    ({"html": "x"}, "option 'subject' is required"),
    ({"subject": "s", "text": "{% if %}"}, "text, line 1"),
    ({"subject": "s", "text": "a\n{{ x|attr('__class__') }}"}, "text, line 2"),
    ({"subject": "x" * 1001, "text": "t"}, "at most 1,000 characters"),
    ({"subject": "s", "text": "t" * 100_001}, "at most 100,000"),
    ({"subject": "s", "text": "t", "sender": "a@b\r\nBcc: x@y.org"}, "option 'sender'"),
    ({"subject": "s", "text": "t", "sender": "not an address"}, "option 'sender'"),
    ({"subject": "s", "text": "t", "proof": ["q@example.org"] * 21}, "at most 20"),
    ({"subject": "s", "text": "t", "proof": ["ok@example.org", "x\n@y"]}, "item 1"),
    ({"subject": "s", "text": "t", "proof": [{"a": 1}]}, "item 0"),
    ({"subject": "s", "text": "t", "proof": "q@example.org"}, "must be list"),
    ({"subject": "s", "text": "t", "batchSize": 0}, "between 1 and 10,000"),
    ({"subject": "s", "text": "t", "batchSize": 10_001}, "between 1 and 10,000"),
    ({"subject": "s", "text": "t", "batchSize": True}, "must be int"),
    ({"subject": "s", "text": "t", "batchSize": "5"}, "must be int"),
    ({"subject": "s", "text": "t", "bcc": "x"}, "unknown option 'bcc'"),
    ({"subject": "s", "text": "t", "abTest": {"variants": [{"name": "A"}]}}, "2 to 10"),
    (
        {"subject": "s", "text": "t", "abTest": {"variants": [{"name": "A"}, {"name": "A"}]}},
        "duplicate name",
    ),
    (
        {"subject": "s", "text": "t", "abTest": {"variants": [{"name": "A"}, {"name": "../"}]}},
        "'name' must be",
    ),
    (
        {
            "subject": "s",
            "text": "t",
            "abTest": {"variants": [{"name": "A"}, {"name": "B"}], "share": 0},
        },
        "'share'",
    ),
    (
        {
            "subject": "s",
            "text": "t",
            "abTest": {"variants": [{"name": "A"}, {"name": "B"}], "share": True},
        },
        "'share'",
    ),
    (
        {
            "subject": "s",
            "text": "t",
            "abTest": {"variants": [{"name": "A"}, {"name": "B"}], "criterion": "x"},
        },
        "'criterion'",
    ),
    (
        {
            "subject": "s",
            "text": "t",
            "abTest": {"variants": [{"name": "A"}, {"name": "B"}], "durationHours": 1e9},
        },
        "'durationHours'",
    ),
    (
        {
            "subject": "s",
            "text": "t",
            "abTest": {"variants": [{"name": "A", "bcc": 1}, {"name": "B"}]},
        },
        "unknown key",
    ),
    (
        {
            "subject": "s",
            "text": "t",
            "abTest": {"variants": [{"name": "A", "html": "{{"}, {"name": "B"}]},
        },
        "html, line 1",
    ),
    ({"subject": "s", "text": "t", "abTest": {"variants": [], "x": 1}}, "unknown key"),
]


@pytest.mark.parametrize(("options", "message"), HOSTILE)
def test_bad_email_options_are_refused_on_save_naming_the_activity(
    harness: Harness, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(DefinitionError) as raised:
        harness.save(workflow(email(**options)))
    assert message in raised.value.message
    assert "email1" in str(raised.value.details) or "email1" in raised.value.message


def test_sms_and_push_need_their_text() -> None:
    for body in (
        {"name": "sms1", "type": "sms"},
        {"name": "push1", "type": "push", "title": "t"},
        {"name": "sms1", "type": "sms", "text": "{% for %}"},
    ):
        with pytest.raises(DefinitionError):
            definitions.parse(workflow(body))


# -- A/B --------------------------------------------------------------------------------------


def ab_workflow(share: int = 50) -> dict[str, Any]:
    return workflow(
        email(
            subject="base",
            text="{{ profile.firstName }}",
            abTest={
                "variants": [
                    {"name": "A", "subject": "Subject A"},
                    {"name": "B", "subject": "Subject B"},
                ],
                "share": share,
                "criterion": "opens",
                "durationHours": 24,
            },
        )
    )


def test_ab_test_sends_each_variant_to_its_hash_share_and_holds_the_rest(
    mail: Harness, smtp: SmtpServer
) -> None:
    ids = seed(
        mail,
        [
            {"crmId": f"p{i}", "email": f"p{i}@example.org", "firstName": f"P{i}"}
            for i in range(200)
        ],
    )
    run(mail, ab_workflow(share=50))
    split = sending.Split(("A", "B"), 50)
    expected = {f"p{i}": sending.ab_variant(pid, split) for i, pid in enumerate(ids)}
    logs = logs_of(mail)
    for crm, variant in expected.items():
        if variant is None:
            assert logs[crm] == ("pending", sending.AWAITING_WINNER, None)
        else:
            assert logs[crm] == ("sent", "", variant)
    tested = [v for v in expected.values() if v]
    assert 70 <= len(tested) <= 130  # about half, decided by the hash
    assert {"A", "B"} == set(tested)
    subjects = {m.recipients[0]: m.subject for m in smtp.messages}
    assert len(subjects) == len(tested) == smtp.count()
    for crm, variant in expected.items():
        if variant:
            assert subjects[f"{crm}@example.org"] == f"Subject {variant}"
    ((state, ab),) = mail.query(select(delivery.c.state, delivery.c.abTest))
    assert state == "abTesting"
    assert dt.datetime.fromisoformat(ab["endsAt"]) > dt.datetime.now(dt.UTC) + dt.timedelta(
        hours=23
    )


def test_winner_is_the_best_open_rate_after_the_end_and_the_rest_get_it_once(
    mail: Harness, smtp: SmtpServer
) -> None:
    seed(mail, [{"crmId": f"p{i}", "email": f"p{i}@example.org"} for i in range(100)])
    run(mail, ab_workflow(share=40))
    ((delivery_id, org_id, ab),) = mail.query(
        select(delivery.c.id, delivery.c.org_id, delivery.c.abTest)
    )
    ends = dt.datetime.fromisoformat(ab["endsAt"])
    sent_b = mail.query(
        select(delivery_log.c.id).where(
            delivery_log.c.variant == "B", delivery_log.c.status == "sent"
        )
    )
    with mail.sessions() as s, s.begin():
        # Before the end: no decision
        assert abtest.pick_winner(s, delivery_id, ends - dt.timedelta(seconds=1)) is None
        # B's recipients open more (one of them twice: recipients count, not hits)
        rows = [
            {"org_id": org_id, "deliveryId": delivery_id, "deliveryLogId": r[0], "kind": "open"}
            for r in sent_b[:3]
        ]
        s.execute(insert(tracking_log), [*rows, rows[0]])
        assert abtest.pick_winner(s, delivery_id, ends) == "B"
    with mail.sessions() as s, s.begin():
        assert abtest.pick_winner(s, delivery_id, ends + dt.timedelta(days=9)) == "B"
    before = smtp.count()
    awaiting = len(
        mail.query(
            select(delivery_log.c.id).where(delivery_log.c.reason == sending.AWAITING_WINNER)
        )
    )
    statuses = abtest.send_remainder(
        mail.sessions, delivery_id, settings=mail.engine.settings, attempt=1
    )
    assert statuses["sent"] == awaiting
    assert smtp.count() == before + awaiting
    assert {m.subject for m in smtp.messages[before:]} == {"Subject B"}
    # Called again (a redelivered task): nothing is sent twice
    abtest.send_remainder(mail.sessions, delivery_id, settings=mail.engine.settings, attempt=2)
    per_recipient = smtp.by_recipient()
    assert all(len(got) == 1 for got in per_recipient.values())
    assert len(per_recipient) == 100
    assert mail.query(select(delivery.c.state)) == [("sent",)]


def test_a_tie_goes_to_the_first_variant(mail: Harness, smtp: SmtpServer) -> None:
    seed(mail, [{"crmId": f"p{i}", "email": f"p{i}@example.org"} for i in range(20)])
    run(mail, ab_workflow())
    ((delivery_id, ab),) = mail.query(select(delivery.c.id, delivery.c.abTest))
    with mail.sessions() as s, s.begin():
        ends = dt.datetime.fromisoformat(ab["endsAt"])
        assert abtest.pick_winner(s, delivery_id, ends) == "A"


def test_templates_reading_the_whole_profile_still_see_every_field(
    harness: Harness,
) -> None:
    # Given a pipelining server, and templates reading fields by name (the batch selects
    # only those columns) or the whole profile (loops, .get, dynamic keys: all columns)
    seed(harness, PEOPLE[:1])
    with SmtpServer(pipelining=True) as server:
        harness.engine.settings = dataclasses.replace(
            harness.settings, smtp_host="127.0.0.1", smtp_port=server.port
        )
        run(
            harness,
            workflow(
                email(
                    subject="{{ profile.firstName }} {{ profile['city'] }}",
                    text="{{ profile.get('city') }}|{{ profile[vars.get('key', 'crmId')] }}|"
                    "{% for k, v in profile|dictsort %}{% if k == 'email' %}{{ v }}{% endif %}"
                    "{% endfor %}",
                )
            ),
        )
        (got,) = server.messages
    # Then each reads what it asks for, whatever columns the batch selected
    assert got.subject == "Ann Lyon"
    assert got.body().strip() == "Lyon|ann|ann@example.org"
    assert task(harness, "email1").state == "done"


def test_a_batch_selects_only_the_profile_fields_its_templates_read(harness: Harness) -> None:
    named = compile_content({"subject": "{{ profile.firstName }}", "text": "{{ vars.x }}"})
    other = compile_content({"subject": "{{ profile['city'] }}"})
    whole = compile_content({"subject": "{{ profile.get('firstName') }}"})

    def selected(contents: dict[str | None, Any]) -> frozenset[str] | None:
        return sending.Pass(
            sessions=harness.sessions,
            delivery_id=0,
            org_id=0,
            channel="email",
            attempt=1,
            connector=None,  # type: ignore[arg-type]
            contents=contents,
        )._profile_fields()

    assert selected({None: named}) == {"firstName"}
    assert selected({"a": named, "b": other}) == {"firstName", "city"}
    assert selected({"a": named, "b": whole}) is None  # one variant reads it all: all columns


def test_a_pass_shortens_the_gil_switch_interval_only_while_it_runs(harness: Harness) -> None:
    import sys

    delivery_id, org_id, _ = claimed_delivery(harness, 6)
    seen: list[float] = []

    class Watching(Recorder):
        def send(self, messages: Sequence[Message]) -> list[SendResult]:
            seen.append(sys.getswitchinterval())
            return super().send(messages)

    before = sys.getswitchinterval()
    assert a_pass(harness, delivery_id, org_id, 1, Watching()).run()["sent"] == 6
    assert seen and all(value == sending.SWITCH_INTERVAL for value in seen)
    assert sys.getswitchinterval() == before
    # And restored when the pass fails
    stopped = a_pass(harness, delivery_id, org_id, 2, Recorder())
    stopped.should_stop = lambda: "stopped for the test"
    with pytest.raises(ActivityError, match="stopped for the test"):
        stopped.run()
    assert sys.getswitchinterval() == before
