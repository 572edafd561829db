"""What a seeded hop publishes, held until its statement committed (worker.follow), on real
Redis: nothing reaches a queue while held, exactly the message Celery's chain would have sent
once released, nothing at all when dropped; and an engine hop on PostgreSQL that releases the
next link only when its statement wrote."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import redis
from celery import Celery, signature
from celery._state import _task_stack
from kombu import Exchange, Queue
from sqlalchemy import select, update

from tests.conftest import Harness
from tests.integration.conftest import count_new_clients
from worker import canvas, definitions
from worker.celery_app import create_celery
from worker.config import Settings
from worker.engine import Engine
from worker.follow import NextLink
from worker.models import Task, Workflow, new_id
from worker.sender import _routed_by_name, send_link
from worker.tasks import CeleryDispatcher

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

SEQUENCE = definitions.parse(
    {
        "id": "followSequence",
        "activities": [
            {"name": "start1", "type": "start", "transitions": {"done": "a"}},
            {"name": "a", "type": "noop", "transitions": {"done": "b"}},
            {"name": "b", "type": "noop", "transitions": {"done": "end1"}},
            {"name": "end1", "type": "end"},
        ],
    }
)
FORKING = definitions.parse(
    {
        "id": "followFork",
        "activities": [
            {"name": "start1", "type": "start", "transitions": {"done": "fork1"}},
            {"name": "fork1", "type": "fork", "transitions": {"done": ["a1", "b1"]}},
            {"name": "a1", "type": "noop", "transitions": {"done": "end1"}},
            {"name": "b1", "type": "noop", "transitions": {"done": "end2"}},
            {"name": "end1", "type": "end"},
            {"name": "end2", "type": "end"},
        ],
    }
)
#: Where run_activity messages of noop and end activities go (worker.canvas.queue_for).
QUEUE = canvas.queue_for(SEQUENCE, "a")


@pytest.fixture
def broker(redis_broker: tuple[Celery, redis.Redis]) -> tuple[Celery, redis.Redis]:
    return redis_broker


def link(definition: Any, activity: str, task_id: str) -> dict[str, Any]:
    """A chain link as Celery keeps it in a running task's request (a plain dict)."""
    return json.loads(json.dumps(canvas.link(definition, activity, task_id, {})))


def request(*chain: dict[str, Any]) -> SimpleNamespace:
    return SimpleNamespace(
        id=new_id(), root_id="root-1", chain=list(chain) or None, delivery_info={}
    )


def queued(client: redis.Redis, queue: str = QUEUE) -> list[tuple[dict[str, Any], Any]]:
    """(headers, body) of the messages waiting in `queue`, oldest first."""
    found = []
    for raw in reversed(client.lrange(queue, 0, -1)):
        envelope = json.loads(raw)
        body = json.loads(base64.b64decode(envelope["body"]))
        found.append((envelope["headers"], body))
    return found


SEED = {
    "workflow_id": 7,
    "version": 1,
    "job_id": "job-1",
    "activity": "b",
    "vars": {"k": 1},
    "counts": {},
    "inputs": None,
}


def test_the_next_link_is_held_until_sent_then_is_what_celery_would_send(
    broker: tuple[Celery, redis.Redis],
) -> None:
    app, client = broker
    later, following = link(SEQUENCE, "end1", "t-later"), link(SEQUENCE, "b", "t-next")
    running = request(later, following)
    held = NextLink(app, running).hold({"t-next": SEED})
    assert held is not None and not held.segments
    assert queued(client) == []  # built, not pushed
    assert running.chain == [later, following]  # untouched until sent
    held.send()
    ((headers, (args, kwargs, embed)),) = queued(client)
    assert headers["id"] == "t-next" and headers["task"] == canvas.RUN_ACTIVITY
    assert (headers["parent_id"], headers["root_id"]) == (running.id, "root-1")
    assert args == ["t-next", {}] and kwargs == {"seed": SEED}
    assert "'k'" not in headers["kwargsrepr"]  # what Flower shows: never the vars
    assert embed["chain"] == [later]  # the rest of the chain rides along, as Celery's does
    assert running.chain is None  # Celery must not publish the link again


def test_a_dropped_link_is_never_pushed_and_the_chain_stays(
    broker: tuple[Celery, redis.Redis],
) -> None:
    app, client = broker
    following = link(SEQUENCE, "b", "t-next")
    running = request(following)
    held = NextLink(app, running).hold({"t-next": SEED})
    assert held is not None
    held.drop()
    assert queued(client) == []
    assert running.chain == [following] and "seed" not in following["kwargs"]
    # A link published afterwards goes out alone: the dropped one did not linger in a batch.
    canvas.publish([canvas.link(SEQUENCE, "a", "t-other")])
    assert [headers["id"] for headers, _ in queued(client)] == ["t-other"]


