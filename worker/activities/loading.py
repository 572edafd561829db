"""Data management on tables: loadFile (CSV to a working table), updateData, extractFile."""

from __future__ import annotations

import csv
import os
import re
import zlib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    Float,
    Integer,
    MetaData,
    Table,
    Text,
    and_,
    case,
    cast,
    delete,
    exc,
    func,
    insert,
    literal,
    literal_column,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session
from sqlalchemy.schema import CreateTable
from sqlalchemy.sql.elements import ClauseElement, ColumnElement
from sqlalchemy.sql.expression import Delete, Insert, Update
from sqlalchemy.types import TypeEngine

from worker import csvload, expressions, populations, resources
from worker.activities.base import Activity, ActivityType, Context, Option, Outcome
from worker.db import UTCDateTime
from worker.errors import ActivityError, DefinitionError, FilterError
from worker.populations import table_name
from worker.registry import register

#: Reasons of rejected lines written to the logs; the others only go to the reject file.
LOGGED_REJECTS = 20
SQLITE_BATCH_ROWS = 5_000
EXTRACT_BATCH_ROWS = 5_000
DEFAULT_BATCH_SIZE = 10_000
OPERATIONS = ("insert", "update", "upsert", "delete")
#: extractFile's delimiters, each with the SQL literal COPY gets: no user text enters the SQL.
EXTRACT_DELIMITERS = {",": "','", ";": "';'", "|": "'|'", "\t": "E'\\t'"}
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_COLUMN_TYPES: dict[str, TypeEngine[Any]] = {
    "string": Text(),
    "integer": BigInteger(),
    "number": Float(),
    "boolean": Boolean(),
    "date": Date(),
    "datetime": UTCDateTime(),
}
_PG_DATETIME = 'YYYY-MM-DD"T"HH24:MI:SS"Z"'


# -- shared helpers ---------------------------------------------------------------------------


def _postgres(s: Session) -> bool:
    return s.get_bind().dialect.name == "postgresql"


def _task_folder(ctx: Context) -> Path:
    """Files of this execution: unique to (task, attempt), so a redelivery never collides."""
    folder = ctx.settings.files / str(ctx.workflow_id) / f"{ctx.task_id}.{ctx.attempt}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _file_descriptor(path: Path, name: str) -> dict[str, Any]:
    return {"kind": "file", "path": str(path), "size": path.stat().st_size, "name": name}


def _create_table(s: Session, name: str, columns: list[Column]) -> Table:
    """An empty working table (UNLOGGED on PostgreSQL: rebuilt by a rerun, never recovered)."""
    prefixes = ["UNLOGGED"] if _postgres(s) else []
    table = Table(name, MetaData(), *columns, prefixes=prefixes)
    s.execute(CreateTable(table))
    return table


def _reflect(s: Session, population: Mapping[str, Any]) -> Table:
    """The inbound population's table with its column types."""
    try:
        return Table(population["table"], MetaData(), autoload_with=s.connection())
    except exc.NoSuchTableError:
        raise ActivityError(
            f"the inbound population's table {population['table']} no longer exists"
        ) from None


def _resource(ctx: Context, name: str) -> resources.Resource:
    try:
        return resources.catalog_for(ctx.settings.data_model).get(name)
    except FilterError as error:
        raise ActivityError(error.message) from None


def _check_int(low: int, high: int) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        return None if low <= value <= high else f"must be between {low:,} and {high:,}"

    return check


def _check_one_of(allowed: tuple[str, ...] | dict[str, str]) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        shown = ", ".join(repr(a) for a in allowed)
        return None if value in allowed else f"must be one of {shown}"

    return check


# -- loadFile ---------------------------------------------------------------------------------


class _Rejects:
    """Rejected lines: counted, the first reasons logged, all kept in a CSV file if wanted."""

    def __init__(self, ctx: Context, max_errors: int | None, keep: bool) -> None:
        self.count = 0
        self._ctx = ctx
        self._max_errors = max_errors
        self._name = f"{ctx.activity.name}-rejects.csv"
        self._part = _task_folder(ctx) / f".{self._name}.part" if keep else None
        self._file: IO[str] | None = None
        self._writer: Any = None

    def add(self, line: int, reason: str, raw: str) -> None:
        self.count += 1
        if self.count <= LOGGED_REJECTS:
            self._ctx.log(f"line {line}: {reason}", "warning")
        if self._part is not None:
            if self._writer is None:
                self._file = self._part.open("w", encoding="utf-8", newline="")
                self._writer = csv.writer(self._file, lineterminator="\n")
                self._writer.writerow(("line", "reason", "raw"))
            self._writer.writerow((line, reason, raw))
        if self._max_errors is not None and self.count > self._max_errors:
            raise ActivityError(
                f"more than {self._max_errors:,} line(s) rejected (maxErrors): "
                f"loading stopped at line {line:,}"
            )

    def finish(self) -> dict[str, Any] | None:
        """The reject file's descriptor (renamed into place), None when it was not kept."""
        if self._file is None or self._part is None:
            return None
        self._file.close()
        final = self._part.with_name(self._name)
        os.replace(self._part, final)
        return _file_descriptor(final, self._name)

    def discard(self) -> None:
        if self._file is not None:
            self._file.close()
        if self._part is not None:
            self._part.unlink(missing_ok=True)


