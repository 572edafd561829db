"""CSV files in and out of the database: declared columns, validated and typed lines, formatting.

Reading (loadFile) has two paths that accept the same values and store the same data:

- the record path reads a line at a time (the csv module only for lines that contain the quote
  character, so quoted fields may span lines), converts each value with a precompiled
  converter and reports every rejected line with its number and reason;
- the block path (PostgreSQL only) checks a whole block of ~256 KB of lines with one compiled
  regular expression built from the declared columns. When every line of the block is plain
  and valid, the block goes to COPY as it is, prefixed with line numbers, without building a
  Python object per value. Any other block (a quote, a bad value, a blank or over-long line,
  undecodable bytes) is read again through the record path, which says what is wrong.

Values are normalised to text PostgreSQL's COPY and SQLite's type affinity both read the same
way; an empty field is NULL.
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import functools
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any

from worker.errors import ActivityError

KINDS = ("string", "integer", "number", "boolean", "date", "datetime")
MAX_COLUMNS = 500
DEFAULT_MAX_LINE_BYTES = 1 << 20
MAX_LINE_BYTES_LIMIT = 64 << 20
#: Characters of a rejected line kept in logs and reject files.
RAW_LIMIT = 4096
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,47}")
_RESERVED = frozenset({"id", "line"})
#: Delimiters no typed value can contain, so a block regex splits lines like str.split does.
_BLOCK_DELIMITERS = frozenset({",", ";", "|", "\t"})
_BLOCK_BYTES = 1 << 18
_CHUNK_ROWS = 5_000
_SHOWN = 40

Converter = Callable[[str], str]
OnReject = Callable[[int, str, str], None]


@dataclass(frozen=True)
class Column:
    """One declared column of a file: its name, type, and whether a value is required."""

    name: str
    kind: str
    required: bool = False
    format: str | None = None


# -- declarations, checked at save time -------------------------------------------------------


def check_columns(value: Any) -> str | None:
    """Why `value` is not a valid `columns` declaration of loadFile, or None."""
    if not isinstance(value, list) or not value:
        return "must be a non-empty list of {name, type, required, format}"
    if len(value) > MAX_COLUMNS:
        return f"at most {MAX_COLUMNS} columns"
    seen: set[str] = set()
    for index, spec in enumerate(value):
        where = f"columns[{index}]"
        if not isinstance(spec, Mapping):
            return f"{where} must be an object {{name, type, required, format}}"
        unknown = set(spec) - {"name", "type", "required", "format"}
        if unknown:
            return f"{where}: unknown key(s) {sorted(map(str, unknown))}"
        name = spec.get("name")
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            return f"{where}.name must match [A-Za-z][A-Za-z0-9_]{{0,47}}"
        if name.lower() in _RESERVED:
            return f"{where}.name '{name}' is reserved (id and line number)"
        if name.lower() in seen:
            return f"column '{name}' is declared twice"
        seen.add(name.lower())
        kind = spec.get("type")
        if not isinstance(kind, str) or kind not in KINDS:
            return f"{where}.type must be one of {', '.join(KINDS)}"
        if not isinstance(spec.get("required", False), bool):
            return f"{where}.required must be a boolean"
        if spec.get("format") is not None:
            problem = check_format(kind, spec["format"])
            if problem:
                return f"{where}.format: {problem}"
    return None


def check_format(kind: str, fmt: Any) -> str | None:
    """A date format must read back the day, month and year it writes (strftime codes)."""
    if kind not in ("date", "datetime"):
        return "only date and datetime columns take a format"
    if not isinstance(fmt, str) or not 2 <= len(fmt) <= 64 or "\x00" in fmt:
        return "must be a strftime format such as %d/%m/%Y"
    sample = dt.datetime(2021, 11, 23, 14, 35, 56, 123456, tzinfo=dt.UTC)
    try:
        parsed = dt.datetime.strptime(sample.strftime(fmt), fmt)
    except ValueError:
        return f"{fmt!r} cannot read back the dates it writes"
    if parsed.date() != sample.date():
        return f"{fmt!r} must contain the day, month and year (e.g. %d/%m/%Y)"
    return None


def check_encoding(value: Any) -> str | None:
    """Only text encodings that write ASCII as ASCII: delimiters and quotes are found bytewise."""
    if not isinstance(value, str) or not 1 <= len(value) <= 64:
        return "must be an encoding name such as utf-8 or latin-1"
    try:
        codecs.lookup(value)
        sample = 'a;,|\t"\n'
        compatible = sample.encode(value).removeprefix(codecs.BOM_UTF8) == sample.encode("ascii")
    except (LookupError, ValueError):
        return f"unknown encoding {value!r}"
    if not compatible:
        return f"{value!r} is not ASCII-compatible (use utf-8, latin-1, cp1252...)"
    return None


def check_separator(value: Any) -> str | None:
    """A delimiter or quote: one character that cannot be part of a line's structure."""
    if not isinstance(value, str) or len(value) != 1:
        return "must be exactly one character"
    if value in "\r\n\x00" or value.isalnum() or not value.isascii():
        return "must be an ASCII punctuation, space or tab character"
    return None