def test_dropping_keeps_the_broker_connection_for_the_next_publish(
    broker: tuple[Celery, redis.Redis],
) -> None:
    """A drop is no broker error: leaving the pooled producer with an exception made kombu
    open a new connection (and declare the queues again) for every publish after it."""
    app, client = broker
    canvas.publish([canvas.link(SEQUENCE, "a", "t-warm")])  # the pool's connection is open
    opened = client.info("stats")["total_connections_received"]
    for index in range(20):
        held = NextLink(app, request(link(SEQUENCE, "b", f"t-{index}"))).hold({})
        assert held is not None
        held.drop()
        canvas.publish([canvas.link(SEQUENCE, "a", f"t-after-{index}")])
    # 20 drops and 20 publishes on the connections already open (other clients of this
    # Redis may connect meanwhile: far fewer than one per drop).
    assert client.info("stats")["total_connections_received"] - opened < 10
    assert len(queued(client)) == 21


@pytest.mark.parametrize(
    "chain",
    [
        [],
        [{"task": "other.task", "args": ["x"], "kwargs": {}, "options": {}}],
        [dict(canvas.compile_segment(FORKING, "fork1", "t-fork", new_id).tasks[-1])],
        ["junk"],
    ],
    ids=["no-chain", "other-task", "chord-or-group", "junk"],
)
def test_with_nothing_to_hold_nothing_is_built(
    broker: tuple[Celery, redis.Redis], chain: list[Any]
) -> None:
    app, client = broker
    running = request(*chain)
    before = json.dumps(running.chain)
    assert NextLink(app, running).hold({"x": SEED}) is None
    assert json.dumps(running.chain) == before
    assert client.keys("carillon.*") == []


def test_new_segments_are_held_with_the_link_and_pushed_together(
    broker: tuple[Celery, redis.Redis],
) -> None:
    app, client = broker
    running = request()  # the last link of its segment: no chain left
    seed = {**SEED, "activity": "a"}
    held = NextLink(app, running).hold({"t-a": seed}, [(SEQUENCE, "a", "t-a")])
    assert held is not None and held.segments
    assert queued(client) == []
    held.send()
    ((headers, (_args, kwargs, embed)),) = queued(client)
    assert headers["id"] == "t-a" and kwargs == {"seed": seed}
    # The segment goes on to b then end1 (ids chosen now; the next link last, as Celery
    # keeps them), unseeded, as the engine's own publish sends it.
    assert [list(step["args"][1]) for step in embed["chain"]] == [[], ["end1"]]
    assert [step["kwargs"] for step in embed["chain"]] == [{}, {}]


def test_a_segment_that_forks_is_left_to_the_engine(broker: tuple[Celery, redis.Redis]) -> None:
    app, client = broker
    forking = [(FORKING, "fork1", "t-fork")]
    assert NextLink(app, request()).hold({}, forking) is None
    following = link(SEQUENCE, "b", "t-next")
    held = NextLink(app, request(following)).hold({}, forking)
    assert held is not None and not held.segments  # the link alone is held
    held.send()
    assert [headers["id"] for headers, _ in queued(client)] == ["t-next"]
    assert sum(client.llen(key) for key in client.keys("carillon.*")) == 1


def test_a_broker_that_cannot_hold_a_message_gets_nothing_early(tmp_path: Path) -> None:
    settings = Settings(
        home=tmp_path,
        database_url="sqlite://",
        broker_url="memory://",
        result_backend="cache+memory://",
    ).resolved()
    app = create_celery(settings)

    def waiting() -> int:
        # kombu's memory broker is one per process: other tests' messages may be there.
        with app.connection_for_read() as connection:
            declared = connection.default_channel.queue_declare(queue=QUEUE, passive=False)
            return int(declared.message_count)

    before = waiting()
    following = link(SEQUENCE, "b", "t-next")
    running = request(following)
    assert NextLink(app, running).hold({"t-next": SEED}, [(SEQUENCE, "a", "t-a")]) is None
    assert running.chain == [following]
    assert waiting() == before
    app.close()


