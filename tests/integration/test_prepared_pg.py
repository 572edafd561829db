"""Server-side prepared statements (worker.prepared) on real PostgreSQL, and their fallback."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from sqlalchemy import (
    JSON,
    Column,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    bindparam,
    func,
    insert,
    select,
    text,
)
from sqlalchemy.exc import DBAPIError, IntegrityError

from tests.integration.statements import Statements
from worker.db import UTCDateTime, make_engine
from worker.outage import is_outage
from worker.prepared import PreparedStatement, forget

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

METADATA = MetaData()
ITEM = Table(
    "prepared_item",
    METADATA,
    Column("id", Integer, primary_key=True),
    Column("label", String(64)),
    Column("body", JSON),
    Column("at", UTCDateTime()),
)
SELECT_ONE = select(ITEM.c.id, ITEM.c.label, ITEM.c.body, ITEM.c.at).where(
    ITEM.c.id == bindparam("item_id")
)
INSERT_ONE = insert(ITEM).values(
    id=bindparam("id"),
    label=bindparam("label"),
    body=bindparam("body", type_=JSON),
    at=bindparam("at", type_=UTCDateTime()),
)


@pytest.fixture
def pg(pg_database: str) -> Iterator[Engine]:
    engine = make_engine(pg_database, pool_size=1, max_overflow=0)
    METADATA.drop_all(engine)
    METADATA.create_all(engine)
    try:
        yield engine
    finally:
        METADATA.drop_all(engine)
        engine.dispose()


def prepared_names(engine: Engine) -> list[str]:
    with engine.connect() as connection:  # pool_size=1: the connection the statements used
        return list(connection.scalars(text("SELECT name FROM pg_prepared_statements")))


def test_rows_are_those_of_the_plain_statement(pg: Engine) -> None:
    """Values go in processed as SQLAlchemy would (JSON serialised, UTC checked) and come
    back the same: JSON parsed, datetimes aware in UTC."""
    at = dt.datetime(2026, 3, 29, 1, 30, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    body = {"n": 1, "nested": [True, None, "é"]}
    insert_item = PreparedStatement("test_insert_item", INSERT_ONE)
    select_item = PreparedStatement("test_select_item", SELECT_ONE)
    with pg.begin() as connection:
        insert_item.execute(connection, {"id": 1, "label": "one", "body": body, "at": at})
        mine = select_item.execute(connection, {"item_id": 1}).first()
        plain = connection.execute(SELECT_ONE, {"item_id": 1}).first()
    assert mine is not None and plain is not None
    assert tuple(mine) == tuple(plain) == (1, "one", body, at)
    assert mine.at.tzinfo == dt.UTC and mine.label == "one"
    assert sorted(prepared_names(pg)) == ["test_insert_item", "test_select_item"]


def test_prepared_once_per_connection_even_across_a_rollback(pg: Engine) -> None:
    statement = PreparedStatement("test_select_once", SELECT_ONE)
    with Statements(pg) as seen:
        connection = pg.connect()
        with connection.begin() as transaction:
            assert statement.execute(connection, {"item_id": 7}).first() is None
            transaction.rollback()  # PREPARE is not transactional: it stays
        with connection.begin():
            assert statement.execute(connection, {"item_id": 7}).first() is None
        connection.close()
        with pg.connect() as again:  # the same pooled connection, checked out again
            assert statement.execute(again, {"item_id": 7}).first() is None
    assert [s.split(" ", 1)[0] for s in seen.sent] == ["PREPARE", "EXECUTE", "EXECUTE", "EXECUTE"]


def test_a_statement_without_parameters(pg: Engine) -> None:
    statement = PreparedStatement("test_count", select(func.count()).select_from(ITEM))
    with pg.connect() as connection:
        assert statement.execute(connection, {}).one() == (0,)


def test_a_new_connection_prepares_again(pg: Engine) -> None:
    statement = PreparedStatement("test_select_renewed", SELECT_ONE)
    with pg.connect() as connection:
        statement.execute(connection, {"item_id": 1})
        connection.invalidate()  # as after a PostgreSQL restart: the pool opens another
    with Statements(pg) as seen, pg.connect() as connection:
        statement.execute(connection, {"item_id": 1})
    assert [s.split(" ", 1)[0] for s in seen.sent] == ["PREPARE", "EXECUTE"]


def test_deallocated_behind_its_back_fails_once_then_prepares_again(pg: Engine) -> None:
    """A pooler's DISCARD ALL drops prepared statements: that transaction fails with the
    database's error, the next one prepares again (CARILLON_PREPARED_STATEMENTS=0 avoids it).
    psycopg2 reports it as an OperationalError, which the engine retries as an outage."""
    statement = PreparedStatement("test_select_discarded", SELECT_ONE)
    with pg.connect() as connection:
        statement.execute(connection, {"item_id": 1})
        connection.commit()
        connection.exec_driver_sql("DEALLOCATE ALL")
        connection.commit()
        with pytest.raises(DBAPIError, match="test_select_discarded") as failed:
            statement.execute(connection, {"item_id": 1})
        assert is_outage(failed.value)
        connection.rollback()
        assert statement.execute(connection, {"item_id": 1}).first() is None
        forget(connection)
        connection.commit()
        assert list(connection.scalars(text("SELECT name FROM pg_prepared_statements"))) == []


@pytest.mark.parametrize(
    "label",
    [
        "'; DROP TABLE prepared_item; --",
        "$1 %s %(id)s %% \\ \x01 ' \" ",
        "x" * 1_000_000,
    ],
    ids=["injection", "placeholders", "one-megabyte"],
)
def test_hostile_and_huge_values_round_trip_verbatim(pg: Engine, label: str) -> None:
    insert_item = PreparedStatement("test_insert_hostile", INSERT_ONE)
    select_item = PreparedStatement("test_select_hostile", SELECT_ONE)
    with pg.begin() as connection:
        insert_item.execute(
            connection, {"id": 2, "label": label[:64], "body": {"label": label}, "at": None}
        )
        row = select_item.execute(connection, {"item_id": 2}).one()
    assert row.label == label[:64] and row.body == {"label": label} and row.at is None
    with pg.connect() as connection:
        assert connection.scalar(text("SELECT count(*) FROM prepared_item")) == 1


def test_a_missing_value_is_refused_before_anything_is_sent(pg: Engine) -> None:
    statement = PreparedStatement("test_select_missing", SELECT_ONE)
    with (
        Statements(pg) as seen,
        pg.connect() as connection,
        pytest.raises(ValueError, match="test_select_missing: no value for item_id"),
    ):
        statement.execute(connection, {"other": 1})
    assert seen.sent == []


def test_an_expanding_in_cannot_be_prepared(pg: Engine) -> None:
    statement = PreparedStatement("test_expanding", select(ITEM.c.id).where(ITEM.c.id.in_([1, 2])))
    with pg.connect() as connection, pytest.raises(ValueError, match="expanding"):
        statement.execute(connection, {})


@pytest.mark.parametrize("name", ["", "Upper", "has space", "x;DROP", "a" * 64, "1abc"])
def test_names_that_are_not_plain_identifiers_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="not a usable statement name"):
        PreparedStatement(name, SELECT_ONE)


def test_disabled_or_on_sqlite_it_is_the_plain_statement(pg: Engine, tmp_path: Path) -> None:
    statement = PreparedStatement("test_select_plain", SELECT_ONE)
    with Statements(pg) as seen, pg.connect() as connection:
        assert statement.execute(connection, {"item_id": 3}, enabled=False).first() is None
    assert len(seen.sent) == 1 and seen.sent[0].startswith("SELECT")
    lite = make_engine(f"sqlite:///{tmp_path / 'plain.sqlite'}")
    METADATA.create_all(lite)
    at = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    with Statements(lite) as seen, lite.begin() as connection:
        PreparedStatement("test_insert_lite", INSERT_ONE).execute(
            connection, {"id": 3, "label": "lite", "body": [1], "at": at}
        )
        row = statement.execute(connection, {"item_id": 3}).first()
    assert row is not None and tuple(row) == (3, "lite", [1], at)
    assert not any(s.startswith(("PREPARE", "EXECUTE")) for s in seen.sent)
    lite.dispose()


def run_both_ways(pg: Engine, statement: PreparedStatement, params: dict[str, Any]) -> list[Any]:
    """The statement's first row run on the driver's cursor (nothing listens to the engine),
    then through SQLAlchemy's execution (a cursor listener), in one transaction each."""
    rows = []
    for listening in (False, True):
        with contextlib.ExitStack() as stack:
            seen = stack.enter_context(Statements(pg)) if listening else None
            with pg.begin() as connection:
                rows.append(statement.execute(connection, params).first())
            assert seen is None or [s.split(" ", 1)[0] for s in seen.sent] == ["EXECUTE"]
    return rows


