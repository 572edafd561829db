"""A worker process's own non-blocking PostgreSQL connection for seeded hops: send, then read.

A seeded hop (worker.hop) is one statement, and the next activity's message can only leave
once it has committed (state first, then enqueue). Building that message costs about as much
as the statement's round trip, so the engine sends the statement, builds the message while
PostgreSQL runs it (worker.follow), then reads the answer and lets the message go only if the
statement wrote. Blocking psycopg2 would hold the process in the round trip; an asynchronous
psycopg2 connection returns at once from `execute` and is read when the engine is ready.

The connection is this process's alone, outside SQLAlchemy's pool (an asynchronous psycopg2
connection is always in autocommit, as a hop statement runs): opened on first use, opened
again in a forked child, dropped on any error. Errors come out as SQLAlchemy's, a lost
connection flagged as invalidated, so worker.outage judges them as it judges the pool's.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import psycopg2
from psycopg2.extras import wait_select
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from worker.prepared import PreparedStatement


class HopWire:
    """One asynchronous connection to `engine`'s database, for this process's hops."""

    def __init__(self, engine: Engine) -> None:
        if engine.dialect.name != "postgresql" or engine.dialect.driver != "psycopg2":
            raise ValueError("a hop wire needs PostgreSQL through psycopg2")
        self._engine = engine
        self._connection: Any = None
        self._pid = 0
        self._prepared: set[str] = set()

    def send(self, statement: PreparedStatement, params: Mapping[str, Any]) -> Pending:
        """Send EXECUTE `statement` (prepared on this connection first) and return at once;
        the answer is read by Pending.row(), which must be called before the next send."""
        form = statement.form(self._engine.dialect)
        values = statement.values(form, params)
        connection = self._connect()
        cursor = connection.cursor()
        sent = form.prepare
        try:
            if statement.name not in self._prepared:
                cursor.execute(form.prepare, ())  # (): psycopg2 turns its '%%' into '%'
                wait_select(connection)
                self._prepared.add(statement.name)
            sent = form.execute
            cursor.execute(form.execute, values)
        except psycopg2.Error as error:
            raise self._failed(error, sent, values) from error
        return Pending(self, cursor, form.execute, values)

    def close(self) -> None:
        """Close this process's connection, if open (the next send opens another)."""
        connection, self._connection = self._connection, None
        self._prepared = set()
        # A parent's connection is left alone: closing it would end the parent's session on
        # the server (psycopg2 itself does not close it when a child lets it go).
        if connection is not None and self._pid == os.getpid() and not connection.closed:
            connection.close()

    def _connect(self) -> Any:
        if self._connection is not None and self._pid != os.getpid():
            self._connection, self._prepared = None, set()  # the parent's (see close)
        if self._connection is None or self._connection.closed:
            dialect = self._engine.dialect
            args, kwargs = dialect.create_connect_args(self._engine.url)
            try:
                connection = psycopg2.connect(*args, **kwargs, async_=True)
                wait_select(connection)
            except psycopg2.Error as error:
                raise DBAPIError.instance(
                    None, None, error, psycopg2.Error, connection_invalidated=True, dialect=dialect
                ) from error
            self._connection, self._pid, self._prepared = connection, os.getpid(), set()
        return self._connection

    def _failed(self, error: psycopg2.Error, statement: str, values: Any) -> DBAPIError:
        """`error` as SQLAlchemy raises it; the connection is dropped whatever it was (a
        failed asynchronous query leaves it in a state not worth reasoning about)."""
        dialect = self._engine.dialect
        connection = self._connection
        lost = connection is None or bool(connection.closed)
        if not lost:
            lost = dialect.is_disconnect(error, connection, None)
        self.close()
        return DBAPIError.instance(
            statement, values, error, psycopg2.Error, connection_invalidated=lost, dialect=dialect
        )


class Pending:
    """A statement sent on a HopWire, its answer not read yet."""

    def __init__(self, wire: HopWire, cursor: Any, statement: str, values: Any) -> None:
        self._wire = wire
        self._cursor = cursor
        self._statement = statement
        self._values = values

    def row(self) -> tuple[Any, ...] | None:
        """Wait for the statement to end (committed: the connection is in autocommit) and
        return its first row, as the driver gives it (no result processing); raises what it
        raised, as SQLAlchemy would."""
        try:
            wait_select(self._cursor.connection)
            row = self._cursor.fetchone() if self._cursor.description is not None else None
        except psycopg2.Error as error:
            raise self._wire._failed(error, self._statement, self._values) from error
        except BaseException:
            # Interrupted while waiting (a time limit, a shutdown): the answer is still due
            # on this connection, which no later statement must share.
            self._wire.close()
            raise
        finally:
            if not self._cursor.connection.closed:
                self._cursor.close()
        return None if row is None else tuple(row)