class _CopyStream:
    """What COPY reads: validated chunks. An error ends the data early and is raised after:
    raised inside read(), psycopg2 would turn it into a QueryCanceled and lose it."""

    def __init__(self, chunks: Iterator[bytes], after_chunk: Callable[[], None]) -> None:
        self.failure: Exception | None = None
        self._chunks = chunks
        self._after_chunk = after_chunk

    def read(self, size: int = -1) -> bytes:
        if self.failure is not None:
            return b""
        try:
            chunk = next(self._chunks, b"")
        except Exception as error:
            self.failure = error
            return b""
        self._after_chunk()
        return chunk


def _quoted_names(s: Session, names: list[str]) -> str:
    quote = s.get_bind().dialect.identifier_preparer.quote
    return ", ".join(quote(name) for name in names)


def _copy_rows(s: Session, table: Table, reader: csvload.CsvReader, ctx: Context) -> None:
    """PostgreSQL: COPY on the session's own connection, so it is part of the task's transaction."""
    import psycopg2

    names = _quoted_names(s, ["id", *(c.name for c in reader.columns)])
    quoted = s.get_bind().dialect.identifier_preparer.quote(table.name)
    sql = f"COPY {quoted} ({names}) FROM STDIN WITH (FORMAT csv, ENCODING 'UTF8')"
    stream = _CopyStream(reader.copy_chunks(), lambda: ctx.progress(reader.lines, None, "lines"))
    # Datetimes without an offset are UTC, whatever the server's time zone.
    zone = s.execute(text("SELECT current_setting('TimeZone')")).scalar_one()
    s.execute(text("SET LOCAL TimeZone = 'UTC'"))
    cursor = s.connection().connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.copy_expert(sql, stream, size=1 << 16)
    except psycopg2.DataError as error:
        raise ActivityError(f"the database refused a value: {str(error).splitlines()[0]}") from None
    finally:
        cursor.close()
    s.execute(select(func.set_config("TimeZone", zone, True)))
    if stream.failure is not None:
        raise stream.failure


def _insert_rows(s: Session, table: Table, reader: csvload.CsvReader, ctx: Context) -> None:
    """SQLite: batched executemany on the session's own connection."""
    names = ["id", *(c.name for c in reader.columns)]
    quoted = s.get_bind().dialect.identifier_preparer.quote(table.name)
    marks = ", ".join("?" for _ in names)
    sql = f"INSERT INTO {quoted} ({_quoted_names(s, names)}) VALUES ({marks})"
    cursor = s.connection().connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        for batch in reader.row_batches(SQLITE_BATCH_ROWS):
            cursor.executemany(sql, batch)
            ctx.progress(reader.lines, None, "lines")
    finally:
        cursor.close()


