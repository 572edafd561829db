"""Carillon's Redis transport (worker.redis_transport) on real Redis: which brokers get it,
publish batches on one kept client that survive a dropped connection, and every other
publish left to kombu as it was."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery

from tests.integration.conftest import REDIS_URL, count_new_clients
from worker import redis_transport
from worker.celery_app import create_celery
from worker.config import Settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

QUEUE = "carillon.flow"


def app_for(tmp_path: Path, broker_url: str) -> Celery:
    settings = Settings(
        home=tmp_path, database_url="sqlite://", broker_url=broker_url, result_backend=REDIS_URL
    ).resolved()
    return create_celery(settings)


@pytest.fixture
def broker(redis_broker: tuple[Celery, redis.Redis]) -> tuple[Celery, redis.Redis]:
    return redis_broker


def queued(client: redis.Redis) -> list[Any]:
    """The bodies waiting in QUEUE, oldest first."""
    return [
        json.loads(base64.b64decode(json.loads(raw)["body"]))
        for raw in reversed(client.lrange(QUEUE, 0, -1))
    ]


def publish_in_batch(producer: Any, body: Any) -> None:
    with producer.batch():
        producer.publish(body, routing_key=QUEUE, serializer="json")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (REDIS_URL, redis_transport.Transport),
        ("rediss://127.0.0.1:6380/0", redis_transport.Transport),
        ("redis://127.0.0.1:6379/0;redis://127.0.0.1:6380/0", redis_transport.Transport),
        ("amqp://guest@127.0.0.1//", None),
        ("sentinel://127.0.0.1:26379", None),
    ],
    ids=["redis", "rediss", "redis-failover", "amqp", "sentinel"],
)
def test_redis_brokers_and_only_they_get_the_carillon_transport(
    tmp_path: Path, url: str, expected: type | None
) -> None:
    app = app_for(tmp_path, url)
    try:
        chosen = app.connection_for_write().get_transport_cls()  # opens no connection
    finally:
        app.close()
    if expected is None:
        assert not issubclass(chosen, redis_transport.Transport)
    else:
        assert chosen is expected


def test_batches_share_one_client_and_their_messages_arrive_in_order(
    broker: tuple[Celery, redis.Redis],
) -> None:
    app, client = broker
    with app.producer_or_acquire() as producer:
        publish_in_batch(producer, {"n": 0})  # the channel's kept client is made here
        created = count_new_clients(producer.channel)
        for n in range(1, 31):
            publish_in_batch(producer, {"n": n})
        assert created[0] == 0
        # Outside a batch, kombu's own path as before: a client per publish.
        producer.publish({"n": 31}, routing_key=QUEUE, serializer="json")
        assert created[0] == 1
    assert queued(client) == [{"n": n} for n in range(32)]


def test_a_discarded_batch_pushes_nothing_and_the_next_one_goes_out(
    broker: tuple[Celery, redis.Redis],
) -> None:
    app, client = broker
    with app.producer_or_acquire() as producer:
        with pytest.raises(LookupError), producer.batch():
            producer.publish({"n": "dropped"}, routing_key=QUEUE, serializer="json")
            raise LookupError("leaves the batch by its exceptional exit: kombu discards")
        publish_in_batch(producer, {"n": "kept"})
    assert queued(client) == [{"n": "kept"}]


def test_a_kept_client_publishes_again_after_redis_dropped_its_connections(
    broker: tuple[Celery, redis.Redis],
) -> None:
    app, client = broker
    with app.producer_or_acquire() as producer:
        publish_in_batch(producer, {"n": 1})
        # Redis closes every other client's connection: the pool's idle one is dead now.
        killed = client.execute_command("CLIENT KILL TYPE normal SKIPME yes")
        assert killed >= 1
        publish_in_batch(producer, {"n": 2})
    assert queued(client) == [{"n": 1}, {"n": 2}]


def test_a_forked_child_batches_on_connections_of_its_own(
    broker: tuple[Celery, redis.Redis],
) -> None:
    """A worker's pool processes are forked after the parent may have published: the kept
    client's pool must not hand a child the parent's socket (redis-py checks the pid)."""
    import os

    app, client = broker
    with app.producer_or_acquire() as producer:
        publish_in_batch(producer, {"from": "parent"})
        pid = os.fork()
        if pid == 0:  # the child: publish through the inherited channel, then leave at once
            code = 0
            try:
                publish_in_batch(producer, {"from": "child"})
            except BaseException:
                code = 1
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        publish_in_batch(producer, {"from": "parent again"})  # its socket is still its own
    assert queued(client) == [{"from": "parent"}, {"from": "child"}, {"from": "parent again"}]


def test_a_channel_closed_after_its_connection_was_let_go_restores_what_it_delivered(
    broker: tuple[Celery, redis.Redis],
) -> None:
    """F5: when Redis goes away, Celery's consumer releases its connection and kombu may close
    a channel after the transport let go of it; restoring the unacknowledged messages read
    the gone connection's parameters, and the AttributeError stopped the worker for good."""
    app, client = broker
    with app.connection_for_read() as connection:
        channel = connection.channel()
        channel.queue_declare(queue=QUEUE)
        channel.basic_publish(channel.prepare_message("in flight"), "", QUEUE)
        assert channel.basic_get(QUEUE, no_ack=False) is not None  # delivered, not acked
        assert (client.llen(QUEUE), client.hlen("unacked")) == (0, 1)
        channel.connection.client = None  # what kombu's _do_close_transport does
        channel.close()
    # Back on its queue at once, not left to the visibility timeout.
    assert (client.llen(QUEUE), client.hlen("unacked")) == (1, 0)