def test_on_the_cursor_or_through_sqlalchemy_the_rows_are_the_same(pg: Engine) -> None:
    at = dt.datetime(2026, 5, 1, 12, tzinfo=dt.UTC)
    with pg.begin() as connection:
        connection.execute(INSERT_ONE, {"id": 5, "label": "five", "body": {"k": [1]}, "at": at})
    direct, through = run_both_ways(
        pg, PreparedStatement("test_select_ways", SELECT_ONE), {"item_id": 5}
    )
    assert tuple(direct) == tuple(through) == (5, "five", {"k": [1]}, at)
    assert direct._fields == through._fields == ("id", "label", "body", "at")
    assert direct.at.tzinfo == dt.UTC
    empty = run_both_ways(pg, PreparedStatement("test_select_none", SELECT_ONE), {"item_id": 404})
    assert empty == [None, None]


def test_a_write_on_the_cursor_commits_and_rolls_back_with_its_connection(pg: Engine) -> None:
    """The driver's cursor runs in the SQLAlchemy connection's transaction (begun for it, as
    SQLAlchemy's autobegin would): commit() keeps a row, rollback() drops it."""
    insert_item = PreparedStatement("test_insert_tx", INSERT_ONE)

    def insert(item_id: int, label: str) -> None:
        insert_item.execute(connection, {"id": item_id, "label": label, "body": None, "at": None})
        assert connection.in_transaction()

    with pg.connect() as connection:
        insert(8, "kept")  # prepares first (through SQLAlchemy)
        connection.commit()
        insert(9, "kept too")  # prepared already: only the cursor runs
        connection.commit()
        insert(10, "dropped")
        connection.rollback()
    with pg.connect() as connection:
        labels = connection.scalars(text("SELECT label FROM prepared_item ORDER BY id"))
        assert list(labels) == ["kept", "kept too"]