@register
class LoadFile(ActivityType):
    """Loads a CSV file into a working table of declared, typed columns.

    Options: `columns` (required list of {name, type, required, format}; types string,
    integer, number, boolean, date, datetime; `format` a strftime date format, default ISO
    8601; datetimes without an offset are UTC), `delimiter` (","), `quote` ('"'), `encoding`
    (utf-8; a leading BOM is skipped), `header` (true: the first line names the columns; they
    are matched by name, case-insensitively, in any order, and extra file columns are
    ignored), `maxErrors` (fail when more lines are rejected; default unlimited),
    `maxLineBytes` (longer lines are rejected; 1 MiB).

    Outlets: `done` carries the population `{resource: "file", columns: [declared names]}`:
    `id` is the line number (the header is line 1). `reject`, when it has a transition and
    lines were rejected, carries a CSV file `line,reason,raw`. An empty field is NULL.
    """

    name = "loadFile"
    family = "data"
    data = True
    options = {
        "columns": Option((list,), required=True, check=csvload.check_columns),
        "delimiter": Option((str,), check=csvload.check_separator),
        "quote": Option((str,), check=csvload.check_separator),
        "encoding": Option((str,), check=csvload.check_encoding),
        "header": Option((bool,)),
        "maxErrors": Option((int,), check=_check_int(0, 1 << 62)),
        "maxLineBytes": Option((int,), check=_check_int(64, csvload.MAX_LINE_BYTES_LIMIT)),
    }

    def validate(self, activity: Activity) -> None:
        super().validate(activity)
        options = activity.options
        if options.get("delimiter", ",") == options.get("quote", '"'):
            raise DefinitionError("'delimiter' and 'quote' must differ", activity=activity.name)

    def outlets(self, activity: Activity) -> frozenset[str]:
        return frozenset({"done", "reject"})

    def run(self, ctx: Context) -> Outcome:
        options = ctx.activity.options
        source = ctx.input("file")
        columns = csvload.parse_columns(options["columns"])
        keep_rejects = bool(ctx.activity.transitions.get("reject"))
        rejects = _Rejects(ctx, options.get("maxErrors"), keep_rejects)
        if not isinstance(source.get("path"), str):
            raise ActivityError("the inbound file descriptor has no path")
        try:
            reader = self._load(ctx, Path(source["path"]), columns, rejects)
            reject_file = rejects.finish()
        except BaseException:
            rejects.discard()
            raise
        name = table_name(ctx.task_id, ctx.attempt)
        populations.register(ctx, name, "file", reader.loaded)
        ctx.log(f"{reader.loaded:,} line(s) loaded, {reader.rejected:,} rejected")
        outputs = {
            "done": populations.descriptor(name, "file", reader.loaded, [c.name for c in columns])
        }
        outlets: tuple[str, ...] = ("done",)
        if reject_file is not None:
            outlets, outputs["reject"] = ("done", "reject"), reject_file
        return Outcome(
            outlets=outlets,
            outputs=outputs,
            counts={
                ctx.activity.name: reader.loaded,
                f"{ctx.activity.name}Rejected": reader.rejected,
            },
        )

    @staticmethod
    def _load(
        ctx: Context, path: Path, columns: list[csvload.Column], rejects: _Rejects
    ) -> csvload.CsvReader:
        options = ctx.activity.options
        s = ctx.session
        postgres = _postgres(s)
        try:
            file = path.open("rb")
        except OSError as error:
            raise ActivityError(f"cannot read the file {path.name}: {error.strerror}") from None
        with file:
            reader = csvload.CsvReader(
                file,
                columns,
                on_reject=rejects.add,
                delimiter=options.get("delimiter", ","),
                quote=options.get("quote", '"'),
                encoding=options.get("encoding", "utf-8"),
                header=options.get("header", True),
                max_line_bytes=options.get("maxLineBytes", csvload.DEFAULT_MAX_LINE_BYTES),
                target="postgresql" if postgres else "sqlite",
            )
            table = _create_table(
                s,
                table_name(ctx.task_id, ctx.attempt),
                [
                    # The line number: SQLite's rowid alias; PostgreSQL loads faster without
                    # an index (updateData and extractFile read it once, in order).
                    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
                    if not postgres
                    else Column("id", BigInteger, nullable=False),
                    *(Column(c.name, _COLUMN_TYPES[c.kind]) for c in columns),
                ],
            )
            if postgres:
                _copy_rows(s, table, reader, ctx)
            else:
                _insert_rows(s, table, reader, ctx)
        return reader


# -- updateData -------------------------------------------------------------------------------


def _check_key(value: Any) -> str | None:
    if not value or len(value) > 8:
        return "must list 1 to 8 field names"
    if not all(isinstance(name, str) and _IDENTIFIER.fullmatch(name) for name in value):
        return "must list field names"
    if len(set(value)) != len(value):
        return "names a field twice"
    return None


def _check_mapping(value: Any) -> str | None:
    if len(value) > csvload.MAX_COLUMNS:
        return f"at most {csvload.MAX_COLUMNS} fields"
    for target, source in value.items():
        if not _IDENTIFIER.fullmatch(str(target)):
            return f"{str(target)[:64]!r} is not a field name"
        if not isinstance(source, str) or not _IDENTIFIER.fullmatch(source):
            return f"the source of {target!r} must be an input column name"
    return None


