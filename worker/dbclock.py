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
import weakref

from sqlalchemy import Connection, Engine, text
from sqlalchemy.orm import Session

from worker.db import utcnow

#: Seconds an offset measurement is trusted (clock slews and NTP steps are slow and rare).
REFRESH_AFTER = 30.0
#: Round trips per measurement; the quickest one is kept.
SAMPLES = 3

_lock = threading.Lock()
#: database engine -> (offset of the database clock over ours, monotonic time measured);
#: keyed by the engine object (hashing its URL renders it as a string, on every hop).
_offsets: weakref.WeakKeyDictionary[Engine, tuple[dt.timedelta, float]] = (
    weakref.WeakKeyDictionary()
)


def now(session: Session | Connection | Engine) -> dt.datetime:
    """Now by the database's clock (UTC, aware), within half a round trip (an Engine source
    checks a connection out only when the offset must be measured)."""
    bind = session.get_bind() if isinstance(session, Session) else session.engine
    if bind.dialect.name != "postgresql":
        return utcnow()
    key = bind.engine
    known = _offsets.get(key)  # no lock: one dict read is atomic, and this is every hop
    if known is None or time.monotonic() - known[1] > REFRESH_AFTER:
        if isinstance(session, Engine):
            with session.connect() as connection:
                known = (_measure(connection), time.monotonic())
        else:
            known = (_measure(session), time.monotonic())
        with _lock:
            _offsets[key] = known
    return utcnow() + known[0]


def _measure(session: Session | Connection) -> dt.timedelta:
    """The offset read by the quickest of SAMPLES round trips: its error is at most half the
    round trip, and the first query of a new connection can take milliseconds (the started_at
    of quick tasks was seen after their finished_at, on one host, from such a reading)."""
    best: tuple[dt.timedelta, dt.timedelta] | None = None
    for _ in range(SAMPLES):
        before = utcnow()
        theirs: dt.datetime = session.execute(text("SELECT clock_timestamp()")).scalar_one()
        after = utcnow()
        ours = before + (after - before) / 2  # the query ran about halfway through
        if best is None or after - before < best[0]:
            best = (after - before, theirs.astimezone(dt.UTC) - ours)
    assert best is not None
    return best[1]


def forget() -> None:
    """Measure again on next use (tests that change a process's clock)."""
    with _lock:
        _offsets.clear()
