"""Publish a run_activity link through Celery's own message builder and sender (app.amqp).

`Signature.apply_async` goes through `Task.apply_async` and `Celery.send_task` before Celery
builds the message (`app.amqp.create_task_message`) and sends it (`send_task_message`, which
also fires the before/after_task_publish signals). For the engine's links those upper layers
decide nothing: the queue and task id are set, there is no eta, countdown or expiry, and no
result is kept; yet they cost ~50 us of a ~280 us publish (routing an explicit queue again,
merging options, an AsyncResult per call), on every hop. `send_link` calls the two lower
functions with what the upper layers would have passed them: the message is the same, byte
for byte but its delivery tag (tests/integration/test_follow_redis.py compares them). Any
link they would treat otherwise goes through `apply_async` as before.

Into a Redis publish batch (`batched`: worker.follow and the dispatcher), a link also goes out
without its queue's declaration and retry policy, which do nothing there (see send_link).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from celery import Celery, signature
from kombu.transport import redis

#: Options that make apply_async do more than build and send (delays, expiry, a kept result,
#: routing by exchange): a link carrying any of them takes the whole path.
_UPPER_LAYER_OPTIONS = frozenset({"countdown", "eta", "expires", "exchange", "routing_key"})


def send_link(
    app: Celery,
    link: Mapping[str, Any],
    producer: Any,
    *,
    chain: list[Any] | None = None,
    parent_id: str | None = None,
    root_id: str | None = None,
    priority: int | None = None,
    batched: bool = False,
) -> None:
    """Publish `link` (a Signature or its dict) through `producer`, as
    `signature(link).apply_async(chain=..., parent_id=..., root_id=..., priority=...,
    producer=producer)` would.

    `batched`: `producer` is inside a publish batch (kombu's `Producer.batch`), which only
    buffers the push until its flush."""
    name = link["task"]
    task = app.tasks.get(name)
    # As Task.apply_async: the task's execution options under the link's own (they always
    # hold a priority, None unless set: send_task's inheritance of the parent's never applies).
    options = {**task._get_exec_options(), **link.get("options", {})} if task else {}
    if (
        task is None  # not registered in this app: sent by name, as apply_async does
        or not options.setdefault("ignore_result", task.ignore_result)
        or "task_id" not in options
        or "queue" not in options
        or any(options.get(key) is not None for key in _UPPER_LAYER_OPTIONS)
        or app.conf.task_always_eager
    ):
        signature(dict(link), app=app).apply_async(
            chain=chain, parent_id=parent_id, root_id=root_id, priority=priority, producer=producer
        )
        return
    if priority is not None:
        options["priority"] = priority
    if not root_id or not parent_id:
        # As send_task: published from within a task, the message descends from it.
        parent = app.current_worker_task
        if parent is not None:
            root_id = root_id or parent.request.root_id or parent.request.id
            parent_id = parent_id or parent.request.id
    # send_task's own parameters: taken here, not passed on to the message's properties.
    task_id = options.pop("task_id")
    ignore_result = options.pop("ignore_result")
    time_limit = options.pop("time_limit", None)
    soft_time_limit = options.pop("soft_time_limit", None)
    for key in _UPPER_LAYER_OPTIONS:
        options.pop(key, None)
    message = app.amqp.create_task_message(
        task_id,
        name,
        link.get("args") or (),
        link.get("kwargs") or {},
        reply_to=app.thread_oid,
        time_limit=time_limit,
        soft_time_limit=soft_time_limit,
        create_sent_event=app.conf.task_send_sent_event,
        root_id=root_id,
        parent_id=parent_id,
        chain=chain,
        ignore_result=ignore_result,
        **options,
    )
    if batched and _routed_by_name(app, options["queue"], producer):
        # Celery sends a direct queue's message through the anonymous exchange, which on
        # Redis pushes it to the list of that name, declared or not (a declaration only
        # records a binding); and a buffered publish does no I/O that a retry could repeat:
        # the flush's failure is its caller's to handle. Celery's declaration (a copy of the
        # queue bound to the channel, then a cache lookup) and retry wrapper cost ~40 us of
        # a ~150 us build.
        options["declare"], options["retry"] = [], False
    app.amqp.send_task_message(producer, name, message, **options)


def _routed_by_name(app: Celery, queue: Any, producer: Any) -> bool:
    """Whether a message for `queue` goes to the Redis list of its name, whatever is declared:
    a direct queue (Celery then uses the anonymous exchange) on kombu's Redis transport."""
    if not isinstance(producer.channel, redis.Channel):
        return False
    found = app.amqp.queues.get(queue) if isinstance(queue, str) else queue
    return found is not None and found.exchange is not None and found.exchange.type == "direct"
