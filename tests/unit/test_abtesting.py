"""abTesting: finished A/B tests get their winner, the held-back recipients get it once."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import insert, select, update

from tests.conftest import Harness
from tests.smtp_server import SmtpServer
from tests.technical import run_technical
from tests.unit.test_delivery import ab_workflow, mail, run, seed, smtp
from worker.messaging import delivery, delivery_log, tracking_log

__all__ = ["mail", "smtp"]


def _run_ab_testing(harness: Harness) -> None:
    assert run_technical(harness, "abTesting") == "finished"


def test_finished_tests_are_decided_and_the_rest_receive_the_winner_once(
    mail: Harness, smtp: SmtpServer
) -> None:
    seed(mail, [{"crmId": f"p{i}", "email": f"p{i}@example.org"} for i in range(60)])
    run(mail, ab_workflow(share=50))
    ((delivery_id, org_id, ab),) = mail.query(
        select(delivery.c.id, delivery.c.org_id, delivery.c.abTest)
    )
    before = smtp.count()
    _run_ab_testing(mail)  # the test period is not over: nothing happens
    assert smtp.count() == before and mail.query(select(delivery.c.state)) == [("abTesting",)]

    sent_a = mail.query(
        select(delivery_log.c.id).where(
            delivery_log.c.variant == "A", delivery_log.c.status == "sent"
        )
    )
    ended = (dt.datetime.fromisoformat(ab["endsAt"]) - dt.timedelta(days=2)).isoformat()
    with mail.sessions() as s, s.begin():
        s.execute(
            insert(tracking_log),
            [
                {"org_id": org_id, "deliveryId": delivery_id, "deliveryLogId": r[0], "kind": "open"}
                for r in sent_a[:2]
            ],
        )
        s.execute(
            update(delivery)
            .where(delivery.c.id == delivery_id)
            .values(abTest={**ab, "endsAt": ended})
        )
    _run_ab_testing(mail)
    assert mail.query(select(delivery.c.state)) == [("sent",)]
    remainder = smtp.messages[before:]
    assert remainder and {m.subject for m in remainder} == {"Subject A"}
    _run_ab_testing(mail)  # decided already: nothing more is sent
    per_recipient = smtp.by_recipient()
    assert len(per_recipient) == 60 and all(len(got) == 1 for got in per_recipient.values())
