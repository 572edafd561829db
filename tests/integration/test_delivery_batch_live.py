"""One delivery's batches spread over a real worker's two pool processes (PostgreSQL, Redis,
a real SMTP server on loopback): each recipient gets one message, both processes send,
a SIGKILLed worker's batches are taken over without sending twice, and a stop stops them."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import insert, select

from tests.integration.conftest import Stack, running_stack, wait_for
from tests.integration.test_delivery_live import email_workflow, log_rows
from tests.smtp_server import SmtpServer
from worker import catalog
from worker.channels.delivery_batch import MIN_RECIPIENTS
from worker.marketing import profile
from worker.messaging import delivery
from worker.models import DeliveryBatch, Workflow


@pytest.fixture(scope="module")
def smtp() -> Iterator[SmtpServer]:
    with SmtpServer(pipelining=True) as server:
        yield server


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, smtp: SmtpServer) -> Iterator[Stack]:
    env = {"CARILLON_SMTP_HOST": "127.0.0.1", "CARILLON_SMTP_PORT": str(smtp.port)}
    home: Path = tmp_path_factory.mktemp("batches")
    with running_stack(home, "postgres-redis", env=env) as built:
        built.env.update(env)
        yield built


def people(stack: Stack, segment: str, count: int) -> None:
    with stack.sessions() as s, s.begin():
        org_id = catalog.ensure_org(s, "acme").id
        rows = [
            {
                "org_id": org_id,
                "crmId": f"{segment}-{i}",
                "email": f"p{i}.{segment}@example.org",
                "firstName": f"P{i}",
                "segmentCode": segment,
            }
            for i in range(count)
        ]
        s.execute(insert(profile), rows)


def batches(stack: Stack, segment: str) -> list[DeliveryBatch]:
    with stack.sessions() as s:
        return list(
            s.scalars(
                select(DeliveryBatch)
                .join(delivery, delivery.c.id == DeliveryBatch.delivery_id)
                .join(Workflow, Workflow.id == delivery.c.workflow_id)
                .where(Workflow.name == segment)
                .order_by(DeliveryBatch.seq)
            )
        )


def start_delivery(stack: Stack, segment: str, count: int, size: int) -> str:
    """`count` profiles of `segment` and a started workflow emailing them in `size` batches."""
    people(stack, segment, count)
    name = stack.save(email_workflow(segment, segment, batchSize=size))
    stack.engine.command(None, name, "start")
    return name


def arrived(smtp: SmtpServer, segment: str) -> int:
    return sum(1 for m in smtp.messages if segment in m.recipients[0])


def per_recipient(smtp: SmtpServer, segment: str) -> dict[str, int]:
    return {r: len(got) for r, got in smtp.by_recipient().items() if segment in r}


def test_batches_of_one_delivery_spread_over_both_pool_processes(
    stack: Stack, smtp: SmtpServer
) -> None:
    segment = f"b{uuid.uuid4().hex[:8]}"
    count, size = MIN_RECIPIENTS, 50
    # Given a server taking 2 ms a message: a batch of 50 keeps a process busy 0.1 s
    smtp.delay = 0.002
    try:
        name = start_delivery(stack, segment, count, size)
        stack.wait_state(name, "finished", timeout=120)
    finally:
        smtp.delay = 0.0
    # Then every recipient got exactly one personalised message
    got = per_recipient(smtp, segment)
    assert len(got) == count and set(got.values()) == {1}
    logs = log_rows(stack, segment)
    assert {status for status, _ in logs.values()} == {"sent"}
    # And the delivery was cut into batches, each done once, by both pool processes
    found = batches(stack, segment)
    assert len(found) == count // size
    assert {b.state for b in found} == {"done"}
    assert sum(b.sent for b in found) == count
    owners = {b.owner for b in found}
    assert len(owners) >= 2, owners
    assert len({o.split(":")[0] for o in owners if o}) == 1  # one worker host, two pids


@pytest.mark.parametrize(("count", "size"), [(10, 10), (MIN_RECIPIENTS - 1, 100)])
def test_a_small_delivery_keeps_the_single_process_path(
    stack: Stack, smtp: SmtpServer, count: int, size: int
) -> None:
    # One batch, or many batches of fewer recipients in all than MIN_RECIPIENTS
    segment = f"s{uuid.uuid4().hex[:8]}"
    name = start_delivery(stack, segment, count, size)
    stack.wait_state(name, "finished", timeout=60)
    assert set(per_recipient(smtp, segment).values()) == {1}
    assert len(per_recipient(smtp, segment)) == count
    assert batches(stack, segment) == []


def test_a_worker_killed_mid_batch_is_replaced_and_sends_nobody_twice(
    stack: Stack, smtp: SmtpServer
) -> None:
    segment = f"k{uuid.uuid4().hex[:8]}"
    count, size = MIN_RECIPIENTS, 20
    smtp.delay = 0.01
    try:
        name = start_delivery(stack, segment, count, size)
        # When the worker is SIGKILLed while both processes send, and replaced
        wait_for(
            lambda: (
                arrived(smtp, segment) >= 100
                and sum(b.state == "running" for b in batches(stack, segment)) >= 1
            ),
            60,
            "batches to be sending",
        )
        stack.kill("w1")
        at_kill = arrived(smtp, segment)
        stack.start_worker("w1")
        stack.wait_state(name, "finished", timeout=180)
    finally:
        smtp.delay = 0.0
    assert at_kill < count
    got = per_recipient(smtp, segment)
    # Then nobody received two messages
    assert max(got.values()) == 1
    logs = log_rows(stack, segment)
    assert len(logs) == count
    assert {status for status, _ in logs.values()} <= {"sent", "unknown"}
    sent = {
        f"p{c.rsplit('-', 1)[1]}.{segment}@example.org"
        for c, (st, _) in logs.items()
        if st == "sent"
    }
    assert sent <= set(got)
    # And nobody was lost: the rows not sent are the ones in flight when the processes died
    # (one sub-batch per pool process at most)
    unknown = [c for c, (st, _) in logs.items() if st == "unknown"]
    assert len(sent) + len(unknown) == count
    assert len(unknown) <= 2 * size
    found = batches(stack, segment)
    assert {b.state for b in found} == {"done"}
    assert max(b.attempt for b in found) >= 2  # some batch was claimed again


def interrupted_mid_delivery(
    stack: Stack, smtp: SmtpServer, segment: str, command: str, state: str
) -> str:
    """A MIN_RECIPIENTS delivery in batches of 20 (the SMTP server slowed meanwhile; the
    caller restores it) gets `command` once 100 messages arrived; returns the workflow once
    it is in `state` and none of its batches is running."""
    name = start_delivery(stack, segment, MIN_RECIPIENTS, 20)
    wait_for(lambda: arrived(smtp, segment) >= 100, 60, "messages to arrive")
    stack.engine.command(None, name, command)
    stack.wait_state(name, state, timeout=30)
    # Its batches hand themselves back within a sub-batch
    wait_for(
        lambda: not any(b.state == "running" for b in batches(stack, segment)),
        30,
        "no batch to be running",
    )
    return name


def test_stopping_the_workflow_stops_its_batches(stack: Stack, smtp: SmtpServer) -> None:
    segment = f"t{uuid.uuid4().hex[:8]}"
    smtp.delay = 0.01
    try:
        # When the workflow is stopped mid-delivery
        interrupted_mid_delivery(stack, smtp, segment, "stop", "stopped")
        wait_for(stack.activity_queues_drained, 30, "the batch messages to be consumed")
    finally:
        smtp.delay = 0.0
    at_stop = arrived(smtp, segment)
    assert at_stop < MIN_RECIPIENTS
    statuses = [status for status, _ in log_rows(stack, segment).values()]
    # Then every message that arrived is logged sent, the others were never handed over
    assert statuses.count("sent") == at_stop
    assert statuses.count("pending") == MIN_RECIPIENTS - at_stop
    assert "running" not in {b.state for b in batches(stack, segment)}


def test_pausing_holds_the_batches_and_resuming_sends_the_rest_once(
    stack: Stack, smtp: SmtpServer
) -> None:
    segment = f"p{uuid.uuid4().hex[:8]}"
    smtp.delay = 0.005
    try:
        # When the workflow is paused mid-delivery
        name = interrupted_mid_delivery(stack, smtp, segment, "pause", "paused")
        at_pause = arrived(smtp, segment)
        assert at_pause < MIN_RECIPIENTS
        # Then nothing is sent while it is paused (every batch message consumed meanwhile)
        wait_for(stack.activity_queues_drained, 30, "the batch messages to be consumed")
        assert arrived(smtp, segment) == at_pause
        # And once resumed, the rest goes out and the workflow finishes
        stack.engine.command(None, name, "resume")
        stack.wait_state(name, "finished", timeout=120)
    finally:
        smtp.delay = 0.0
    got = per_recipient(smtp, segment)
    assert len(got) == MIN_RECIPIENTS and set(got.values()) == {1}
    assert {status for status, _ in log_rows(stack, segment).values()} == {"sent"}
    # Stopped claims gave their attempt back: no batch wore out
    assert max(b.attempt for b in batches(stack, segment)) <= 2