def test_the_dispatcher_sends_a_commits_segments_in_one_batch_on_the_kept_client(
    broker: tuple[Celery, redis.Redis],
) -> None:
    app, client = broker
    dispatcher = CeleryDispatcher(app)
    dispatcher.dispatch(SEQUENCE, [("a", "t-warm")])  # the channel's kept client is made
    client.delete(QUEUE)
    with app.producer_or_acquire() as producer:  # the pool's one producer, as dispatch's
        channel = producer.channel
    created = count_new_clients(channel)
    seed = {**SEED, "activity": "a"}
    dispatcher.dispatch(SEQUENCE, [("a", "t-a"), ("end1", "t-end")], {"t-a": seed})
    assert created[0] == 0  # kombu would have built one client per message
    (a_headers, (_, a_kwargs, a_embed)), (end_headers, (_, end_kwargs, _)) = queued(client)
    assert (a_headers["id"], end_headers["id"]) == ("t-a", "t-end")
    assert a_kwargs == {"seed": seed} and end_kwargs == {}
    # a's segment goes on to b then end1 (the next link last, as Celery keeps them).
    assert [list(step["args"][1]) for step in a_embed["chain"]] == [[], ["end1"]]


def test_a_batched_link_skips_the_queue_declaration_it_does_not_need(
    broker: tuple[Celery, redis.Redis],
) -> None:
    """Into a batch on Redis a link goes out undeclared (worker.sender): it still lands on
    its queue, where a declaration would only have recorded a binding; outside a batch,
    Celery declares the queue as before. (Fresh connections: kombu remembers what a pooled
    one declared, across apps of one process.)"""
    app, client = broker
    bindings = "_kombu.binding.*"
    with app.connection_for_write() as connection:
        producer = app.amqp.Producer(connection)
        with producer.batch():
            send_link(app, canvas.link(SEQUENCE, "a", "t-a"), producer, batched=True)
    assert client.keys(bindings) == []
    assert [headers["id"] for headers, _ in queued(client)] == ["t-a"]
    client.delete(QUEUE)
    with app.connection_for_write() as connection:
        send_link(app, canvas.link(SEQUENCE, "a", "t-plain"), app.amqp.Producer(connection))
    assert client.keys(bindings) != []
    assert [headers["id"] for headers, _ in queued(client)] == ["t-plain"]


def test_only_a_direct_queue_on_redis_is_routed_by_name(broker: tuple[Celery, redis.Redis]) -> None:
    app, _ = broker
    app.amqp.queues.add(Queue("carillon.topical", Exchange("topical", type="topic"), "x.#"))
    with app.producer_or_acquire() as producer:
        assert _routed_by_name(app, QUEUE, producer)
        assert not _routed_by_name(app, "carillon.topical", producer)  # bindings route it
        assert not _routed_by_name(app, "carillon.unknown", producer)


def envelope(client: redis.Redis) -> dict[str, Any]:
    """The one message waiting in QUEUE, taken off it, its body decoded and its delivery tag
    (new for each publish) left out."""
    keys = client.keys(f"{QUEUE}*")  # a priority has a list of its own (kombu's Redis)
    ((raw),) = [message for key in keys for message in client.lrange(key, 0, -1)]
    client.delete(*keys)
    found = json.loads(raw)
    found["body"] = json.loads(base64.b64decode(found["body"]))
    del found["properties"]["delivery_tag"]
    return dict(found)


def test_a_segment_is_sent_as_the_very_message_celerys_apply_async_sends(
    broker: tuple[Celery, redis.Redis],
) -> None:
    app, client = broker
    app.set_current()
    ids = iter(["t-b", "t-end"])
    links = canvas.segment_links(SEQUENCE, "a", "t-a", lambda: next(ids), SEED)
    canvas.publish(links)
    ours = envelope(client)
    links[0].apply_async(chain=links[1:][::-1])  # what publish did before worker.sender
    assert ours == envelope(client)
    assert ours["body"][1] == {"seed": SEED} and len(ours["body"][2]["chain"]) == 2


@pytest.mark.parametrize("priority", [None, 3])
def test_a_held_link_is_the_very_message_celerys_apply_async_sends(
    broker: tuple[Celery, redis.Redis], priority: int | None
) -> None:
    app, client = broker
    later, following = link(SEQUENCE, "end1", "t-later"), link(SEQUENCE, "b", "t-next")
    running = request(later, following)
    running.delivery_info = {"priority": priority}
    app.conf.task_inherit_parent_priority = priority is not None
    held = NextLink(app, running).hold({"t-next": SEED})
    assert held is not None
    held.send()
    ours = envelope(client)
    signature(canvas.seeded_link(following, {"t-next": SEED}), app=app).apply_async(
        chain=[later], parent_id=running.id, root_id="root-1", priority=priority
    )
    assert ours == envelope(client)
    assert ours["properties"]["priority"] == (priority or 0)


