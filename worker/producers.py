"""The producer each thread of a process keeps for the messages its seeded hops hold.

Every seeded hop holds its next message in a publish batch (worker.follow). Taking a producer
from Celery's pool for it, then giving it back, cost ~25 us of a ~100 us build on every hop:
kombu's pool unbinds a producer from its channel when it comes back and binds it again (a
channel promise, a copy of the exchange) when it goes out. A thread that keeps a producer of
its own, on a connection of its own, binds it once.

A kept producer is its thread's alone (a worker's pool runs tasks on threads or in forked
processes: a child never takes its parent's). One that met an error is closed and forgotten:
the next hop opens another, as kombu's pool replaces a connection that failed. Where the
broker cannot hold a message (its channels do not buffer publishes: all but Redis) nothing
is kept: the first try finds it out and closes the connection it opened.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from celery import Celery

log = logging.getLogger(__name__)


class _Dropped(Exception):
    """Leaves a publish batch by its exceptional exit: kombu then discards what it holds."""


class KeptProducer:
    """A producer kept across publish batches, opened on first use, with at most one batch
    open on it (its publishes held until the batch is closed)."""

    def __init__(self, app: Celery) -> None:
        self.app = app
        self.pid = os.getpid()
        #: False once the broker turned out not to buffer publishes.
        self.batches = True
        self._producer: Any = None
        #: The open batch (entered), if any.
        self._batch: Any = None

    def acquire(self) -> Any | None:
        """The kept producer, or None where the broker cannot hold a message; raises what
        connecting to the broker raised."""
        if self._batch is not None:
            # Left open (its task interrupted between hold and send): kombu would nest every
            # later batch in it and none would go out, so the producer is not used again.
            log.warning("a publish batch was left open; its producer is closed")
            self.discard()
        if self._producer is None and self.batches:
            producer = self.app.amqp.Producer(self.app.connection_for_write())
            try:
                self.batches = can_batch(producer)  # binds the channel: connects
            except BaseException:
                _close(producer)
                raise
            if self.batches:
                self._producer = producer
            else:
                _close(producer)
        return self._producer

    def open_batch(self) -> None:
        """Open a publish batch on the acquired producer: what goes through it is held."""
        batch = self._producer.batch()
        batch.__enter__()
        self._batch = batch

    def close_batch(self, *, flush: bool) -> None:
        """Push what the open batch holds (`flush`), or discard it; nothing when none is open.
        A flush that fails closes the producer (its connection may be broken: the next
        acquire opens another) and raises; a discard cannot fail."""
        batch, self._batch = self._batch, None
        if batch is None:
            return
        if flush:
            try:
                batch.__exit__(None, None, None)  # a normal exit flushes the batch
            except BaseException:
                self.discard()
                raise
            return
        try:
            batch.__exit__(_Dropped, _Dropped(), None)
        except Exception:  # discarding held pushes cannot fail the caller
            log.debug("discarding a publish batch failed", exc_info=True)

    def discard(self) -> None:
        """Close the producer's connection (it met an error); the next acquire opens another."""
        producer, self._producer, self._batch = self._producer, None, None
        if producer is not None and self.pid == os.getpid():  # a parent's is the parent's
            _close(producer)


def kept_producer(app: Celery) -> KeptProducer:
    """This thread's kept producer on `app`'s broker (a new one in a forked child)."""
    local: threading.local = app.__dict__.setdefault("_carillon_kept_producers", threading.local())
    kept: KeptProducer | None = getattr(local, "kept", None)
    if kept is None or kept.pid != os.getpid():
        kept = local.kept = KeptProducer(app)
    return kept


def can_batch(producer: Any) -> bool:
    """Whether `producer`'s channel buffers publishes in a batch (kombu >= 5.7, Redis)."""
    channel = producer.channel
    return (
        hasattr(producer, "batch")
        and getattr(channel, "create_publish_batch", None) is not None
        and bool(getattr(channel, "supports_batch_publish", True))
    )


def _close(producer: Any) -> None:
    try:
        producer.connection.close()
    except Exception:  # closing a broken connection cannot fail the caller
        log.debug("closing a kept producer's connection failed", exc_info=True)
