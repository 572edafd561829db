"""Worker entry for benchmarks: Carillon's Celery app plus a raw no-op task as the baseline."""

from __future__ import annotations

from worker.celery_app import app

__all__ = ["app", "raw_noop"]


@app.task(name="bench.raw_noop", shared=False)
def raw_noop() -> None:
    """The cheapest Celery task: the baseline a Carillon activity is compared with."""