def test_sent_from_within_a_task_a_link_descends_from_it_as_with_apply_async(
    broker: tuple[Celery, redis.Redis],
) -> None:
    """Published by a running task (the dispatcher after a usual claim, the tick), a message
    takes the task as its parent and root, as send_task does (its priority too, which Celery
    does not inherit there: the task's own options already say None)."""
    app, client = broker
    app.set_current()
    app.conf.task_inherit_parent_priority = True
    task = app.tasks[canvas.RUN_ACTIVITY]
    task.push_request(
        id="running-1", root_id="root-1", delivery_info={"priority": 4}, called_directly=False
    )
    _task_stack.push(task)
    try:
        single = [canvas.link(SEQUENCE, "end1", "t-end")]
        canvas.publish(single)
        ours = envelope(client)
        single[0].apply_async()
        assert ours == envelope(client)
    finally:
        _task_stack.pop()
        task.pop_request()
    assert (ours["headers"]["parent_id"], ours["headers"]["root_id"]) == ("running-1", "root-1")


def test_a_link_with_a_delay_goes_through_apply_async(broker: tuple[Celery, redis.Redis]) -> None:
    """What only apply_async's upper layers handle (here a countdown) is left to them."""
    app, client = broker
    delayed = {**link(SEQUENCE, "b", "t-later")}
    delayed["options"] = {**delayed["options"], "countdown": 60}
    send_link(app, delayed, None)
    assert envelope(client)["headers"]["eta"] is not None


# ----------------------------------------------------------------- through the engine


@pytest.fixture
def hop_engine(
    pg_harness: Harness, broker: tuple[Celery, redis.Redis]
) -> Iterator[tuple[Harness, Engine, Celery, redis.Redis]]:
    app, client = broker
    engine = Engine(
        pg_harness.settings, pg_harness.sessions, CeleryDispatcher(app), worker_name="follow"
    )
    yield pg_harness, engine, app, client


def started_chain(h: Harness) -> tuple[str, dict[str, Any]]:
    """A started start1 -> a -> b -> end1 workflow whose start1 ran: (a's id, its seed)."""
    body = {
        "id": f"follow{uuid.uuid4().hex[:10]}",
        "activities": [
            {"name": "start1", "type": "start", "transitions": {"done": "a"}},
            {"name": "a", "type": "noop", "transitions": {"done": "b"}},
            {"name": "b", "type": "noop", "transitions": {"done": "end1"}},
            {"name": "end1", "type": "end"},
        ],
    }
    name = h.start(body, org=f"org{uuid.uuid4().hex[:8]}")
    h.stub.queue.clear()
    with h.sessions() as s:
        start_id = s.scalar(select(Task.id).join(Workflow).where(Workflow.name == name))
    a = new_id()
    result = h.engine.run(start_id, {"a": a})
    assert result.continue_chain
    return a, result.seeds[a]


class Watching(NextLink):
    """A NextLink that records how many messages were queued right after it built its own."""

    def __init__(self, app: Celery, running: Any, client: redis.Redis) -> None:
        super().__init__(app, running)
        self.client = client
        self.seen: list[int] = []

    def hold(self, seeds: Any, segments: Any = ()) -> Any:
        held = super().hold(seeds, segments)
        self.seen.append(len(queued(self.client)))
        return held


def test_an_engine_hop_releases_the_next_link_once_its_statement_wrote(
    hop_engine: tuple[Harness, Engine, Celery, redis.Redis],
) -> None:
    h, engine, app, client = hop_engine
    a, seed = started_chain(h)
    b = new_id()
    running = request(link(SEQUENCE, "end1", new_id()), link(SEQUENCE, "b", b))
    watching = Watching(app, running, client)
    result = engine.run(a, {"b": b}, seed, watching)
    assert result.status == "done" and result.continue_chain
    assert watching.seen == [0]  # built while the statement ran, not pushed
    ((headers, (_args, kwargs, _)),) = queued(client)
    assert headers["id"] == b and kwargs["seed"] == result.seeds[b]
    assert running.chain is None
    with h.sessions() as s:
        assert s.get(Task, a).state == "done"
        assert s.get(Task, b).state == "pending"


def test_a_hop_that_wrote_nothing_drops_what_it_held(
    hop_engine: tuple[Harness, Engine, Celery, redis.Redis],
) -> None:
    h, engine, app, client = hop_engine
    a, seed = started_chain(h)
    with h.sessions() as s, s.begin():  # the workflow was paused since the seed was sent
        workflow_id = s.scalar(select(Task.workflow_id).where(Task.id == a))
        s.execute(update(Workflow).where(Workflow.id == workflow_id).values(state="paused"))
    b = new_id()
    following = link(SEQUENCE, "b", b)
    running = request(following)
    watching = Watching(app, running, client)
    result = engine.run(a, {"b": b}, seed, watching)
    assert watching.seen == [0]  # it was built...
    assert queued(client) == []  # ...and dropped: the usual path decided instead
    assert not result.continue_chain and running.chain == [following]
    with h.sessions() as s:
        assert s.get(Task, a).state == "held"
        assert s.get(Task, b) is None
