"""Thin Celery tasks (run an activity, apply commands, tick) and the Celery dispatcher."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from contextlib import nullcontext
from typing import Any

from celery import Celery, Task

from worker import canvas
from worker.definitions import Definition
from worker.follow import NextLink
from worker.models import new_id
from worker.outage import full_jitter, is_outage
from worker.producers import can_batch
from worker.queues import CONTROL_QUEUE

#: Transactional events are deliveries: they go where the channel activities go.
EVENTS_QUEUE = "carillon.channel"

log = logging.getLogger(__name__)

#: Retries of a task the database dropped (claim, completion) before the tick's republisher
#: and the reaper take over; with DB_RETRY_CAP, about a minute of outage at most.
DB_RETRIES = 6
#: First backoff step and largest backoff, seconds (also kept under a tenth of the
#: visibility timeout: a countdown near it would be redelivered while still waiting).
DB_RETRY_BASE = 0.5
DB_RETRY_CAP = 30.0
#: Until when (monotonic) this process says nothing more about ticks the database refused.
_quiet_until = [0.0]


def outage_countdown(retries: int, visibility_timeout: int) -> float:
    """Seconds before retry number `retries` of a task the database dropped (full jitter)."""
    return full_jitter(retries, DB_RETRY_BASE, min(DB_RETRY_CAP, visibility_timeout / 10))


def _skipped(what: str, exc: Exception) -> None:
    """Say (at most every 10 s per process) that a periodic task met a database outage."""
    now = time.monotonic()
    if now >= _quiet_until[0]:
        _quiet_until[0] = now + 10
        log.warning("%s skipped: database unavailable (%s)", what, type(exc).__name__)


def _retry_or_defer(task: Task, exc: Exception, what: str) -> str:
    """Retry `task` later with backoff and jitter, or give up once DB_RETRIES are spent (the
    tick republishes pending work, the reaper re-runs abandoned work)."""
    from worker import runtime

    retries = int(task.request.retries or 0)
    if retries >= DB_RETRIES:
        log.warning("%s: database unavailable after %d retries; left to the tick", what, retries)
        return "deferred"
    countdown = outage_countdown(retries, runtime.settings().visibility_timeout)
    log.warning(
        "%s: database unavailable (%s); retry %d/%d in %.1fs",
        what,
        type(exc).__name__,
        retries + 1,
        DB_RETRIES,
        countdown,
    )
    raise task.retry(exc=exc, countdown=countdown, max_retries=DB_RETRIES)


class CeleryDispatcher:
    """Publishes canvas segments compiled from the graph; called after commit."""

    def __init__(self, app: Celery) -> None:
        self.app = app

    def dispatch(
        self,
        definition: Definition,
        rows: list[tuple[str, str]],
        seeds: Mapping[str, dict[str, Any]] | None = None,
    ) -> None:
        # Signatures resolve their app lazily through the current app: make it ours.
        self.app.set_current()
        segments = [
            canvas.segment_links(definition, activity, task_id, new_id, (seeds or {}).get(task_id))
            for activity, task_id in rows
        ]
        # In one publish batch where the broker has them (Redis): one round trip for all the
        # segments, on the client the channel keeps (worker.redis_transport).
        with self.app.producer_or_acquire() as producer:
            batched = can_batch(producer)
            with producer.batch() if batched else nullcontext():
                for links in segments:
                    canvas.publish(links, producer, batched=batched)

    def apply_commands(self, workflow_id: int) -> None:
        self.app.send_task("carillon.apply_commands", args=(workflow_id,), queue=CONTROL_QUEUE)

    def process_events(self, event_ids: list[int]) -> None:
        """Ask a worker to deliver these pending transactional events (worker.events)."""
        self.app.send_task("carillon.process_events", args=(event_ids,), queue=EVENTS_QUEUE)


def queue_depth(app: Celery, queue: str) -> int | None:
    """Messages waiting in `queue`, or None when the broker cannot say (never declared)."""
    try:
        with app.connection_for_read() as connection:
            declared = connection.default_channel.queue_declare(queue=queue, passive=True)
            return int(declared.message_count)
    except Exception:  # an undeclared queue, an unreachable broker: unknown, not an error
        return None


def register_tasks(app: Celery) -> None:
    """Bind the three tasks to `app` (called by create_celery)."""

    @app.task(
        name="carillon.run_activity",
        bind=True,
        acks_late=True,
        shared=False,
        reject_on_worker_lost=True,
        ignore_result=True,
    )
    def run_activity(
        self: Task,
        task_id: str,
        chained: dict[str, str] | None = None,
        seed: dict[str, Any] | None = None,
    ) -> str:
        from worker import runtime

        # What a seeded hop publishes, built while its statement runs (worker.follow).
        follow = NextLink(self.app, self.request)
        try:
            result = runtime.engine().run(task_id, chained or {}, seed, follow)
        except Exception as exc:
            if not is_outage(exc):
                raise
            # A retried message carries the chain on; a deferred one must not go on with it.
            outcome = _retry_or_defer(self, exc, f"task {task_id}")
            self.request.chain = None
            return outcome
        if not result.continue_chain:
            # The database decided otherwise (held, failed, another outlet): stop the chain.
            self.request.chain = None
        elif result.seeds:
            canvas.seed_next(self.request.chain, result.seeds)
        return result.status

    @app.task(name="carillon.apply_commands", bind=True, ignore_result=True, shared=False)
    def apply_commands(self: Task, workflow_id: int) -> int | str:
        from worker import runtime

        try:
            return len(runtime.engine().apply_commands(workflow_id))
        except Exception as exc:
            if not is_outage(exc):
                raise
            return _retry_or_defer(self, exc, f"commands of workflow {workflow_id}")

    @app.task(name="carillon.tick", ignore_result=True, shared=False)
    def tick() -> dict[str, Any]:
        from worker import runtime

        try:
            report = runtime.engine().tick()
        except Exception as exc:
            if not is_outage(exc):
                raise
            # The next tick comes anyway: no retry, a line (every 10 s) instead of a traceback.
            _skipped("tick", exc)
            return {"skipped": 1}
        if any(report.values()):
            log.info("tick: %s", report)
        return report

    @app.task(
        name="carillon.process_events",
        bind=True,
        acks_late=True,
        shared=False,
        reject_on_worker_lost=True,
        ignore_result=True,
    )
    def process_events(self: Task, event_ids: list[int] | None = None) -> dict[str, int] | str:
        # A redelivered message is harmless: only `pending` events are claimed, and a log
        # already written is never sent again.
        from worker import events, runtime

        try:
            outcome = events.process(runtime.sessions(), runtime.settings(), event_ids)
        except Exception as exc:
            if not is_outage(exc):
                raise
            return _retry_or_defer(self, exc, "events")  # deferred: the sweep republishes
        return dict(outcome.statuses)

    @app.task(name="carillon.sweep_events", ignore_result=True, shared=False)
    def sweep_events() -> dict[str, int]:
        """Safety net: publish pending events again, close sends whose worker died."""
        from worker import events, runtime

        current = runtime.settings()
        try:
            report = events.sweep(
                runtime.sessions(),
                pending_after=current.republish_seconds,
                processing_after=current.lease_seconds,
            )
        except Exception as exc:
            if not is_outage(exc):
                raise
            _skipped("events sweep", exc)
            return {"republished": 0, "abandoned": 0}
        for start in range(0, len(report.republish), events.BATCH):
            app.send_task(
                "carillon.process_events",
                args=(report.republish[start : start + events.BATCH],),
                queue=EVENTS_QUEUE,
            )
        if report.republish or report.abandoned:
            log.info(
                "events sweep: %d republished, %d abandoned sends closed",
                len(report.republish),
                report.abandoned,
            )
        return {"republished": len(report.republish), "abandoned": report.abandoned}
