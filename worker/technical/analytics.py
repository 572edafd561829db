"""kpiSharing and kpiReconciliation: delivery KPIs pushed to, and reconciled with, analytics.

The analytics connector is HTTP (CARILLON_ANALYTICS_URL: `POST <url>/kpis` with
`{"records": [...]}` and an Idempotency-Key, `GET <url>/kpis?deliveryId=1,2` answering
`{"records": [...]}`) or, by default, a local JSON-lines file that plays the same part.

kpiSharing sends the indicators of deliveries changed since its pointer; the pointer moves in
the run's transaction after the push, so a crash in between sends the same records again with
the same Idempotency-Key (at least once, deduplicated by the sink), never skips any.
kpiReconciliation asks the connector what it holds and sends what differs from our figures.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from worker.activities.base import ActivityType, Context, Outcome
from worker.config import Settings
from worker.errors import ActivityError
from worker.messaging import delivery
from worker.registry import register
from worker.technical import http
from worker.technical.indicators import SETTLE, read_pointer, write_pointer

#: Records per request: bounded bodies whatever the backlog.
BATCH = 500


class AnalyticsConnector(Protocol):
    def push(self, records: Sequence[Mapping[str, Any]], key: str) -> None: ...

    def fetch(self, delivery_ids: Sequence[int]) -> dict[int, dict[str, Any]]: ...


class FileAnalytics:
    """The local default: one JSON line per pushed batch; the last record of a delivery wins."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def push(self, records: Sequence[Mapping[str, Any]], key: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as out:
            out.write(json.dumps({"key": key, "records": list(records)}) + "\n")

    def fetch(self, delivery_ids: Sequence[int]) -> dict[int, dict[str, Any]]:
        wanted, found = set(delivery_ids), {}
        if self.path.exists():
            with self.path.open(encoding="utf-8") as lines:
                for line in lines:
                    for record in json.loads(line)["records"]:
                        if record["deliveryId"] in wanted:
                            found[record["deliveryId"]] = record
        return found


class HttpAnalytics:
    """The connector over HTTP(S); the URL is the operator's configuration, not user input."""

    def __init__(self, base_url: str) -> None:
        self.base_url = http.checked_base_url(base_url, "CARILLON_ANALYTICS_URL")

    def push(self, records: Sequence[Mapping[str, Any]], key: str) -> None:
        body = json.dumps({"records": list(records)}).encode()
        http.call(
            urllib.request.Request(
                f"{self.base_url}/kpis",
                data=body,
                method="POST",
                headers={"Content-Type": "application/json", "Idempotency-Key": key},
            ),
            "analytics connector",
        )

    def fetch(self, delivery_ids: Sequence[int]) -> dict[int, dict[str, Any]]:
        query = urllib.parse.urlencode({"deliveryId": ",".join(map(str, delivery_ids))})
        raw = http.call(
            urllib.request.Request(f"{self.base_url}/kpis?{query}"), "analytics connector"
        )
        try:
            records = json.loads(raw)["records"]
            return {int(r["deliveryId"]): dict(r) for r in records if isinstance(r, dict)}
        except (ValueError, KeyError, TypeError) as exc:
            raise ActivityError(f"analytics connector answer unreadable: {exc}") from None


def connector_for(settings: Settings) -> AnalyticsConnector:
    if settings.analytics_url:
        return HttpAnalytics(settings.analytics_url)
    return FileAnalytics(Path(settings.home) / "analytics" / "kpis.jsonl")


def _record(row: Any) -> dict[str, Any]:
    return {
        "deliveryId": row.id,
        "orgId": row.org_id,
        "channel": row.channel,
        "name": row.name,
        "indicators": dict(row.indicators or {}),
    }


def _batches(items: list[Any], size: int) -> Iterable[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _key(kind: str, records: Sequence[Mapping[str, Any]]) -> str:
    digest = hashlib.sha256(json.dumps(records, sort_keys=True).encode()).hexdigest()
    return f"{kind}-{digest[:32]}"


def share(s: Session, connector: AnalyticsConnector, name: str = "kpiSharing") -> int:
    """Push the indicators of deliveries changed since the pointer; returns records sent."""
    since_us = read_pointer(s, name)
    # Re-read a settling margin: a delivery updated by a transaction that committed late must
    # not fall behind the pointer. Resending unchanged figures is harmless to the sink.
    since = dt.datetime.fromtimestamp(since_us / 1_000_000, dt.UTC) - SETTLE
    rows = s.execute(
        select(
            delivery.c.id,
            delivery.c.org_id,
            delivery.c.channel,
            delivery.c.name,
            delivery.c.indicators,
            delivery.c.lastModified,
        )
        .where(delivery.c.lastModified > since)
        .order_by(delivery.c.lastModified, delivery.c.id)
    ).all()
    changed = [row for row in rows if row.indicators]
    for batch in _batches(changed, BATCH):
        records = [_record(row) for row in batch]
        connector.push(records, _key("share", records))
    if rows:
        write_pointer(s, name, int(rows[-1].lastModified.timestamp() * 1_000_000))
    return len(changed)


def reconcile(s: Session, connector: AnalyticsConnector) -> tuple[int, int]:
    """Compare every delivery with indicators to the connector; send the differing ones."""
    rows = s.execute(
        select(
            delivery.c.id,
            delivery.c.org_id,
            delivery.c.channel,
            delivery.c.name,
            delivery.c.indicators,
        ).order_by(delivery.c.id)
    ).all()
    ours = [row for row in rows if row.indicators]
    checked = sent = 0
    for batch in _batches(ours, BATCH):
        theirs = connector.fetch([row.id for row in batch])
        differing = [
            _record(row)
            for row in batch
            if theirs.get(row.id, {}).get("indicators") != dict(row.indicators)
        ]
        checked += len(batch)
        if differing:
            connector.push(differing, _key("reconcile", differing))
            sent += len(differing)
    return checked, sent


@register
class KpiSharing(ActivityType):
    """Sends the delivery KPIs that changed since the last run to the analytics connector."""

    name = "kpiSharing"
    family = "data"

    def run(self, ctx: Context) -> Outcome:
        sent = share(ctx.session, connector_for(ctx.settings))
        ctx.log(f"{sent:,} delivery KPI record(s) shared with analytics")
        return Outcome(counts={ctx.activity.name: sent})


@register
class KpiReconciliation(ActivityType):
    """Reconciles the delivery KPIs with what the analytics connector holds."""

    name = "kpiReconciliation"
    family = "data"

    def run(self, ctx: Context) -> Outcome:
        checked, sent = reconcile(ctx.session, connector_for(ctx.settings))
        ctx.log(f"{checked:,} delivery KPI record(s) checked, {sent:,} difference(s) sent")
        return Outcome(counts={ctx.activity.name: sent})
