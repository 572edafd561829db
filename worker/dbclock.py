"""The database's clock as this process sees it: its own clock plus a measured offset.

Leases, heartbeats, timers and the signal rule compare instants written by different hosts,
so they must all read one clock, the database's (RELIABILITY.md F10: a worker whose clock
runs a minute ahead would otherwise reap live tasks). Asking PostgreSQL for the time on
every hop would cost a round trip each; the offset between the two clocks changes slowly,
so it is measured once and again every `REFRESH_AFTER` seconds, and `now()` adds it to the
process clock. SQLite (the embedded default, one host) has the process clock.
"""

from __future__ import annotations

import datetime as dt
import threading
import time

from sqlalchemy import text
from sqlalchemy.orm import Session

from worker.db import utcnow

#: Seconds an offset measurement is trusted (clock slews and NTP steps are slow and rare).
REFRESH_AFTER = 30.0

_lock = threading.Lock()
#: database URL -> (offset of the database clock over ours, monotonic time measured)
_offsets: dict[str, tuple[dt.timedelta, float]] = {}


def now(session: Session) -> dt.datetime:
    """Now by the database's clock (UTC, aware), within half a round trip."""
    bind = session.get_bind()
    if bind.dialect.name != "postgresql":
        return utcnow()
    key = str(bind.engine.url)
    known = _offsets.get(key)  # no lock: one dict read is atomic, and this is every hop
    if known is None or time.monotonic() - known[1] > REFRESH_AFTER:
        known = (_measure(session), time.monotonic())
        with _lock:
            _offsets[key] = known
    return utcnow() + known[0]


def _measure(session: Session) -> dt.timedelta:
    before = utcnow()
    theirs: dt.datetime = session.execute(text("SELECT clock_timestamp()")).scalar_one()
    after = utcnow()
    ours = before + (after - before) / 2  # the query ran about halfway through
    return theirs.astimezone(dt.UTC) - ours


def forget() -> None:
    """Measure again on next use (tests that change a process's clock)."""
    with _lock:
        _offsets.clear()