def _resolve_mapping(
    options: Mapping[str, Any], population: Mapping[str, Any], resource: resources.Resource
) -> dict[str, str]:
    """{target field: input column}; by default every input column named like a writable field."""
    operation, key = options["operation"], list(options["key"])
    available = ["id", *population.get("columns", [])]
    if "mapping" in options:
        mapping = dict(options["mapping"])
    else:
        writable = resource.writable()
        mapping = {name: name for name in available if name in writable}
    for field in key:
        if field in available:
            mapping.setdefault(field, field)  # a key column named like its field needs no entry
    for target, source in mapping.items():
        if target not in resource.fields:
            raise ActivityError(f"mapping: unknown field {target!r} of resource '{resource.name}'")
        if target not in resource.writable() and target not in key:
            raise ActivityError(f"mapping: field {target!r} cannot be written")
        if source not in available:
            raise ActivityError(
                f"mapping: the input has no column {source!r} (it has {', '.join(available)})"
            )
    for field in key:
        if field not in resource.fields:
            raise ActivityError(f"key: unknown field {field!r} of resource '{resource.name}'")
        if field not in mapping:
            raise ActivityError(f"key field {field!r} has no input column: add it to 'mapping'")
        if field not in resource.writable() and operation in ("insert", "upsert"):
            raise ActivityError(f"key field {field!r} cannot be written by an {operation}")
    if operation == "update" and not set(mapping) - set(key):
        raise ActivityError("nothing to update: map at least one field besides the key")
    return mapping


def _check_kinds(source: Table, resource: resources.Resource, mapping: dict[str, str]) -> None:
    """Refuse what would need a lossy conversion; text fields take any value."""
    for target, column in mapping.items():
        have, want = resources.kind_of(source.c[column].type), resource.fields[target].kind
        if have is None or have == want or want == "string":
            continue
        if (have, want) == ("integer", "number"):
            continue
        raise ActivityError(
            f"input column {column!r} holds {have} values, field {target!r} takes {want} values"
        )


def _lock_key(org_id: int, resource: str) -> int:
    return zlib.crc32(f"updateData:{org_id}:{resource}".encode())