def test_errors_on_the_cursor_are_sqlalchemy_errors(pg: Engine) -> None:
    """A refused statement raises SQLAlchemy's exception (its driver error as .orig), not an
    outage; the connection stays usable once rolled back."""
    insert_item = PreparedStatement("test_insert_twice", INSERT_ONE)
    values = {"id": 11, "label": "once", "body": None, "at": None}
    with pg.connect() as connection:
        insert_item.execute(connection, values)
        with pytest.raises(IntegrityError, match="prepared_item_pkey") as twice:
            insert_item.execute(connection, values)
        assert not is_outage(twice.value) and twice.value.orig is not None
        assert not connection.invalidated
        connection.rollback()
        assert insert_item.execute(connection, values) is not None
        connection.commit()


def test_a_lost_connection_on_the_cursor_is_an_outage_and_is_replaced(pg: Engine) -> None:
    """The server ends the session (a restart, an idle timeout): the statement raises an
    outage (the engine retries it), the connection is invalidated, the pool opens another."""
    statement = PreparedStatement("test_select_lost", SELECT_ONE)
    with pg.connect() as connection:
        statement.execute(connection, {"item_id": 1})
        pid = connection.scalar(text("SELECT pg_backend_pid()"))
        connection.commit()
        with psycopg2.connect(pg.url.set(drivername="postgresql").render_as_string(False)) as other:
            other.autocommit = True
            other.cursor().execute("SELECT pg_terminate_backend(%s)", (pid,))
        with pytest.raises(DBAPIError) as lost:
            statement.execute(connection, {"item_id": 1})
        assert is_outage(lost.value) and lost.value.connection_invalidated
        assert connection.invalidated
    with pg.connect() as connection:
        assert connection.scalar(text("SELECT pg_backend_pid()")) != pid
        assert statement.execute(connection, {"item_id": 1}).first() is None
