"""Transactional events end to end: API -> broker -> real worker -> real SMTP server -> GET,
then a bounce turns the processed event into deliveryFailed. Both backends."""

from __future__ import annotations

import email
import email.policy
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from flask.testing import FlaskClient
from sqlalchemy import select

from api import create_app
from tests.integration.conftest import Stack, wait_for
from worker import catalog
from worker.messaging import delivery_log, event
from worker.tasks import CeleryDispatcher

pytestmark = pytest.mark.integration


class Sink:
    """aiosmtpd handler keeping what it received (see tests/unit/test_events.py)."""

    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(
            email.message_from_bytes(envelope.content, policy=email.policy.default)
        )
        return "250 Message accepted"


@pytest.fixture(scope="module")
def smtp(stack: Stack) -> Iterator[Sink]:
    # Given a real SMTP server on loopback, and the stack's worker restarted to send there
    sink = Sink()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    stack.kill("w1")
    stack.start_worker("w1", CARILLON_SMTP_HOST="127.0.0.1", CARILLON_SMTP_PORT=str(port))
    try:
        yield sink
    finally:
        controller.stop()


@pytest.fixture(scope="module")
def client(stack: Stack) -> Iterator[tuple[FlaskClient, dict[str, str]]]:
    app = create_app(stack.settings, dispatcher=CeleryDispatcher(stack.celery))
    with stack.sessions() as s, s.begin():
        keys = catalog.create_credentials(s, "acme")
    headers = {"Authorization": f"Bearer {keys['token']}", "X-Api-Key": keys["apiKey"]}
    yield app.test_client(), headers
    app.extensions["carillon"].db.dispose()


def test_posted_events_are_delivered_by_a_worker_and_a_bounce_fails_them(
    stack: Stack, smtp: Sink, client: tuple[FlaskClient, dict[str, str]]
) -> None:
    http, headers = client
    base = "/acme/campaign"
    created = http.post(
        f"{base}/messageTemplate",
        json={
            "name": "welcome",
            "eventType": "signup",
            "content": {
                "subject": "Welcome {{ ctx.firstName }}",
                "html": '<p>Hi {{ ctx.firstName }}</p><a href="https://example.com/">go</a>',
            },
        },
        headers=headers,
    )
    assert created.status_code == 201, created.json

    # When ten events are posted through the API
    posted = [
        http.post(
            f"{base}/event/signup",
            json={"email": f"user{n}@example.com", "ctx": {"firstName": f"U{n}"}},
            headers=headers,
        ).json
        for n in range(10)
    ]
    paths = [event["href"][len(stack.settings.public_url) :] for event in posted]

    # Then the worker delivers each once, personalised, and GET says processed
    def statuses() -> list[str]:
        return [http.get(path, headers=headers).json["status"] for path in paths]

    wait_for(lambda: statuses() == ["processed"] * 10, 60, "ten processed events")
    wait_for(lambda: len(smtp.messages) >= 10, 10, "ten messages at the SMTP server")
    subjects = sorted(str(m["Subject"]) for m in smtp.messages)
    assert subjects == sorted(f"Welcome U{n}" for n in range(10))

    # When the first one bounces (hard)
    with stack.sessions() as s:
        message_id = s.execute(
            select(delivery_log.c.messageId)
            .join(event, event.c.deliveryLogId == delivery_log.c.id)
            .where(event.c.pkey == posted[0]["PKey"][1:])
        ).scalar_one()
    bounced = http.post(
        f"{base}/bounce", json={"messageId": message_id, "kind": "hard"}, headers=headers
    )

    # Then that event is deliveryFailed and the others stay processed
    assert bounced.json["eventsFailed"] == 1
    assert statuses() == ["deliveryFailed"] + ["processed"] * 9