class _Update:
    """One updateData run, in set-based statements on temporary tables:

    1. stage: the keyed input rows, one per key (the last line wins), by input id (`line`);
    2. match: (line, record id) of every record a staged key matches, found in ONE join, so
       batches never scan the resource table again whether the key is indexed or not;
    3. batches of `batchSize` lines: UPDATE by record id, INSERT where nothing matched,
       DELETE the matched ids; the ids touched go to the output working table.
    """

    def __init__(self, ctx: Context, resource: resources.Resource, mapping: dict[str, str]):
        self.ctx = ctx
        self.s = ctx.session
        self.postgres = _postgres(self.s)
        self.target = resource.table
        self.resource = resource
        self.key = list(ctx.activity.options["key"])
        self.fields = list(mapping)
        self.mapping = mapping
        #: Staged column of each target field (f0, f1...: never a user-chosen identifier).
        self.columns = {field: f"f{index}" for index, field in enumerate(self.fields)}
        suffix = ctx.task_id.replace("-", "")[:32]
        self.staged = self._temporary(
            f"tmp_{suffix}",
            Column("line", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
            *(Column(self.columns[f], self._staged_type(f)) for f in self.fields),
        )
        self.matches = self._temporary(
            f"tmm_{suffix}",
            Column("line", BigInteger, nullable=False, index=True),
            Column("id", BigInteger, nullable=False),
        )

    def _staged_type(self, field: str) -> TypeEngine[Any]:
        type_ = self.target.c[field].type
        # Text, not VARCHAR(n): PostgreSQL would silently cut longer values on the cast.
        return Text() if resources.kind_of(type_) == "string" else type_

    @staticmethod
    def _temporary(name: str, *columns: Column[Any]) -> Table:
        return Table(
            name, MetaData(), *columns, prefixes=["TEMPORARY"], postgresql_on_commit="DROP"
        )

    def stage(self, source: Table) -> int:
        """Copy the keyed input rows, the last one of each key; returns how many."""
        self.staged.create(self.s.connection())
        keys = [source.c[self.mapping[field]] for field in self.key]
        # The last line of each key: a hash aggregate of narrow rows, no sort of wide ones.
        last = (
            select(func.max(source.c.id).label("id"))
            .where(*(column.is_not(None) for column in keys))
            .group_by(*keys)
            .subquery("last")
        )
        rows = select(
            source.c.id, *(source.c[self.mapping[f]].label(self.columns[f]) for f in self.fields)
        ).select_from(source.join(last, last.c.id == source.c.id))
        names = ["line", *(self.columns[f] for f in self.fields)]
        self.s.execute(insert(self.staged).from_select(names, rows))
        self._analyze(self.staged)
        return int(self.s.execute(select(func.count()).select_from(self.staged)).scalar_one())

    def batches(self, size: int) -> list[tuple[int | None, int | None]]:
        """(after, up to) line ranges of `size` staged rows each, the last one open-ended."""
        numbered = select(
            self.staged.c.line, func.row_number().over(order_by=self.staged.c.line).label("n")
        ).subquery("numbered")
        bounds: list[int | None] = [None]
        bounds.extend(self.s.scalars(select(numbered.c.line).where(numbered.c.n % size == 0)))
        return list(zip(bounds, [*bounds[1:], None], strict=True))

    def match(self) -> None:
        """Every (line, id) of the organization's records a staged key matches."""
        self.matches.create(self.s.connection())
        found = select(self.staged.c.line, self.target.c.id).where(
            self.target.c.org_id == self.ctx.org_id,
            *(self.target.c[f] == self.staged.c[self.columns[f]] for f in self.key),
        )
        self.s.execute(insert(self.matches).from_select(["line", "id"], found))
        self._analyze(self.matches)

    def _analyze(self, table: Table) -> None:
        if self.postgres:
            # Temporary tables are never analysed automatically: plan the batches on facts.
            quoted = self.s.get_bind().dialect.identifier_preparer.quote(table.name)
            self.s.execute(text(f"ANALYZE {quoted}"))

    def drop(self) -> None:
        for table in (self.matches, self.staged):
            table.drop(self.s.connection())

    def check_lengths(self) -> None:
        """Fail, naming the first input record, rather than let the database cut or refuse."""
        limits = {
            field: length
            for field in self.fields
            if isinstance(length := getattr(self.target.c[field].type, "length", None), int)
        }
        if not limits:
            return
        staged = self.staged
        too_long = [func.length(staged.c[self.columns[f]]) > n for f, n in limits.items()]
        row = self.s.execute(
            select(staged.c.line, *(staged.c[self.columns[f]] for f in limits))
            .where(or_(*too_long))
            .order_by(staged.c.line)
            .limit(1)
        ).first()
        if row is None:
            return
        for (field, length), value in zip(limits.items(), row[1:], strict=True):
            if value is not None and len(str(value)) > length:
                raise ActivityError(
                    f"input record {row.line}: the value of {field!r} is longer than "
                    f"{length} characters"
                )

    def apply(self, operation: str, out: Table, total: int) -> dict[str, int]:
        """Run `operation` batch by batch over the staged rows; counts by what was done."""
        if self.postgres and operation in ("insert", "upsert"):
            # Two runs inserting the same new keys at once would both insert them.
            lock = _lock_key(self.ctx.org_id, self.resource.name)
            self.s.execute(select(func.pg_advisory_xact_lock(lock)))
        self.match()
        done = {"inserted": 0, "updated": 0, "deleted": 0}
        size = self.ctx.activity.options.get("batchSize", DEFAULT_BATCH_SIZE)
        restore = self._nested_loops_only()
        for index, lines in enumerate(self.batches(size)):
            if operation in ("update", "upsert") and set(self.fields) - set(self.key):
                done["updated"] += self._write(self._update(*lines), out)
            if operation in ("insert", "upsert"):
                done["inserted"] += self._write(self._insert(*lines), out)
            if operation == "delete":
                done["deleted"] += self._write(self._delete(*lines), out)
            self.ctx.progress(min((index + 1) * size, total), total, "records")
        restore()
        return done

    def _nested_loops_only(self) -> Callable[[], None]:
        """PostgreSQL: batch statements join on primary keys and indexed lines only, so index
        lookups are always right; the planner would rather hash the whole resource table
        for every batch (random I/O looks dear to it). Returns what restores its settings;
        a failed run needs none: the settings are local to the transaction."""
        if not self.postgres:
            return lambda: None
        names = ("enable_hashjoin", "enable_mergejoin")
        before = [self.s.execute(select(func.current_setting(n))).scalar_one() for n in names]
        for name in names:
            self.s.execute(select(func.set_config(name, "off", True)))

        def restore() -> None:
            for name, value in zip(names, before, strict=True):
                self.s.execute(select(func.set_config(name, value, True)))

        return restore

    def _write(self, statement: Insert | Update | Delete, out: Table) -> int:
        """Run a statement; the ids it touched go to the output table. Returns how many."""
        returning = statement.returning(self.target.c.id)
        try:
            if self.postgres:
                changed = returning.cte("changed")
                into = insert(out).from_select(["id"], select(changed.c.id)).add_cte(changed)
                result = self.s.execute(into)
                assert isinstance(result, CursorResult)
                return result.rowcount
            ids = self.s.execute(returning).scalars().all()
        except exc.IntegrityError as error:
            detail = str(error.orig).splitlines()[0]
            raise ActivityError(f"the database refused the change: {detail}") from None
        if ids:
            self.s.execute(insert(out), [{"id": found} for found in ids])
        return len(ids)

    @staticmethod
    def _between(line: Column[Any], after: int | None, upto: int | None) -> list[Any]:
        return [
            *([line > after] if after is not None else []),
            *([line <= upto] if upto is not None else []),
        ]

    def _update(self, after: int | None, upto: int | None) -> Update:
        staged, matches = self.staged, self.matches
        values: dict[Any, Any] = {}
        for field in self.fields:
            if field in self.key:
                continue
            column, value = self.target.c[field], staged.c[self.columns[field]]
            # A NOT NULL field keeps its value when the input has none.
            values[column] = value if column.nullable else func.coalesce(value, column)
        if "lastModified" in self.target.c:
            values[self.target.c.lastModified] = self.ctx.now
        return (
            update(self.target)
            .where(
                *self._between(matches.c.line, after, upto),
                staged.c.line == matches.c.line,
                # Matches hold ids of the organization's records only (see match()): no
                # org_id test here, or the planner may scan all its records per batch.
                self.target.c.id == matches.c.id,
            )
            .values(values)
        )

    def _insert(self, after: int | None, upto: int | None) -> Insert:
        staged, matches = self.staged, self.matches
        matched = select(literal(1)).where(matches.c.line == staged.c.line).exists()
        targets: list[Any] = [self.target.c.org_id]
        values: list[Any] = [literal(self.ctx.org_id, Integer)]
        for stamp in ("created", "lastModified"):
            if stamp in self.target.c:
                targets.append(self.target.c[stamp])
                values.append(literal(self.ctx.now, UTCDateTime()))
        for field in self.fields:
            column = self.target.c[field]
            targets.append(column)
            values.append(_with_default(column, staged.c[self.columns[field]]))
        chosen = select(*values).where(*self._between(staged.c.line, after, upto), ~matched)
        return insert(self.target).from_select(targets, chosen)

    def _delete(self, after: int | None, upto: int | None) -> Delete:
        matches = self.matches
        ids = select(matches.c.id).where(*self._between(matches.c.line, after, upto))
        return delete(self.target).where(self.target.c.id.in_(ids))


def _with_default(column: Column[Any], value: ColumnElement[Any]) -> ColumnElement[Any]:
    """A NOT NULL column with a server default gets the default when the input has none."""
    default = getattr(column.server_default, "arg", None)
    if column.nullable or default is None:
        return value
    if not isinstance(default, ClauseElement):
        default = literal_column(str(default))
    return func.coalesce(value, default)


@register
class UpdateData(ActivityType):
    """Inserts, updates, upserts or deletes records of a resource from a population, by key.

    Options: `operation` (insert|update|upsert|delete), `resource` ("profile"), `key` (the
    fields identifying a record, e.g. [email]), `mapping` ({field: input column}; default:
    every input column named like a writable field), `batchSize` (10,000).

    Everything stays in the workflow's organization. Input records without a key value are
    skipped; when a key appears several times in the input, the last line wins. `insert`
    leaves records whose key exists alone; `update` changes every record with the key; an
    empty input value clears a field (NOT NULL fields keep theirs). Outlet `done` carries
    the population of the records inserted, updated or deleted.
    """

    name = "updateData"
    family = "data"
    data = True
    options = {
        "operation": Option((str,), required=True, check=_check_one_of(OPERATIONS)),
        "resource": Option(
            (str,), check=lambda v: None if _IDENTIFIER.fullmatch(v) else "must be a resource name"
        ),
        "key": Option((list,), required=True, check=_check_key),
        "mapping": Option((dict,), check=_check_mapping),
        "batchSize": Option((int,), check=_check_int(100, 1_000_000)),
    }

    def run(self, ctx: Context) -> Outcome:
        options = ctx.activity.options
        operation = options["operation"]
        population = ctx.input("population")
        resource = _resource(ctx, options.get("resource", "profile"))
        source = _reflect(ctx.session, population)
        mapping = _resolve_mapping(options, population, resource)
        _check_kinds(source, resource, mapping)
        run = _Update(ctx, resource, mapping)
        unique = run.stage(source)
        keys = [source.c[mapping[k]].is_not(None) for k in run.key]
        total, keyed = ctx.session.execute(
            select(func.count(), func.count(case((and_(*keys), 1)))).select_from(source)
        ).one()
        run.check_lengths()
        name = table_name(ctx.task_id, ctx.attempt)
        out = _create_table(ctx.session, name, [Column("id", BigInteger, nullable=False)])
        done = run.apply(operation, out, unique)
        run.drop()
        affected = done["inserted"] + done["updated"] + done["deleted"]
        populations.register(ctx, name, resource.name, affected)
        self._log(ctx, operation, done, total - keyed, keyed - unique, unique)
        counts = {ctx.activity.name: affected}
        counts.update({f"{ctx.activity.name}{k.title()}": v for k, v in done.items()})
        return Outcome(
            outputs={"done": populations.descriptor(name, resource.name, affected, [])},
            counts=counts,
        )

    @staticmethod
    def _log(
        ctx: Context, operation: str, done: dict[str, int], keyless: int, twice: int, unique: int
    ) -> None:
        if keyless:
            ctx.log(f"{keyless:,} input record(s) without a key value skipped", "warning")
        if twice:
            ctx.log(f"{twice:,} input record(s) repeat a key: the last line wins", "warning")
        if operation == "delete":
            ctx.log(f"{done['deleted']:,} record(s) deleted")
        elif operation == "update":
            ctx.log(f"{done['updated']:,} record(s) updated")
        else:
            message = f"{done['inserted']:,} record(s) inserted"
            if operation == "upsert":
                message += f", {done['updated']:,} updated"
            elif unique > done["inserted"]:
                message += f", {unique - done['inserted']:,} already present"
            ctx.log(message)


# -- extractFile ------------------------------------------------------------------------------


def _check_extract_columns(value: Any) -> str | None:
    if not value or len(value) > csvload.MAX_COLUMNS:
        return f"must list 1 to {csvload.MAX_COLUMNS} columns {{name, field}}"
    for index, spec in enumerate(value):
        if not isinstance(spec, Mapping) or set(spec) != {"name", "field"}:
            return f"columns[{index}] must be exactly {{name, field}}"
        name, field = spec["name"], spec["field"]
        if not isinstance(name, str) or not 1 <= len(name) <= 256 or "\x00" in name:
            return f"columns[{index}].name must be a header label of 1 to 256 characters"
        if not isinstance(field, str) or not _IDENTIFIER.fullmatch(field):
            return f"columns[{index}].field must be a field or column name"
    return None


def _pg_text(value: ColumnElement[Any], kind: str | None, escape: bool) -> ColumnElement[Any]:
    """The SQL that writes a value as the Python path does (csvload.formatter)."""
    if kind == "boolean":
        return case((value, literal("true")), (~value, literal("false")))
    if kind == "datetime":
        return func.to_char(func.timezone("UTC", value), _PG_DATETIME)
    if kind == "date":
        return func.to_char(value, "YYYY-MM-DD")
    if kind not in ("string", None):
        return value
    as_text = func.nullif(cast(value, Text), "")
    if not escape:
        return as_text
    formula = and_(
        as_text.op("~")(csvload.PG_FORMULA_START), as_text.op("!~")(csvload.PG_PLAIN_NUMBER)
    )
    return case((formula, literal("'") + as_text), else_=as_text)


@register
class ExtractFile(ActivityType):
    """Writes a population to a CSV file, in id order.

    Options: `columns` (required list of {name: header label, field: a field of the
    population's resource or one of its own columns, which wins on a clash}), `fileName`
    ("<activity>.csv"; vars allowed; reduced to a safe base name), `delimiter` (one of
    `,` `;` `|` tab), `header` (true), `encoding` (utf-8; a value it cannot write fails the
    activity), `escapeFormulas` (true: text starting with = + - @ tab or CR, other than a plain
    number, gets a leading quote so spreadsheets do not run it). Booleans are written
    true/false, dates ISO, datetimes in UTC to the second (2021-11-23T14:35:56Z).

    Outlet `done` carries the file.
    """

    name = "extractFile"
    family = "data"
    data = True
    options = {
        "columns": Option((list,), required=True, check=_check_extract_columns),
        "fileName": Option(
            (str,), check=lambda v: None if 1 <= len(v) <= 255 else "1 to 255 characters"
        ),
        "delimiter": Option((str,), check=_check_one_of(EXTRACT_DELIMITERS)),
        "header": Option((bool,)),
        "encoding": Option((str,), check=csvload.check_encoding),
        "escapeFormulas": Option((bool,)),
    }

    def run(self, ctx: Context) -> Outcome:
        options = ctx.activity.options
        population = ctx.input("population")
        source = _reflect(ctx.session, population)
        query, kinds = self._query(ctx, population, source)
        default = f"{ctx.activity.name}.csv"
        wanted = expressions.substitute(options.get("fileName", default), ctx.vars)
        name = csvload.safe_file_name(wanted if wanted else default, default)
        final = _task_folder(ctx) / name
        part = final.with_name(f".{name}.part")
        writer = csvload.ExtractWriter(
            options.get("encoding", "utf-8"), options.get("delimiter", ",")
        )
        labels = [c["name"] for c in options["columns"]]
        try:
            with part.open("wb") as out:
                writer.start(out, labels if options.get("header", True) else None)
                if _postgres(ctx.session):
                    count = self._copy_out(ctx, query, writer, out)
                else:
                    count = self._write_rows(ctx, query, kinds, writer, out, population)
            os.replace(part, final)
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        ctx.log(f"{count:,} record(s) extracted to {name}")
        return Outcome(
            outputs={"done": _file_descriptor(final, name)}, counts={ctx.activity.name: count}
        )

    @staticmethod
    def _query(
        ctx: Context, population: Mapping[str, Any], source: Table
    ) -> tuple[Any, list[str | None]]:
        """SELECT of the columns (labelled c0, c1...) in id order; the kind of each."""
        catalog = resources.catalog_for(ctx.settings.data_model)
        resource = catalog.resources.get(str(population.get("resource")))
        own = {"id", *population.get("columns", [])}
        escape = ctx.activity.options.get("escapeFormulas", True)
        postgres = _postgres(ctx.session)
        selected, kinds, joined = [], [], False
        for index, spec in enumerate(ctx.activity.options["columns"]):
            field = spec["field"]
            if field in own and field in source.c:
                value: ColumnElement[Any] = source.c[field]
                kind = resources.kind_of(source.c[field].type)
            elif resource is not None and field in resource.fields:
                value, kind, joined = (
                    resource.fields[field].column,
                    resource.fields[field].kind,
                    True,
                )
            else:
                where = f" nor a field of resource '{resource.name}'" if resource else ""
                raise ActivityError(
                    f"columns[{index}]: {field!r} is not a column of the population{where}"
                )
            kinds.append(kind)
            if postgres:
                value = _pg_text(value, kind, escape)
            selected.append(value.label(f"c{index}"))
        query = select(*selected).select_from(source).order_by(source.c.id)
        if joined and resource is not None:
            query = query.join(resource.table, resource.key == source.c.id).where(
                resource.org == ctx.org_id
            )
        return query, kinds

    @staticmethod
    def _copy_out(ctx: Context, query: Any, writer: csvload.ExtractWriter, out: IO[bytes]) -> int:
        """PostgreSQL: COPY (SELECT...) TO STDOUT. The SQL holds only catalog identifiers, the
        working table's name, the organization id and constants: no user value."""
        s = ctx.session
        compiled = query.compile(
            dialect=s.get_bind().dialect, compile_kwargs={"literal_binds": True}
        )
        delimiter = EXTRACT_DELIMITERS[ctx.activity.options.get("delimiter", ",")]
        sql = f"COPY ({compiled}) TO STDOUT WITH (FORMAT csv, DELIMITER {delimiter})"
        cursor = s.connection().connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.copy_expert(sql, writer.copy_target(out))
            count = int(cursor.rowcount)
        finally:
            cursor.close()
        writer.finish()
        return count

    @staticmethod
    def _write_rows(
        ctx: Context,
        query: Any,
        kinds: list[str | None],
        writer: csvload.ExtractWriter,
        out: IO[bytes],
        population: Mapping[str, Any],
    ) -> int:
        """SQLite: stream the rows in batches through csv.writer."""
        escape = ctx.activity.options.get("escapeFormulas", True)
        formats = [csvload.formatter(kind, escape) for kind in kinds]
        total = population.get("count")
        count = 0
        result = ctx.session.execute(query.execution_options(yield_per=EXTRACT_BATCH_ROWS))
        for rows in result.partitions():
            writer.rows(out, [[f(v) for f, v in zip(formats, row, strict=True)] for row in rows])
            count += len(rows)
            ctx.progress(count, total, "records")
        writer.finish()
        return count
