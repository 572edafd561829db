"""The database's clock seen from a process whose own clock is wrong (F10), on PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import libfaketime
import pytest
from sqlalchemy import text

from worker import dbclock
from worker.db import make_engine, make_session_factory, utcnow

ROOT = Path(__file__).resolve().parents[2]

# Run in a child whose clock libfaketime moves: prints its clock, dbclock's and the database's.
PROBE = """
import json, sys
from sqlalchemy import text
from worker import dbclock
from worker.db import make_engine, make_session_factory, utcnow
sessions = make_session_factory(make_engine(sys.argv[1]))
with sessions() as s:
    seen = dbclock.now(s)
    again = dbclock.now(s)  # from the cached offset, no query
    theirs = s.execute(text("SELECT clock_timestamp()")).scalar_one()
print(json.dumps({"own": utcnow().isoformat(), "dbclock": seen.isoformat(),
                  "again": again.isoformat(), "database": theirs.isoformat()}))
"""


def skewed_probe(database_url: str, offset: str) -> dict[str, dt.datetime]:
    _, preload = libfaketime.get_reload_information()
    env = {**os.environ, **preload, "FAKETIME": offset}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, database_url],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return {k: dt.datetime.fromisoformat(v) for k, v in json.loads(done.stdout).items()}


@pytest.mark.parametrize("offset", ["+60s", "-90s"])
def test_a_process_with_a_skewed_clock_reads_the_database_clock(
    pg_database: str, offset: str
) -> None:
    seen = skewed_probe(pg_database, offset)
    skew = (seen["own"] - seen["database"]).total_seconds()
    # Given a process whose clock is off by a minute or more (libfaketime really moved it)
    assert abs(skew - float(offset[:-1])) < 5, seen
    # Then dbclock gives the database's time, measured and from the cached offset
    assert abs((seen["dbclock"] - seen["database"]).total_seconds()) < 2, seen
    assert abs((seen["again"] - seen["database"]).total_seconds()) < 2, seen


def test_on_postgresql_now_is_the_database_clock(pg_database: str) -> None:
    dbclock.forget()
    sessions = make_session_factory(make_engine(pg_database))
    with sessions() as s:
        ours = dbclock.now(s)
        theirs = s.execute(text("SELECT clock_timestamp()")).scalar_one()
    assert ours.tzinfo is not None
    assert abs((theirs - ours).total_seconds()) < 1


def test_on_sqlite_now_is_the_process_clock(tmp_path: Path) -> None:
    sessions = make_session_factory(make_engine(f"sqlite:///{tmp_path / 'clock.sqlite'}"))
    before = utcnow()
    with sessions() as s:
        seen = dbclock.now(s)
    assert before <= seen <= utcnow()
