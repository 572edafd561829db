"""The producer a thread keeps for its held publishes (worker.producers), on real Redis: one
producer and one connection across holds, a new one after the broker refused a flush or after
a batch was left open, one of its own in a forked child, none where the broker cannot hold a
message."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from celery import Celery

from tests.faults.servers import PrivateRedis
from tests.integration.test_follow_redis import SEQUENCE, link, queued, request
from worker.celery_app import create_celery
from worker.config import Settings
from worker.follow import Held, NextLink
from worker.producers import kept_producer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def held(app: Celery, task_id: str) -> Held:
    """What a seeded hop holds: its chain's next link, `task_id`."""
    found = NextLink(app, request(link(SEQUENCE, "b", task_id))).hold({})
    assert found is not None
    return found


def hold_and_send(app: Celery, task_id: str) -> None:
    held(app, task_id).send()


def ids(client: redis.Redis) -> list[str]:
    return [headers["id"] for headers, _ in queued(client)]


def test_one_producer_and_one_connection_serve_every_hold(
    redis_broker: tuple[Celery, redis.Redis],
) -> None:
    app, client = redis_broker

    def connections() -> int:
        return int(client.info("stats")["total_connections_received"])

    hold_and_send(app, "t-0")
    opened = connections()
    producer = kept_producer(app).acquire()  # the hold's, open: no connection made for it
    assert connections() == opened
    for index in range(1, 21):
        hold_and_send(app, f"t-{index}")
    assert kept_producer(app).acquire() is producer
    # Other clients of this Redis may connect meanwhile: far fewer than one per hold.
    assert connections() - opened < 5
    assert ids(client) == [f"t-{index}" for index in range(21)]


@pytest.fixture
def private_broker(tmp_path: Path) -> Iterator[tuple[Celery, redis.Redis]]:
    """An app on a Redis of its own, whose memory limit a test may lower (noeviction)."""
    server = PrivateRedis(tmp_path / "redis", "producers-test", appendonly=False)
    server.start()
    settings = Settings(
        home=tmp_path, database_url="sqlite://", broker_url=server.url, result_backend=server.url
    ).resolved()
    app = create_celery(settings)
    client = server.client()
    yield app, client
    app.close()
    client.close()
    server.stop()


def test_a_refused_flush_costs_the_producer_not_the_holds_after_it(
    private_broker: tuple[Celery, redis.Redis], caplog: pytest.LogCaptureFixture
) -> None:
    app, client = private_broker
    hold_and_send(app, "t-before")
    producer = kept_producer(app).acquire()
    client.config_set("maxmemory", "1")  # every write refused: OOM
    try:
        with caplog.at_level(logging.WARNING, logger="worker.follow"):
            hold_and_send(app, "t-refused")
        assert "could not publish the next tasks" in caplog.text
    finally:
        client.config_set("maxmemory", "0")
    hold_and_send(app, "t-after")
    assert kept_producer(app).acquire() is not producer  # closed, another opened
    assert ids(client) == ["t-before", "t-after"]


def test_a_batch_left_open_is_never_flushed_and_its_producer_not_reused(
    redis_broker: tuple[Celery, redis.Redis], caplog: pytest.LogCaptureFixture
) -> None:
    """A hold neither sent nor dropped (its task interrupted in between) leaves its batch open
    on the producer: kombu would nest every later batch in it, and none would go out."""
    app, client = redis_broker
    producer = kept_producer(app).acquire()
    held(app, "t-abandoned")  # on that producer
    with caplog.at_level(logging.WARNING, logger="worker.producers"):
        hold_and_send(app, "t-next")
    assert "left open" in caplog.text
    assert kept_producer(app).acquire() is not producer
    assert ids(client) == ["t-next"]


def test_a_forked_child_keeps_a_producer_of_its_own(
    redis_broker: tuple[Celery, redis.Redis],
) -> None:
    app, client = redis_broker
    hold_and_send(app, "t-parent")
    producer = kept_producer(app).acquire()
    pid = os.fork()
    if pid == 0:  # the child: its own producer, then leave at once
        code = 0
        try:
            hold_and_send(app, "t-child")
            if kept_producer(app).acquire() is producer:
                code = 2
        except BaseException:
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    hold_and_send(app, "t-parent-again")  # its connection was left alone by the child
    assert kept_producer(app).acquire() is producer
    assert ids(client) == ["t-parent", "t-child", "t-parent-again"]


def test_nothing_is_kept_where_the_broker_cannot_hold_a_message(tmp_path: Path) -> None:
    settings = Settings(
        home=tmp_path, database_url="sqlite://", broker_url="memory://", result_backend="rpc://"
    ).resolved()
    app = create_celery(settings)
    kept = kept_producer(app)
    assert kept.acquire() is None and kept.acquire() is None
    assert not kept.batches
    app.close()
