"""The hop wire (worker.hopwire) on real PostgreSQL: a statement sent and read later, errors as
SQLAlchemy's (a lost connection an outage), a new connection after any error and after a fork."""

from __future__ import annotations

import gc
import multiprocessing
import os
import signal
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import (
    Column,
    Engine,
    Integer,
    MetaData,
    Table,
    bindparam,
    create_engine,
    literal,
    literal_column,
    select,
    text,
)
from sqlalchemy import insert as sa_insert
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError

from worker.db import make_engine
from worker.hopwire import HopWire
from worker.outage import is_outage
from worker.prepared import PreparedStatement

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

#: 100 divided by its parameter (a division by zero when it is 0).
ECHO = PreparedStatement(
    "hopwire_echo", select(literal(100, Integer) // bindparam("n", type_=Integer))
)
PID = PreparedStatement("hopwire_pid", select(text("pg_backend_pid()")))
PREPARED = PreparedStatement(
    "hopwire_names",
    select(text("string_agg(name, ',' ORDER BY name) FROM pg_prepared_statements")),
)


@pytest.fixture
def pg(pg_database: str) -> Iterator[Engine]:
    engine = make_engine(pg_database, pool_size=1, max_overflow=0)
    yield engine
    engine.dispose()


def backend_pid(wire: HopWire) -> int:
    row = wire.send(PID, {}).row()
    assert row is not None
    return int(row[0])


def test_a_statement_is_sent_at_once_and_its_row_read_later(pg: Engine) -> None:
    wire = HopWire(pg)
    pending = wire.send(ECHO, {"n": 4})
    # The process is free while PostgreSQL runs it: another connection works meanwhile.
    with pg.connect() as other:
        assert other.execute(text("SELECT 2")).scalar() == 2
    assert pending.row() == (25,)
    assert wire.send(ECHO, {"n": 5}).row() == (20,)  # prepared once, executed again
    wire.close()


def test_the_statement_is_prepared_on_the_wire_s_own_connection(pg: Engine) -> None:
    wire = HopWire(pg)
    assert wire.send(ECHO, {"n": 2}).row() == (50,)
    names = wire.send(PREPARED, {}).row()
    assert names == ("hopwire_echo,hopwire_names",)
    with pg.connect() as other:  # the pool's connections prepared nothing
        assert other.execute(text("SELECT count(*) FROM pg_prepared_statements")).scalar() == 0
    wire.close()


def test_a_percent_sign_in_a_statement_stays_one(pg: Engine) -> None:
    wire = HopWire(pg)
    percent = PreparedStatement(
        "hopwire_percent",
        select(
            literal_column("'5%'"), literal_column("'a' LIKE 'a%'"), bindparam("n", type_=Integer)
        ),
    )
    assert wire.send(percent, {"n": 3}).row() == ("5%", True, 3)
    wire.close()


def test_a_failing_statement_raises_as_sqlalchemy_would_and_is_no_outage(pg: Engine) -> None:
    wire = HopWire(pg)
    first = backend_pid(wire)
    with pytest.raises(DataError) as caught:
        wire.send(ECHO, {"n": 0}).row()
    assert "division by zero" in str(caught.value)
    assert not caught.value.connection_invalidated
    assert not is_outage(caught.value)
    # The connection was dropped with the error; the next statement opens another.
    assert backend_pid(wire) != first
    assert wire.send(ECHO, {"n": 10}).row() == (10,)
    wire.close()


def test_a_missing_parameter_is_refused_before_anything_is_sent(pg: Engine) -> None:
    wire = HopWire(pg)
    with pytest.raises(ValueError, match="no value for n"):
        wire.send(ECHO, {})
    assert wire.send(ECHO, {"n": 1}).row() == (100,)
    wire.close()


def test_a_connection_the_server_ended_is_an_outage_then_a_new_one_is_opened(pg: Engine) -> None:
    wire = HopWire(pg)
    victim = backend_pid(wire)
    with pg.connect() as admin:
        admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": victim})
        admin.commit()
    with pytest.raises(DBAPIError) as caught:
        wire.send(ECHO, {"n": 2}).row()
    assert caught.value.connection_invalidated
    assert is_outage(caught.value)
    assert backend_pid(wire) != victim  # reconnected
    wire.close()


def test_an_unreachable_server_is_an_outage(pg: Engine) -> None:
    dead = create_engine("postgresql+psycopg2://postgres@127.0.0.1:1/nowhere")
    with pytest.raises(DBAPIError) as caught:
        HopWire(dead).send(ECHO, {"n": 1})
    assert is_outage(caught.value)
    dead.dispose()


def test_a_unique_violation_comes_out_as_an_integrity_error(pg: Engine) -> None:
    with pg.begin() as conn:
        conn.execute(text("CREATE TABLE IF NOT EXISTS hopwire_item (id int PRIMARY KEY)"))
        conn.execute(text("TRUNCATE hopwire_item"))
    item = Table("hopwire_item", MetaData(), Column("id", Integer, primary_key=True))
    insert = PreparedStatement("hopwire_insert", sa_insert(item).values(id=1).returning(item.c.id))
    wire = HopWire(pg)
    assert wire.send(insert, {}).row() == (1,)  # autocommit: it stays
    with pytest.raises(IntegrityError):
        wire.send(insert, {}).row()
    with pg.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM hopwire_item")).scalar() == 1
    wire.close()


def _child_pids(wire: HopWire, queue: multiprocessing.Queue) -> None:
    wire.close()  # the parent's connection: neither closed nor left to the garbage collector
    gc.collect()
    queue.put((os.getpid(), backend_pid(wire)))


def test_a_forked_child_opens_its_own_connection_and_leaves_its_parent_s(pg: Engine) -> None:
    wire = HopWire(pg)
    parent_backend = backend_pid(wire)
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_child_pids, args=(wire, queue))
    child.start()
    child_pid, child_backend = queue.get(timeout=30)
    child.join(30)
    assert child.exitcode == 0 and child_pid != os.getpid()
    assert child_backend != parent_backend
    # The parent's connection survived the child (which never closed it).
    assert backend_pid(wire) == parent_backend
    wire.close()


def test_only_postgresql_through_psycopg2_has_a_wire() -> None:
    sqlite = create_engine("sqlite://")
    with pytest.raises(ValueError, match="psycopg2"):
        HopWire(sqlite)
    sqlite.dispose()


class _Interrupted(Exception):
    pass


def test_a_wait_interrupted_leaves_no_answer_for_the_next_statement(pg: Engine) -> None:
    """A time limit firing while the wire waits (Celery's soft limit raises from a signal):
    the answer still due must not be read as the next statement's."""
    wire = HopWire(pg)
    slow = PreparedStatement("hopwire_slow", select(text("pg_sleep(2), 7")))

    def interrupt(_signum: int, _frame: Any) -> None:
        raise _Interrupted

    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        pending = wire.send(slow, {})
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        with pytest.raises(_Interrupted):
            pending.row()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert wire.send(ECHO, {"n": 50}).row() == (2,)
    wire.close()
