"""What a seeded hop publishes (next link, new segments), built while its statement runs.

When a run_activity task returns, Celery publishes its chain's next link itself: it builds and
serialises the message, then pushes it to the broker. For a seeded hop (worker.hop) the engine
does that earlier, in the time PostgreSQL takes to run the hop's statement (worker.hopwire):
the message is built into a kombu publish batch, which holds the broker's push until the
batch is flushed, and the batch is flushed only once the statement has committed, or dropped
if it wrote nothing. State first, then enqueue, as before; the building no longer waits.

Only a broker whose channel buffers publishes (kombu's Redis transport) can hold a message:
elsewhere a publish goes out at once, so nothing is built early and Celery goes on as usual.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from celery import Celery

from worker import canvas
from worker.definitions import Definition
from worker.models import new_id
from worker.producers import KeptProducer, kept_producer
from worker.sender import send_link

log = logging.getLogger(__name__)


class NextLink:
    """What the run_activity task whose `request` this is publishes once its hop committed:
    its chain's next link, and new segments where its chain ends (worker.canvas)."""

    def __init__(self, app: Celery, request: Any) -> None:
        self.app = app
        self.request = request

    def hold(
        self,
        seeds: Mapping[str, dict[str, Any]],
        segments: Sequence[tuple[Definition, str, str]] = (),
    ) -> Held | None:
        """Build and hold the chain's next link (with its seed, if any) and a new segment for
        each (definition, activity, task id) of `segments`; None when there is nothing to
        hold: no next link and no segment, or a broker that cannot hold a message (the next
        link is then published after the task, as Celery does, and the segments after the
        commit, as the engine does). Segments that fork are not held (Held.segments False)."""
        remaining = self.request.chain
        following = canvas.seeded_link(remaining[-1], seeds) if remaining else None
        if following is None and not segments:
            return None
        kept = kept_producer(self.app)
        try:
            producer = kept.acquire()
        except Exception:  # the broker is unreachable: Celery and the engine will say so
            log.debug("no producer to hold what %s publishes", self.request.id, exc_info=True)
            return None
        if producer is None:  # the broker cannot hold a message
            return None
        try:
            compiled = [
                canvas.segment_links(definition, activity, task_id, new_id, seeds.get(task_id))
                for definition, activity, task_id in segments
            ]
            if any(canvas.forks(links) for links in compiled):
                compiled = []  # a group's members go out through their own producers
            if following is None and not compiled:
                return None
            kept.open_batch()
            if compiled:
                self.app.set_current()  # segment links resolve their app through it
            if following is not None:
                self._publish_next(following, remaining[:-1], producer)
            for links in compiled:
                canvas.publish(links, producer, batched=True)
        except Exception:
            # Nothing left: Celery publishes the link after the task, and the engine the
            # segments after the commit, as they would have. The producer may be broken:
            # the next hop opens another.
            kept.close_batch(flush=False)
            kept.discard()
            log.debug("could not hold what %s publishes", self.request.id, exc_info=True)
            return None
        link_of = self.request if following is not None else None
        return Held(link_of, kept, bool(compiled))

    def _publish_next(self, following: dict[str, Any], rest: list[Any], producer: Any) -> None:
        """Publish the chain's next link as Celery's tracer does once a task returns."""
        priority = None
        if self.app.conf.task_inherit_parent_priority:
            priority = (self.request.delivery_info or {}).get("priority")
        send_link(
            self.app,
            following,
            producer,
            chain=rest,
            parent_id=self.request.id,
            root_id=self.request.root_id or self.request.id,
            priority=priority,
            batched=True,
        )


class Held:
    """Messages built and held until the state they follow from committed."""

    def __init__(self, request: Any, kept: KeptProducer, segments: bool) -> None:
        #: The task request whose chain's next link is held (None: no link held).
        self._request = request
        #: The producer whose open batch holds the messages.
        self._kept = kept
        #: Whether the segments asked for are held (the engine must not publish them again).
        self.segments = segments

    def send(self) -> None:
        """Push the messages to the broker; the task's chain is then done with (Celery must
        not publish its link again). A broker that refuses them delays the successors, whose
        rows are committed: the tick publishes pending tasks again."""
        if self._request is not None:
            self._request.chain = None
        try:
            self._kept.close_batch(flush=True)
        except Exception as exc:
            log.warning("could not publish the next tasks; the tick will: %s", exc)

    def drop(self) -> None:
        """Discard the messages; the task's chain stays as it was. The producer and its
        connection stay (a drop is no broker error)."""
        self._kept.close_batch(flush=False)
