"""updateEventsStatus: copy delivery log statuses onto transactional events, incrementally.

The work is worker.event_statuses.sync_statuses; this activity keeps its pointer (the last
delivery log's lastModified, in microseconds) in technical_pointer, moved in the run's
transaction with the statuses it copied.
"""

from __future__ import annotations

import datetime as dt

from worker.activities.base import ActivityType, Context, Outcome
from worker.event_statuses import SyncPointer, sync_statuses
from worker.registry import register
from worker.technical.indicators import read_pointer, write_pointer

POINTER = "updateEventsStatus"


@register
class UpdateEventsStatus(ActivityType):
    """Maps the delivery logs of transactional events to the events' statuses."""

    name = "updateEventsStatus"
    family = "data"

    def run(self, ctx: Context) -> Outcome:
        position = read_pointer(ctx.session, POINTER)
        pointer = (
            SyncPointer(dt.datetime.fromtimestamp(position / 1_000_000, dt.UTC), 0)
            if position
            else None
        )
        report = sync_statuses(ctx.session, pointer)
        if report.pointer is not None:
            moved_to = int(report.pointer.modified.timestamp() * 1_000_000)
            write_pointer(ctx.session, POINTER, max(moved_to, position))
        ctx.log(f"{report.updated:,} event status(es) updated from their delivery logs")
        return Outcome(counts={ctx.activity.name: report.updated})