def parse_columns(value: Sequence[Mapping[str, Any]]) -> list[Column]:
    return [
        Column(spec["name"], spec["type"], bool(spec.get("required", False)), spec.get("format"))
        for spec in value
    ]


def codec_name(encoding: str) -> str:
    """The canonical codec name; utf-8-sig reads as utf-8 (a leading BOM is skipped anyway)."""
    name = codecs.lookup(encoding).name
    return "utf-8" if name == "utf-8-sig" else name


# -- converters: raw text of a field -> normalised text ------------------------------------------


def _show(value: str) -> str:
    return repr(value if len(value) <= _SHOWN else value[:_SHOWN] + "...")


_INT_PLAIN = re.compile(r"-?[0-9]{1,18}").fullmatch
_INT_TEXT = re.compile(r"[+-]?0*([0-9]+)").fullmatch
_NUM_PLAIN = re.compile(r"-?[0-9]{1,15}(?:\.[0-9]{1,15})?").fullmatch
_NUM_TEXT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?").fullmatch
_BIGINT = 1 << 63
_BOOLEANS = {
    **dict.fromkeys(("true", "t", "yes", "y", "on", "1"), "1"),
    **dict.fromkeys(("false", "f", "no", "n", "off", "0"), "0"),
}


def _integer(value: str) -> str:
    if not value or _INT_PLAIN(value):
        return value
    text = value.strip()
    found = _INT_TEXT(text)
    if found:
        # Check the digits before int(): a 5,000-digit string would be slow and fail anyway.
        if len(found.group(1)) <= 19 and -_BIGINT <= int(text) < _BIGINT:
            return str(int(text))
        raise ValueError(f"{_show(value)} is out of the integer range")
    if not text:
        return ""
    raise ValueError(f"{_show(value)} is not an integer")


def _number(value: str) -> str:
    if not value or _NUM_PLAIN(value):
        return value
    text = value.strip()
    if not text:
        return ""
    if len(text) <= 64 and _NUM_TEXT(text):
        number = float(text)
        if math.isfinite(number):
            return repr(number)
        raise ValueError(f"{_show(value)} is out of the number range")
    raise ValueError(f"{_show(value)} is not a number")


def _boolean(value: str) -> str:
    found = _BOOLEANS.get(value) or _BOOLEANS.get(value.strip().lower())
    if found:
        return found
    if not value.strip():
        return ""
    raise ValueError(f"{_show(value)} is not a boolean (true/false, yes/no, 1/0)")


def _iso_date(value: str) -> str:
    text = value.strip()
    if not text:
        return ""
    try:
        return dt.date.fromisoformat(text).isoformat()
    except ValueError:
        raise ValueError(f"{_show(value)} is not a date") from None


