"""Telling a database outage (retry later) from a real error, and jittered backoff delays."""

from __future__ import annotations

import random

from sqlalchemy import exc as sa_exc

#: Jitter from a generator of our own: a background thread drawing from the shared
#: `random` module would change its state under anyone else (Hypothesis refuses that).
_JITTER = random.Random()

#: SQLite reports a busy database and a broken query with the same exception class: only
#: these messages are transient.
_SQLITE_TRANSIENT = ("locked", "busy", "unable to open")


def is_outage(error: BaseException) -> bool:
    """True when `error` says the database cannot be reached or is restarting, not that the
    statement is wrong: connection refused or lost, pool exhausted, server shutting down."""
    if isinstance(error, (sa_exc.DisconnectionError, sa_exc.TimeoutError)):
        return True
    if isinstance(error, sa_exc.DBAPIError):
        if error.connection_invalidated:
            return True
        if isinstance(error, (sa_exc.OperationalError, sa_exc.InterfaceError)):
            if type(error.orig).__module__.startswith("sqlite3"):
                text = str(error.orig).lower()
                return any(word in text for word in _SQLITE_TRANSIENT)
            return True
    return False


def full_jitter(retries: int, base: float, cap: float) -> float:
    """Seconds to wait before retry number `retries` (0-based): uniform in [0, min(cap,
    base * 2**retries)] ("full jitter"), so that the workers a restart hit all at once do
    not come back all at once."""
    ceiling = min(cap, base * (2 ** min(retries, 30)))
    return _JITTER.uniform(0, ceiling)  # spreading load, not a secret
