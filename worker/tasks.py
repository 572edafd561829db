"""Thin Celery tasks (run an activity, apply commands, tick) and the Celery dispatcher."""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery, Task

from worker import canvas
from worker.definitions import Definition
from worker.models import new_id
from worker.queues import CONTROL_QUEUE

#: Transactional events are deliveries: they go where the channel activities go.
EVENTS_QUEUE = "carillon.channel"

log = logging.getLogger(__name__)


class CeleryDispatcher:
    """Publishes canvas segments compiled from the graph; called after commit."""

    def __init__(self, app: Celery) -> None:
        self.app = app

    def dispatch(self, definition: Definition, rows: list[tuple[str, str]]) -> None:
        # Signatures resolve their app lazily through the current app: make it ours.
        self.app.set_current()
        for activity, task_id in rows:
            segment = canvas.compile_segment(definition, activity, task_id, new_id)
            segment.apply_async()

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
    def run_activity(self: Task, task_id: str, chained: dict[str, str] | None = None) -> str:
        from worker import runtime

        result = runtime.engine().run(task_id, chained or {})
        if not result.continue_chain:
            # The database decided otherwise (held, failed, another outlet): stop the chain.
            self.request.chain = None
        return result.status

    @app.task(name="carillon.apply_commands", ignore_result=True, shared=False)
    def apply_commands(workflow_id: int) -> int:
        from worker import runtime

        return len(runtime.engine().apply_commands(workflow_id))

    @app.task(name="carillon.tick", ignore_result=True, shared=False)
    def tick() -> dict[str, Any]:
        from worker import runtime

        report = runtime.engine().tick()
        if any(report.values()):
            log.info("tick: %s", report)
        return report

    @app.task(
        name="carillon.process_events",
        acks_late=True,
        shared=False,
        reject_on_worker_lost=True,
        ignore_result=True,
    )
    def process_events(event_ids: list[int] | None = None) -> dict[str, int]:
        # A redelivered message is harmless: only `pending` events are claimed, and a log
        # already written is never sent again.
        from worker import events, runtime

        outcome = events.process(runtime.sessions(), runtime.settings(), event_ids)
        return dict(outcome.statuses)

    @app.task(name="carillon.sweep_events", ignore_result=True, shared=False)
    def sweep_events() -> dict[str, int]:
        """Safety net: publish pending events again, close sends whose worker died."""
        from worker import events, runtime

        current = runtime.settings()
        report = events.sweep(
            runtime.sessions(),
            pending_after=current.republish_seconds,
            processing_after=current.lease_seconds,
        )
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