def _datetime_text(moment: dt.datetime, target: str) -> str:
    """A datetime without an offset is UTC. PostgreSQL gets the offset, SQLite naive UTC."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt.UTC)
    if target == "postgresql":
        return moment.replace(tzinfo=dt.UTC).isoformat()
    return str(moment.replace(tzinfo=None))


def _iso_datetime(target: str) -> Converter:
    def convert(value: str) -> str:
        text = value.strip()
        if not text:
            return ""
        try:
            return _datetime_text(dt.datetime.fromisoformat(text), target)
        except (ValueError, OverflowError):
            raise ValueError(f"{_show(value)} is not a datetime") from None

    return convert


#: strftime codes read by a regular expression (much faster than strptime); others use strptime.
_DIRECTIVES = {
    "Y": r"(?P<Y>[0-9]{4})",
    "y": r"(?P<y>[0-9]{2})",
    "m": r"(?P<m>[0-9]{1,2})",
    "d": r"(?P<d>[0-9]{1,2})",
    "H": r"(?P<H>[0-9]{1,2})",
    "M": r"(?P<M>[0-9]{1,2})",
    "S": r"(?P<S>[0-9]{1,2})",
    "f": r"(?P<f>[0-9]{1,6})",
}


def _format_regex(fmt: str) -> re.Pattern[str] | None:
    parts: list[str] = []
    used: set[str] = set()
    index = 0
    while index < len(fmt):
        char = fmt[index]
        if char != "%":
            parts.append(re.escape(char))
            index += 1
            continue
        code = fmt[index + 1 : index + 2]
        if code == "%":
            parts.append("%")
        elif code in _DIRECTIVES and code not in used:
            used.add(code)
            parts.append(_DIRECTIVES[code])
        else:
            return None
        index += 2
    if not {"d", "m"} <= used or not used & {"Y", "y"}:
        return None
    return re.compile("".join(parts))


def _moment(groups: Mapping[str, str | None]) -> dt.datetime:
    if groups.get("Y"):
        year = int(groups["Y"] or 0)
    else:
        short = int(groups["y"] or 0)
        year = short + (1900 if short >= 69 else 2000)  # strptime's pivot
    fraction = groups.get("f") or ""
    return dt.datetime(
        year,
        int(groups["m"] or 0),
        int(groups["d"] or 0),
        int(groups.get("H") or 0),
        int(groups.get("M") or 0),
        int(groups.get("S") or 0),
        int(fraction.ljust(6, "0")) if fraction else 0,
    )


def _formatted(kind: str, fmt: str, target: str) -> Converter:
    pattern = _format_regex(fmt)

    def parse(text: str) -> dt.datetime:
        if pattern is None:
            return dt.datetime.strptime(text, fmt)
        found = pattern.fullmatch(text)
        if found is None:
            raise ValueError(text)
        return _moment(found.groupdict())

    def convert(value: str) -> str:
        text = value.strip()
        if not text:
            return ""
        try:
            moment = parse(text)
            if kind == "date":
                return moment.date().isoformat()
            return _datetime_text(moment, target)
        except (ValueError, OverflowError):
            raise ValueError(f"{_show(value)} is not a {kind}") from None

    return convert


def _required(base: Converter | None) -> Converter:
    def check(value: str) -> str:
        converted = base(value) if base is not None else value
        if not converted:
            raise ValueError("a value is required")
        return converted

    return check


def converter(column: Column, target: str) -> Converter | None:
    """The function normalising a raw field of `column` for `target`; None: keep it as it is."""
    base: Converter | None
    if column.kind in ("date", "datetime") and column.format:
        base = _formatted(column.kind, column.format, target)
    elif column.kind == "date":
        base = _iso_date
    elif column.kind == "datetime":
        base = _iso_datetime(target)
    else:
        base = {"integer": _integer, "number": _number, "boolean": _boolean}.get(column.kind)
    return _required(base) if column.required else base


# -- block patterns: a whole block of plain lines checked by one regular expression -----------

_LEAP_YEAR = rb"(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:[02468][048]|[13579][26])00)"
#: A real calendar date, years 0001 to 9999 (what both Python and PostgreSQL accept).
_DATE = (
    rb"(?!0000)(?:[0-9]{4}-(?:(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])"
    rb"|(?:0[13-9]|1[0-2])-(?:29|30)|(?:0[13578]|1[02])-31)|" + _LEAP_YEAR + rb"-02-29)"
)
_TIME = (
    rb"(?:[T ](?:[01][0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9](?:\.[0-9]{1,6})?)?"
    rb"(?:Z|[+-](?:[01][0-9]|2[0-3])(?::?[0-5][0-9])?)?)?"
)
_BLOCK_KINDS = {
    "integer": rb"-?[0-9]{1,18}+",
    "number": rb"-?[0-9]{1,15}+(?:\.[0-9]{1,15}+)?+",
    "boolean": rb"(?i:true|false|yes|no|off|on|t|f|y|n|1|0)",
    "date": _DATE,
    "datetime": _DATE + _TIME,
}


def _block_regex(columns: Sequence[Column], delimiter: str, quote: str) -> re.Pattern[bytes]:
    """Lines whose every field is a plain, valid value of its column, and nothing else.

    A field may be quoted as a whole (its value holds no quote, delimiter, comma or newline,
    so the quotes change nothing and can be dropped).
    """
    special = sorted({delimiter, quote, '"', ",", "\r", "\n", "\x00"})
    text_class = b"[^" + b"".join(re.escape(c).encode() for c in special) + b"]"
    quoted = re.escape(quote).encode()
    fields = []
    for column in columns:
        if column.kind == "string":
            value = text_class + (b"++" if column.required else b"*+")
        else:
            value = b"(?:" + _BLOCK_KINDS[column.kind] + (b")" if column.required else b")?")
        fields.append(b"(?:" + value + b"|" + quoted + value + quoted + b")")
    line = re.escape(delimiter).encode().join(fields)
    # A blank line is no record (the record path skips it): never match one.
    return re.compile(b"(?:(?!\n)" + line + b"\n)*+")


# -- reading ---------------------------------------------------------------------------------


class _Sink:
    """A csv.writer target that appends to a list (joined once per chunk)."""

    def __init__(self, parts: list[str]) -> None:
        self.write = parts.append


class CsvReader:
    """The valid records of one CSV file, as COPY data or as rows, rejects to a callback.

    Record ids are line numbers: the first physical line of each record (the header is line 1).
    Memory stays flat: at most one block, one chunk and one record (bounded by
    `max_line_bytes` per line and csv's field size limit) are held at a time.
    """

    def __init__(
        self,
        file: IO[bytes],
        columns: Sequence[Column],
        *,
        on_reject: OnReject,
        delimiter: str = ",",
        quote: str = '"',
        encoding: str = "utf-8",
        header: bool = True,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        target: str = "postgresql",
    ) -> None:
        self.lines = 0
        self.loaded = 0
        self.rejected = 0
        self._file = file
        self._on_reject = on_reject
        self._delimiter = delimiter
        self._quote = quote
        self._encoding = codec_name(encoding)
        self._max_line = max_line_bytes
        self._readline = functools.partial(file.readline, max_line_bytes + 1)
        self._pending: list[bytes] = []  # lines given back by a block, last first
        self._record_raw: list[bytes] = []
        self._problem: str | None = None
        self._quoted_start: str | None = None
        # The limit is process-wide: only ever raise it, so no concurrent load is cut short.
        if csv.field_size_limit() < max_line_bytes:
            csv.field_size_limit(max_line_bytes)
        self._csv = csv.reader(self._feed(), delimiter=delimiter, quotechar=quote, strict=True)
        self._plain_commas = delimiter == "," and quote == '"'
        if self._encoding == "utf-8" and file.read(3) != codecs.BOM_UTF8:
            file.seek(0)
        names = self._read_header() if header else [c.name for c in columns]
        self.columns, self._positions, self._width = _layout(columns, names, header)
        self._converters = [
            (index, found)
            for index, column in enumerate(self.columns)
            if (found := converter(column, target)) is not None
        ]
        self._block = self._block_pattern(target)
        self._quote_byte = quote.encode()

    # -- public iteration

    def copy_chunks(self) -> Iterator[bytes]:
        """The records as `COPY ... (id, <self.columns>) FROM STDIN (FORMAT csv)` data."""
        if self._block is None:
            yield from self._record_chunks(drain_only=False)
            return
        while True:
            original = self._read_block()
            if not original:
                return
            chunk = self._block_chunk(original)
            if chunk is not None:
                yield chunk
                continue
            lines = original.split(b"\n")
            if not lines[-1]:
                lines.pop()
            self._pending = [line + b"\n" for line in reversed(lines)]
            yield from self._record_chunks(drain_only=True)

    def row_batches(self, size: int) -> Iterator[list[tuple[Any, ...]]]:
        """The records as (id, values in self.columns order) tuples, empty values None."""
        batch: list[tuple[Any, ...]] = []
        for line, values, _plain in self._records(drain_only=False):
            batch.append((line, *[value or None for value in values]))
            if len(batch) >= size:
                self.loaded += len(batch)
                yield batch
                batch = []
        if batch:
            self.loaded += len(batch)
            yield batch

    # -- header and layout

    def _read_header(self) -> list[str]:
        while True:
            found = self._next_fields()
            if found is None:
                raise ActivityError("the file is empty: no header line")
            line, fields, _plain = found
            problem, self._problem = self._problem, None
            self._record_raw.clear()
            if problem or fields is None:
                raise ActivityError(f"line {line}: the header cannot be read: {problem}")
            if fields and fields != [""]:
                return [name.strip() for name in fields]

    def _block_pattern(self, target: str) -> re.Pattern[bytes] | None:
        eligible = (
            target == "postgresql"
            and self._positions is None
            and self._delimiter in _BLOCK_DELIMITERS
            and self._quote.isascii()
            and not any(column.format for column in self.columns)
        )
        return _block_regex(self.columns, self._delimiter, self._quote) if eligible else None

    # -- the block path

    def _read_block(self) -> bytes:
        data = self._file.read(_BLOCK_BYTES)
        if data and not data.endswith(b"\n"):
            tail = self._readline()
            if len(tail) > self._max_line and not tail.endswith(b"\n"):
                self._skip_rest_of_line()
            data += tail
        return data

    def _block_chunk(self, original: bytes) -> bytes | None:
        """`original` as COPY data when every line in it is plain and valid, else None."""
        assert self._block is not None
        data = original if original.endswith(b"\n") else original + b"\n"
        try:
            if self._encoding != "utf-8":
                data = data.decode(self._encoding).encode("utf-8")
            elif not data.isascii():
                data.decode("utf-8")
        except UnicodeDecodeError:
            return None
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n")
        if not self._block.fullmatch(data):
            return None
        if self._quote_byte in data:
            # The pattern only lets quotes around whole plain values, where they change nothing.
            data = data.replace(self._quote_byte, b"")
        if self._delimiter != ",":
            data = data.replace(self._delimiter.encode(), b",")
        lines = data.split(b"\n")
        lines.pop()
        if max(map(len, lines)) >= self._max_line:
            return None
        first = self.lines + 1
        self.lines += len(lines)
        self.loaded += len(lines)
        numbers = map(b"%d".__mod__, range(first, first + len(lines)))
        return b"\n".join(map(b",".join, zip(numbers, lines, strict=True))) + b"\n"

    # -- the record path

    def _record_chunks(self, *, drain_only: bool) -> Iterator[bytes]:
        parts: list[str] = []
        writer = csv.writer(_Sink(parts), lineterminator="\n")
        rows = 0
        for line, values, plain in self._records(drain_only=drain_only):
            if plain:
                parts.append(f"{line},{','.join(values)}\n")
            else:
                writer.writerow((line, *values))
            rows += 1
            if rows == _CHUNK_ROWS:
                self.loaded += rows
                rows = 0
                yield "".join(parts).encode("utf-8")
                parts.clear()
        if parts:
            self.loaded += rows
            yield "".join(parts).encode("utf-8")

    def _records(self, *, drain_only: bool) -> Iterator[tuple[int, list[str], bool]]:
        """Valid records: (line number, values in self.columns order, plain for COPY)."""
        width, positions, converters = self._width, self._positions, self._converters
        while not drain_only or self._pending:
            found = self._next_fields()
            if found is None:
                return
            line, fields, plain = found
            if self._problem or fields is None:
                self._reject(line, self._problem or "unreadable line")
                continue
            if len(fields) != width:
                if fields and fields != [""]:
                    self._reject(line, f"expected {width} fields, found {len(fields)}")
                self._record_raw.clear()
                continue
            values = fields if positions is None else [fields[p] for p in positions]
            index = 0
            try:
                for index, convert in converters:
                    values[index] = convert(values[index])
            except ValueError as exc:
                self._reject(line, f"column '{self.columns[index].name}': {exc}")
                continue
            self._record_raw.clear()
            yield line, values, plain

    def _next_fields(self) -> tuple[int, list[str] | None, bool] | None:
        """The next record's raw fields (None when csv refused it), or None at the end."""
        text = self._take()
        if text is None:
            return None
        line = self.lines
        body = text.rstrip("\r\n")
        if self._quote in body or "\r" in body:
            self._quoted_start = text
            try:
                return line, next(self._csv), False
            except csv.Error as exc:
                self._flag(f"malformed CSV ({exc})")
                return line, None, False
        # Plain: COPY reads the values joined by commas as they are, without quoting.
        plain = self._plain_commas or (
            '"' not in body and (self._delimiter == "," or "," not in body)
        )
        return line, body.split(self._delimiter), plain

    def _feed(self) -> Iterator[str]:
        """Lines for the csv reader: the line that starts a quoted record, then the next ones."""
        while True:
            if self._quoted_start is not None:
                text, self._quoted_start = self._quoted_start, None
                yield text
                continue
            following = self._take()
            if following is None:
                return
            yield following

    def _take(self) -> str | None:
        """The next physical line, decoded; problems are flagged on the current record."""
        if self._pending:
            raw = self._pending.pop()
        else:
            raw = self._readline()
            if not raw:
                return None
            if len(raw) > self._max_line and not raw.endswith(b"\n"):
                self._skip_rest_of_line()
        self.lines += 1
        self._record_raw.append(raw)
        if len(raw) > self._max_line:
            self._flag(f"line longer than {self._max_line:,} bytes")
            return "\n"
        try:
            text = raw.decode(self._encoding)
        except UnicodeDecodeError as exc:
            self._flag(f"bytes that are not {self._encoding} at position {exc.start + 1}")
            text = raw.decode(self._encoding, "replace")
        if "\x00" in text:
            self._flag("NUL byte in the line")
            text = text.replace("\x00", "")
        return text

    def _skip_rest_of_line(self) -> None:
        while True:
            rest = self._readline()
            if not rest or rest.endswith(b"\n"):
                return

    def _flag(self, problem: str) -> None:
        if self._problem is None:
            self._problem = problem

    def _reject(self, line: int, reason: str) -> None:
        raw = b"".join(self._record_raw)[: RAW_LIMIT * 4]
        text = raw.decode(self._encoding, "replace").rstrip("\r\n")[:RAW_LIMIT]
        self._record_raw.clear()
        self._problem = None
        self.rejected += 1
        self._on_reject(line, reason, text)


def _layout(
    columns: Sequence[Column], names: Sequence[str], header: bool
) -> tuple[list[Column], list[int] | None, int]:
    """(columns in load order, field index of each or None when in file order, file width).

    Header names map to declared columns by name, case-insensitively; extra file columns are
    ignored. Without a header the fields are the declared columns, in order.
    """
    if not header:
        return list(columns), None, len(columns)
    index: dict[str, int] = {}
    twice: set[str] = set()
    for position, name in enumerate(names):
        if name.lower() in index:
            twice.add(name.lower())
        index.setdefault(name.lower(), position)
    for column in columns:
        if column.name.lower() in twice:
            raise ActivityError(f"the header names column '{column.name}' twice")
    missing = [c.name for c in columns if c.name.lower() not in index]
    if missing:
        shown = ", ".join(repr(n[:_SHOWN]) for n in names[:50])
        raise ActivityError(
            f"the header lacks column(s) {', '.join(map(repr, missing))} (it has {shown})"
        )
    if len(names) == len(columns):
        by_name = {c.name.lower(): c for c in columns}
        return [by_name[name.lower()] for name in names], None, len(names)
    return list(columns), [index[c.name.lower()] for c in columns], len(names)


# -- writing (extractFile) -----------------------------------------------------------------------

#: Spreadsheets run a cell starting with one of these as a formula (CSV injection).
FORMULA_STARTS = "=+-@\t\r"
#: ...unless it is a plain number (negative amounts, international phone numbers).
_PLAIN_NUMBER = re.compile(r"[+-]?[0-9]+(?:[.,][0-9]+)?")
#: The same two rules for PostgreSQL's regular expressions (constants: no user value in SQL).
PG_FORMULA_START = "^[=+@\t\r-]"
PG_PLAIN_NUMBER = "^[+-]?[0-9]+([.,][0-9]+)?$"
_FILE_NAME_CHARS = re.compile(r"[^A-Za-z0-9._-]")


def escape_formula(text: str) -> str:
    """Prefix a quote to a text a spreadsheet would run as a formula, as OWASP advises."""
    if text and text[0] in FORMULA_STARTS and not _PLAIN_NUMBER.fullmatch(text):
        return "'" + text
    return text


def format_number(value: float) -> str:
    """Like PostgreSQL's float8 output: shortest exact form, integral values without '.0'."""
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def format_datetime(value: dt.datetime) -> str:
    """UTC, to the second: 2021-11-23T14:35:56Z (naive values are UTC already)."""
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def formatter(kind: str | None, escape: bool) -> Callable[[Any], str]:
    """How a value of `kind` is written to an extract (None: as text)."""

    def write(value: Any) -> str:
        if value is None:
            return ""
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, dt.datetime):
            return format_datetime(value)
        if isinstance(value, dt.date):
            return value.isoformat()
        if isinstance(value, float):
            return format_number(value)
        if kind == "boolean" and isinstance(value, int):
            return "true" if value else "false"
        text = str(value)
        return escape_formula(text) if escape and kind in ("string", None) else text

    return write


