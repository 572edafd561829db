"""Server-side prepared statements (PREPARE/EXECUTE) for the engine's hottest statements.

psycopg2 sends every statement as text, so PostgreSQL parses and plans it on each run. For
the claim and completion of a quick activity, run on every hop, planning costs about as much
as executing (0.3-0.7 ms of a ~1 ms round trip, measured in bench/engine_overhead.py's
setting). A `PreparedStatement` is compiled by SQLAlchemy once, prepared once per database
connection (a PREPARE outlives the transaction it ran in, whatever its outcome), then each
run sends only `EXECUTE name(values)`, on the driver's cursor of the SQLAlchemy connection
and in its transaction: errors are wrapped and a lost connection invalidated as SQLAlchemy
does for its own statements (which it runs whenever something listens to cursor events).

A pooler that hands one server connection to several clients per transaction (PgBouncer in
transaction mode) loses prepared statements between transactions: CARILLON_PREPARED_STATEMENTS=0
sends the plain statement instead.
"""

from __future__ import annotations

import functools
import re
import threading
from collections import namedtuple
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, CursorResult, Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.dml import UpdateBase
from sqlalchemy.sql.selectable import Select
from sqlalchemy.types import NullType

#: A named parameter of psycopg2's pyformat paramstyle.
_PLACEHOLDER = re.compile(r"%\((\w+)\)s")
#: SQLSTATE invalid_sql_statement_name: EXECUTE of a name the server does not know.
_UNKNOWN_STATEMENT = "26000"
#: Where a connection's record keeps the names it has prepared (reset with the connection).
_INFO_KEY = "carillon_prepared"


@dataclass(frozen=True)
class _Form:
    """A statement as prepared on one dialect: the PREPARE text and how to call it."""

    prepare: str
    execute: str
    names: tuple[str, ...]
    defaults: Mapping[str, Any]
    required: frozenset[str]
    processors: tuple[Callable[[Any], Any] | None, ...]
    columns: tuple[Callable[[Any], Any] | None, ...]


class PreparedStatement:
    """A SQLAlchemy statement run as a server-side prepared statement on PostgreSQL.

    Elsewhere (SQLite, or with `enabled` False) it is executed as the statement itself.
    """

    def __init__(self, name: str, statement: Select[Any] | UpdateBase) -> None:
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
            raise ValueError(f"not a usable statement name: {name!r}")
        self.name = name
        self.statement = statement
        self._forms: dict[str, _Form] = {}
        self._lock = threading.Lock()

    def execute(
        self, connection: Connection, params: Mapping[str, Any], *, enabled: bool = True
    ) -> Any:
        """Rows of the statement run with `params` (only the tuples' values are processed)."""
        if not enabled or connection.dialect.name != "postgresql":
            return connection.execute(self.statement, dict(params))
        form = self.form(connection.dialect)
        values = self._ready(connection, form, params)
        return _run(connection, form.execute, values, form.columns)

    def _ready(
        self, connection: Connection, form: _Form, params: Mapping[str, Any]
    ) -> tuple[Any, ...]:
        """The values of one EXECUTE, the statement prepared on this connection first."""
        values = self.values(form, params)
        prepared: set[str] = connection.connection.info.setdefault(_INFO_KEY, set())
        if self.name not in prepared:
            connection.exec_driver_sql(form.prepare)
            prepared.add(self.name)
        return values

    def values(self, form: _Form, params: Mapping[str, Any]) -> tuple[Any, ...]:
        """The values of one EXECUTE of `form` (its processors applied, defaults filled)."""
        missing = form.required.difference(params)
        if missing:
            raise ValueError(f"{self.name}: no value for {', '.join(sorted(missing))}")
        values = []
        for key, process in zip(form.names, form.processors, strict=True):
            value = params[key] if key in params else form.defaults[key]
            values.append(value if process is None else process(value))
        return tuple(values)

    def form(self, dialect: Dialect) -> _Form:
        """The statement as prepared on `dialect`: its PREPARE and EXECUTE texts (built once)."""
        key = dialect.name
        form = self._forms.get(key)
        if form is None:
            with self._lock:
                form = self._forms.get(key) or self._build(dialect)
                self._forms[key] = form
        return form

    def _build(self, dialect: Dialect) -> _Form:
        compiled = self.statement.compile(dialect=dialect)
        assert isinstance(compiled, SQLCompiler)
        if compiled.post_compile_params:
            # An expanding IN is rendered per call: there is no one text to prepare.
            raise ValueError(f"{self.name}: expanding parameters cannot be prepared")
        names: list[str] = []

        def number(match: re.Match[str]) -> str:
            if match.group(1) not in names:
                names.append(match.group(1))
            return f"${names.index(match.group(1)) + 1}"

        # '%%' stays as it is: psycopg2 turns it into '%' when it sends the PREPARE.
        body = _PLACEHOLDER.sub(number, compiled.string)
        binds = {name: compiled.binds[name] for name in names}
        # The processing execute() would apply (JSON serialised, UTC datetimes checked).
        processors = tuple(
            bind.type.dialect_impl(dialect).bind_processor(dialect) for bind in binds.values()
        )
        arguments = ", ".join(["%s"] * len(names))
        columns = tuple(
            column.type.dialect_impl(dialect).result_processor(dialect, None)
            for column in getattr(self.statement, "exported_columns", ())
        )
        # Declared, not inferred: PostgreSQL guesses `$1 + count(*)` as text, for one.
        types = ", ".join(_type_name(bind.type, dialect) for bind in binds.values())
        signature = f"({types})" if names else ""
        return _Form(
            prepare=f"PREPARE {self.name}{signature} AS {body}",
            execute=f"EXECUTE {self.name}({arguments})" if names else f"EXECUTE {self.name}",
            names=tuple(names),
            defaults={name: compiled.params.get(name) for name in names},
            required=frozenset(name for name, bind in binds.items() if bind.required),
            processors=processors,
            columns=columns,
        )


