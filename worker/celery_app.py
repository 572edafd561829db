"""The Celery app: create_celery(settings), and the module-level `app` for `celery -A`."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from celery import Celery
from celery.signals import worker_process_init
from kombu import Queue

from worker.config import Settings
from worker.queues import CONTROL_QUEUE, QUEUES
from worker.technical import beat as technical

#: Seconds beat's clock may lag a worker's before beat's periodic messages reach it expired:
#: celery's `expires` is an instant on the sender's clock, so a short one (the tick's was 5 s)
#: turns a small clock skew into every tick dropped (RELIABILITY.md F10). Ticks are idempotent;
#: a backlog after an outage costs a few queries each.
CLOCK_SKEW_TOLERANCE = 300


def create_celery(settings: Settings) -> Celery:
    """A Celery app with the baseline of RELIABILITY.md: JSON only, late acks, no prefetch."""
    app = Celery("carillon", broker=settings.broker_url, backend=settings.result_backend)
    transport: dict[str, Any] = {
        "visibility_timeout": settings.visibility_timeout,
        # Messages reserved by a worker that died go back to their queue once older than the
        # visibility timeout, but kombu only looks every interval x throttle seconds (100 s by
        # default): look every few seconds instead (one sorted-set read), so they come back
        # within the timeout plus that.
        "unacked_restore_interval": max(1, min(10, settings.visibility_timeout // 5)),
        "unacked_restore_throttle": 1,
    }
    if settings.embedded_broker:
        folder = settings.broker_folder
        for sub in ("queue", "processed", "control"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        transport = {
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "processed_folder": str(folder / "processed"),
            # Broadcast (pidbox) exchanges: kombu's default is ./control in the current folder.
            "control_folder": str(folder / "control"),
            "store_processed": False,
            # Poll the folder often: the default second would dominate trigger latency.
            "polling_interval": 0.02,
        }
    if settings.embedded_broker:
        app.conf.broker_transport = "worker.fs_transport:Transport"
    elif all(url.startswith(("redis://", "rediss://")) for url in settings.broker_url.split(";")):
        # kombu's, with a kept client for publish batches (worker.redis_transport).
        app.conf.broker_transport = "worker.redis_transport:Transport"
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        event_serializer="json",
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        worker_soft_shutdown_timeout=settings.soft_shutdown_timeout,
        task_ignore_result=True,
        result_expires=timedelta(hours=6),
        broker_transport_options=transport,
        result_backend_transport_options={"visibility_timeout": settings.visibility_timeout},
        broker_connection_retry_on_startup=True,
        enable_utc=True,
        timezone="UTC",
        task_default_queue=CONTROL_QUEUE,
        task_queues=[Queue(name) for name in QUEUES],
        worker_hijack_root_logger=False,
        beat_schedule={
            "carillon-tick": {
                "task": "carillon.tick",
                "schedule": timedelta(seconds=settings.tick_seconds),
                "options": {
                    "queue": CONTROL_QUEUE,
                    "expires": max(settings.tick_seconds * 5, CLOCK_SKEW_TOLERANCE),
                },
            },
            # Safety net of transactional events: pending ones whose message was lost.
            "carillon-events-sweep": {
                "task": "carillon.sweep_events",
                "schedule": timedelta(seconds=settings.republish_seconds),
                "options": {
                    "queue": CONTROL_QUEUE,
                    "expires": max(settings.republish_seconds, CLOCK_SKEW_TOLERANCE),
                },
            },
            **(
                technical.beat_entries(settings.technical_refresh, settings.technical_every)
                if settings.technical_workflows
                else {}
            ),
        },
    )
    from worker import monitoring_workers  # noqa: F401  (its carillon_load inspect command)
    from worker.tasks import register_tasks

    register_tasks(app)
    technical.register_tasks(app)
    from worker.channels import delivery_batch

    delivery_batch.register(app)
    return app


@worker_process_init.connect
def _fresh_connections(**_: Any) -> None:
    # Prefork children must not share the parent's database connections.
    from worker import runtime

    runtime.reset_after_fork()


app = create_celery(Settings.from_env())
