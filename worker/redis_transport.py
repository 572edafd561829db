"""kombu's Redis transport: publish batches on a client each channel keeps, and unacknowledged
messages restored when a channel closes after its connection was let go.

kombu builds a new redis-py client for every publish and every batch (Channel.conn_or_acquire):
about 50 us of CPU each (redis-py fills a table of some 170 reply parsers per client), on every
seeded hop's next message (worker.follow publishes through a batch). The connection itself
comes from the channel's pool either way: a kept client only spares that construction.

Only batches take the kept client; everything else (Celery's own publishes, acks, the
consumer) goes through kombu unchanged. A redis-py client holds no connection between
commands, so one that met an error is as good as new, and after a fork its pool opens new
connections in the child (redis-py checks the process id).

When the broker goes away, Celery's consumer releases its connection, and kombu (5.7) may
close a channel after the transport has let go of the connection: restoring the messages
that channel had delivered but not acknowledged then needs a new pool, whose parameters
kombu reads from the connection that is gone. It raised AttributeError, which Celery takes
for an unrecoverable error: the worker stopped consuming for good (fault F5, a Redis restart,
about one run in two on a 2-core machine). Each channel keeps the parameters it connected
with, so the restore goes ahead, or fails as a connection error Celery recovers from.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import redis


class Channel(redis.Channel):
    #: The client this channel's publish batches share (created with the first batch).
    _batch_client: Any = None
    #: True while a publish batch is being created: conn_or_acquire then lends the kept client.
    _lending = False

    def create_publish_batch(self, max_size: int) -> Any:
        if self._batch_client is None:
            self._batch_client = self._create_client()
        self._lending = True
        try:
            return super().create_publish_batch(max_size)
        finally:
            self._lending = False

    def _connparams(self, asynchronous: bool = False) -> Any:
        known: dict[bool, Any] = self.__dict__.setdefault("_known_connparams", {})
        if self.connection.client is None and asynchronous in known:
            return dict(known[asynchronous])  # the connection is gone; its parameters are not
        params = super()._connparams(asynchronous)
        known[asynchronous] = dict(params)
        return params

    def conn_or_acquire(self, client: Any = None) -> Any:
        # kombu's context manager as it is (no wrapper: every ack and publish comes here).
        if client is None and self._lending:
            client = self._batch_client
        return super().conn_or_acquire(client)


class Transport(redis.Transport):
    Channel = Channel