def safe_file_name(value: Any, default: str) -> str:
    """A base name only: no folder, no separator, no leading dot; `default` if nothing is left."""
    name = str(value).replace("\\", "/").rsplit("/", 1)[-1]
    name = _FILE_NAME_CHARS.sub("_", name).lstrip(".")[:128]
    return name or default


class ExtractWriter:
    """Writes an extract in its encoding: the header, then rows (csv.writer) or the bytes COPY
    sends. A value the encoding cannot hold fails the activity, naming the character."""

    def __init__(self, encoding: str, delimiter: str) -> None:
        self.error: str | None = None
        self._encoding = encoding
        self._encoder = codecs.getincrementalencoder(encoding)("strict")
        self._utf8 = codecs.lookup(encoding).name in ("utf-8", "utf-8-sig")
        self._parts: list[str] = []
        self._csv = csv.writer(_Sink(self._parts), delimiter=delimiter, lineterminator="\n")

    def start(self, out: IO[bytes], labels: Sequence[str] | None) -> None:
        """The header if any; always called, so utf-8-sig writes its BOM first."""
        if labels is not None:
            self._csv.writerow(labels)
        self._emit(out)

    def rows(self, out: IO[bytes], rows: list[list[str]]) -> None:
        self._csv.writerows(rows)
        self._emit(out)

    def copy_target(self, out: IO[bytes]) -> Any:
        """Where COPY's UTF-8 bytes go: the file itself, or through a transcoder."""
        return out if self._utf8 else _Transcoder(self, out)

    def finish(self) -> None:
        if self.error is not None:
            raise ActivityError(self.error)

    def encode(self, text: str) -> bytes | None:
        """`text` in the extract's encoding; None (and self.error) when it cannot be."""
        try:
            return self._encoder.encode(text)
        except UnicodeEncodeError as error:
            bad = error.object[error.start : error.end]
            self.error = f"{bad!r} cannot be written in {self._encoding}: extract in utf-8 instead"
            return None

    def _emit(self, out: IO[bytes]) -> None:
        data = self.encode("".join(self._parts))
        self._parts.clear()
        if data is None:
            self.finish()
        else:
            out.write(data)


class _Transcoder:
    """A write() target for COPY TO that re-encodes its UTF-8 bytes; stops at the first error
    (raised once COPY has ended: an exception inside psycopg2's callback would be lost)."""

    def __init__(self, writer: ExtractWriter, out: IO[bytes]) -> None:
        self._writer = writer
        self._out = out
        self._decoder = codecs.getincrementaldecoder("utf-8")()

    def write(self, data: bytes) -> None:
        if self._writer.error is not None:
            return
        encoded = self._writer.encode(self._decoder.decode(data))
        if encoded is not None:
            self._out.write(encoded)