def execute_together(
    connection: Connection, steps: Sequence[tuple[PreparedStatement, Mapping[str, Any]]]
) -> Any:
    """The first row of the last of `steps`, all sent as one query: one round trip.

    PostgreSQL runs the statements of one query in order, in one transaction (on an
    autocommit connection, their own: all of them commit or none does); each takes its own
    snapshot, so a statement sees what committed while an earlier one waited for a lock.
    """
    if connection.dialect.name != "postgresql":
        raise ValueError("statements run together only on PostgreSQL")
    texts: list[str] = []
    values: list[Any] = []
    columns: tuple[Any, ...] = ()
    for statement, params in steps:
        form = statement.form(connection.dialect)
        values.extend(statement._ready(connection, form, params))
        texts.append(form.execute)
        columns = form.columns  # the last statement's: its rows are the answer
    return _run(connection, "; ".join(texts), tuple(values), columns).one()


def _run(
    connection: Connection, statement: str, values: tuple[Any, ...], columns: tuple[Any, ...]
) -> Any:
    """The rows of EXECUTE `statement`, on the driver's cursor unless something listens."""
    try:
        # As SQLAlchemy decides whether to fire its cursor events.
        if not (connection._has_events or connection.engine._has_events):
            if not connection.in_transaction():
                connection.begin()  # SQLAlchemy's autobegin: its commit and rollback apply
            names, rows = _run_on_cursor(connection, statement, values)
        else:
            result: CursorResult[Any] = connection.exec_driver_sql(statement, values)
            names = tuple(result.keys()) if result.returns_rows else ()
            rows = list(result.fetchall()) if result.returns_rows else []
    except DBAPIError as error:
        if getattr(error.orig, "pgcode", None) == _UNKNOWN_STATEMENT:
            # Deallocated behind our back (DISCARD ALL): prepare again next time.
            connection.connection.info.pop(_INFO_KEY, None)
        raise
    return _Fetched(names, rows, columns)


def _run_on_cursor(
    connection: Connection, statement: str, values: tuple[Any, ...]
) -> tuple[tuple[str, ...], list[Any]]:
    """(column names, rows) of `statement` run on the driver's own cursor; its errors are
    wrapped, and a lost connection invalidated, as SQLAlchemy does for its own statements.

    SQLAlchemy's execution context (cursor events, result metadata) costs 40-50 us per
    statement, a twentieth of a seeded hop; it is taken only when something listens to the
    engine's cursor events (tracing, tests that count statements), so they see every one.
    """
    dbapi_connection: Any = connection.connection.dbapi_connection
    dialect = connection.dialect
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(statement, values)
        if cursor.description is None:
            return (), []
        rows: list[Any] = cursor.fetchall()
        return tuple(column[0] for column in cursor.description), rows
    except dialect.loaded_dbapi.Error as error:
        lost = dialect.is_disconnect(error, dbapi_connection, cursor)
        if lost:
            connection.invalidate(error)
        raise DBAPIError.instance(
            statement,
            values,
            error,
            dialect.loaded_dbapi.Error,
            connection_invalidated=lost,
            dialect=dialect,
        ) from error
    finally:
        if not cursor.closed:
            cursor.close()


class _Fetched:
    """The rows of an EXECUTE, their values processed as SQLAlchemy would have (UTC times)."""

    def __init__(self, names: tuple[str, ...], rows: list[Any], columns: tuple[Any, ...]) -> None:
        self._names = names
        self._rows = rows
        self._columns = columns if any(columns) else ()

    def first(self) -> Any:
        if not self._rows:
            return None
        row = self._rows[0]
        if self._columns:
            row = (
                value if process is None else process(value)
                for value, process in zip(row, self._columns, strict=True)
            )
        return _row_type(self._names)(*row)

    def one(self) -> Any:
        row = self.first()
        if row is None:
            raise LookupError("the statement returned no row")
        return row


def _type_name(type_: Any, dialect: Dialect) -> str:
    """The SQL name of a parameter's type, `unknown` (inferred from its use) when untyped."""
    if isinstance(type_, NullType):
        return "unknown"
    return str(dialect.type_compiler_instance.process(type_.dialect_impl(dialect)))


@functools.cache
def _row_type(fields: tuple[str, ...]) -> Any:
    """A named tuple class for rows with these column names (built once per shape)."""
    return namedtuple("PreparedRow", fields)


def forget(connection: Connection) -> None:
    """Drop what this connection prepared (DEALLOCATE ALL), e.g. after a schema change."""
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql("DEALLOCATE ALL")
        connection.connection.info.pop(_INFO_KEY, None)
