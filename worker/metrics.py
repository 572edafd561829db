"""Prometheus metrics read from the database at scrape time, so every API process agrees.

Nothing is counted in process memory: figures come from the tables (tasks, triggers,
deliveries) and from `metric_counter` rows for what leaves no row of its own (refused
triggers). Any number of gunicorn processes, on any number of hosts, report the same
figures, and a restart loses nothing.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeHistogramMetricFamily,
    GaugeMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from worker.db import utcnow
from worker.messaging import delivery, delivery_log
from worker.models import MetricCounter, Organization, Task, Trigger, Workflow

#: Upper bounds (seconds) of the activity-duration buckets.
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
#: Durations are those of the tasks finished within this window before the scrape.
DURATION_WINDOW = dt.timedelta(hours=1)
#: Counter names kept in `metric_counter`.
TRIGGERS_REFUSED = "triggers_refused"


def increment(s: Session, name: str, label: str, by: int = 1) -> None:
    """Add `by` to a database counter, creating it at its first use (one upsert)."""
    dialect = s.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
    stmt = insert(MetricCounter).values(name=name, label=label[:64], value=by)
    s.execute(
        stmt.on_conflict_do_update(
            index_elements=[MetricCounter.name, MetricCounter.label],
            set_={"value": MetricCounter.value + by},
        )
    )


def counters(s: Session, name: str) -> dict[str, int]:
    stmt = select(MetricCounter.label, MetricCounter.value).where(MetricCounter.name == name)
    return {label: value for label, value in s.execute(stmt)}


def durations(s: Session, now: dt.datetime | None = None) -> dict[str, tuple[list[int], float]]:
    """Per activity type: cumulative bucket counts (last one +Inf) and the sum of seconds of
    the tasks that finished within DURATION_WINDOW (ix_task_finished)."""
    since = (now or utcnow()) - DURATION_WINDOW
    found: dict[str, tuple[list[int], float]] = {}
    for activity_type, started, finished in s.execute(
        select(Task.activity_type, Task.started_at, Task.finished_at).where(
            Task.finished_at >= since, Task.started_at.is_not(None)
        )
    ):
        if finished is None or started is None:
            continue
        seconds = max(0.0, (finished - started).total_seconds())
        buckets, total = found.get(activity_type, ([0] * (len(DURATION_BUCKETS) + 1), 0.0))
        for index, bound in enumerate(DURATION_BUCKETS):
            if seconds <= bound:
                buckets[index] += 1
        buckets[-1] += 1
        found[activity_type] = (buckets, total + seconds)
    return found


def families(
    s: Session, depths: dict[str, int | None] | None = None, now: dt.datetime | None = None
) -> list[Metric]:
    """Every metric, read now."""
    workflows = GaugeMetricFamily(
        "carillon_workflows", "Workflows by organization and state", labels=["org", "state"]
    )
    for org, state, number in s.execute(
        select(Organization.name, Workflow.state, func.count())
        .join(Workflow, Workflow.org_id == Organization.id)
        .group_by(Organization.name, Workflow.state)
    ):
        workflows.add_metric([org, state], number)
    tasks = GaugeMetricFamily(
        "carillon_tasks", "Tasks by state and activity type", labels=["state", "type"]
    )
    for state, activity_type, number in s.execute(
        select(Task.state, Task.activity_type, func.count()).group_by(
            Task.state, Task.activity_type
        )
    ):
        tasks.add_metric([state, activity_type], number)
    histogram = GaugeHistogramMetricFamily(
        "carillon_activity_duration_seconds",
        f"Run time of the activities finished in the last {int(DURATION_WINDOW.total_seconds())} s",
        labels=["type"],
    )
    for activity_type, (buckets, total) in sorted(durations(s, now).items()):
        bounds = [*(str(bound) for bound in DURATION_BUCKETS), "+Inf"]
        histogram.add_metric([activity_type], list(zip(bounds, buckets, strict=True)), total)
    accepted = CounterMetricFamily(
        "carillon_triggers",
        "External-signal triggers recorded, by state (accepted, queued while paused, dropped)",
        labels=["state"],
    )
    for state, number in s.execute(select(Trigger.state, func.count()).group_by(Trigger.state)):
        accepted.add_metric([state], number)
    refused = CounterMetricFamily(
        "carillon_triggers_refused",
        "Trigger requests answered with a 4xx (bad parameters, not started, too many...)",
        labels=["status"],
    )
    for status, number in sorted(counters(s, TRIGGERS_REFUSED).items()):
        refused.add_metric([status], number)
    deliveries = CounterMetricFamily(
        "carillon_deliveries_messages",
        "Messages of deliveries by channel and status (sent, failed, pending...)",
        labels=["channel", "status"],
    )
    for channel, status, number in s.execute(
        select(delivery.c.channel, delivery_log.c.status, func.count())
        .join(delivery, delivery.c.id == delivery_log.c.deliveryId)
        .group_by(delivery.c.channel, delivery_log.c.status)
    ):
        deliveries.add_metric([channel, status], number)
    found: list[Metric] = [workflows, tasks, histogram, accepted, refused, deliveries]
    if depths is not None:
        queue = GaugeMetricFamily(
            "carillon_queue_depth", "Messages waiting in each Celery queue", labels=["queue"]
        )
        for name, depth in depths.items():
            if depth is not None:  # unknown (broker down, other transport): no sample
                queue.add_metric([name], depth)
        found.append(queue)
    return found


class DatabaseCollector(Collector):
    """A prometheus_client collector reading `families` at scrape time, cached for
    `cache_seconds` so that scrapes arriving together cost one read."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        depths: Callable[[], dict[str, int | None]] | None = None,
        cache_seconds: float = 5.0,
    ) -> None:
        self.sessions = sessions
        self.depths = depths
        self.cache_seconds = cache_seconds
        self._lock = threading.Lock()
        self._cached: tuple[float, list[Metric]] | None = None

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            now = time.monotonic()
            if self._cached is None or now - self._cached[0] >= self.cache_seconds:
                depths = self.depths() if self.depths is not None else None
                with self.sessions() as s:
                    self._cached = (now, families(s, depths))
            found = self._cached[1]
        yield from found

    def describe(self) -> list[Any]:
        return []  # metrics are read at collect time only (no read at registration)
