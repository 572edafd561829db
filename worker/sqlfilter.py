"""The filter DSL compiled to a SQLAlchemy Core condition on one resource, values bound."""

from __future__ import annotations

import calendar
import datetime as dt
import difflib
from collections.abc import Mapping
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    Float,
    Integer,
    String,
    and_,
    extract,
    false,
    func,
    literal,
    not_,
    or_,
    select,
    true,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.types import TypeEngine

from worker import expressions, filters
from worker.db import UTCDateTime
from worker.errors import FilterError
from worker.resources import Field, Link, Resource

#: Values one filter may bind in total (IN lists included): well under SQLite's default
#: limit of 32,766 parameters per statement, with room for the statement's own.
MAX_BOUND_VALUES = 30_000

_ORDERING = frozenset({"eq", "ne", "lt", "le", "gt", "ge", "in", "notIn", "between"})
_EMPTINESS = frozenset({"isEmpty", "notEmpty"})
#: Operators that apply to each field kind (see resources._kind).
OPS_BY_KIND: dict[str, frozenset[str]] = {
    "string": filters.OPS - {"relativeDays"},
    "integer": _ORDERING | _EMPTINESS,
    "number": _ORDERING | _EMPTINESS,
    "boolean": frozenset({"eq", "ne", "in", "notIn"}) | _EMPTINESS,
    "date": _ORDERING | _EMPTINESS | {"relativeDays"},
    "datetime": _ORDERING | _EMPTINESS | {"relativeDays"},
}
#: On a link, these hold when *no* linked row matches the positive operator.
_NEGATED_ON_LINKS = {"ne": "eq", "notIn": "in", "isEmpty": "notEmpty"}
_INT64 = 2**63 - 1
_SHOWN_CHARS = 40
#: Every month-day of a leap year in calendar order, as month * 100 + day.
_MONTH_DAYS = [
    month * 100 + day
    for month in range(1, 13)
    for day in range(1, calendar.monthrange(2000, month)[1] + 1)
]


def compile_filter(
    node: object,
    resource: Resource,
    *,
    vars: Mapping[str, Any],
    counts: Mapping[str, Any],
    today: dt.date,
    where: str = "filter",
) -> ColumnElement[bool]:
    """Compile the filter `node` to a condition on `resource.table`; FilterError naming the path.

    The node is validated (`filters.validate_filter`), `$(vars/x)` placeholders in leaf
    values are substituted and the result validated again. Every value travels as a bound
    parameter; identifiers only come from `resource.fields` and `resource.links`. The
    caller still scopes the statement to its organization (`resource.org == org_id`).

    Fields: `name` is a column of the resource; `link.name` (`subscriptions.service`) a
    field of a linked resource; `vars.x` and `counts.x` are evaluated here, in Python, with
    `filters.evaluate`, and become a constant true or false.

    Semantics follow `filters.evaluate`: a NULL column matches only `ne`, `isEmpty` (and
    `notIn` never), and every condition is two-valued, so `not` holds for NULLs as in
    Python. The differences:

    - a value must fit the field's kind, else FilterError (the evaluator answers "no
      match"): numbers and numeric strings for integer/number fields; booleans and
      "true"/"false" for boolean ones; ISO-8601 dates or datetimes for date/datetime
      ones; strings, or numbers taken as their text, for string fields. Operators must
      apply to the kind (`OPS_BY_KIND`): no `startsWith` on a boolean;
    - string fields compare as text, never as numbers or dates, and `lt`...`between`
      order strings by the database's collation (code points on SQLite);
    - a date value against a datetime field compares the field's UTC calendar day, a
      datetime value against a date field its own calendar day, as the evaluator does;
    - `contains`, `startsWith`, `endsWith` match literally and case-sensitively on every
      database (position and substring functions, no LIKE: `%` and `_` are ordinary);
    - on a link, positive operators hold when some linked row matches; `ne`, `notIn`
      and `isEmpty` hold when no linked row matches `eq`, `in`, `notEmpty` (so `ne` is
      exactly `not eq`, and `isEmpty` means no linked row carries a value at all).

    At most MAX_BOUND_VALUES values are bound, IN lists included.
    """
    if isinstance(today, dt.datetime):
        today = today.date()
    filters.validate_filter(node, where=where)
    substituted = _substitute(node, vars, where)
    filters.validate_filter(substituted, where=where)
    return _Compiler(resource, vars, counts, today).node(substituted, where)


def check_filter(node: object, resource: Resource, *, where: str = "filter") -> None:
    """Save-time check of a filter against `resource`: structure, fields, operators, values.

    Values holding a `$(vars/x)` placeholder and `vars.`/`counts.` leaves are only known at
    run time: their fields and operators are checked, their values when compiled.
    """
    filters.validate_filter(node, where=where)
    today = dt.datetime.now(dt.UTC).date()
    _Compiler(resource, {}, {}, today, checking=True).node(node, where)


# -- dialect-specific functions ------------------------------------------------------------


class _position(FunctionElement[int]):
    """1-based position of a substring in a string, 0 when absent (case-sensitive)."""

    type = Integer()
    name = "position"
    inherit_cache = True


@compiles(_position)
def _position_default(element: _position, compiler: SQLCompiler, **kw: Any) -> str:
    return f"instr({compiler.process(element.clauses, **kw)})"


@compiles(_position, "postgresql")
def _position_postgresql(element: _position, compiler: SQLCompiler, **kw: Any) -> str:
    return f"strpos({compiler.process(element.clauses, **kw)})"


class _utc_day(FunctionElement[dt.date]):
    """The UTC calendar day of a datetime column."""

    type = Date()
    name = "utc_day"
    inherit_cache = True


@compiles(_utc_day)
def _utc_day_default(element: _utc_day, compiler: SQLCompiler, **kw: Any) -> str:
    # SQLite keeps UTC datetimes as naive 'YYYY-MM-DD HH:MM:SS.ffffff' text.
    return f"date({compiler.process(element.clauses, **kw)})"


@compiles(_utc_day, "postgresql")
def _utc_day_postgresql(element: _utc_day, compiler: SQLCompiler, **kw: Any) -> str:
    # A timestamptz cast straight to date would use the session's time zone.
    return f"CAST(timezone('UTC', {compiler.process(element.clauses, **kw)}) AS DATE)"


# -- the compiler --------------------------------------------------------------------------


class _Compiler:
    """Walks a validated filter (depth bounded by filters.MAX_DEPTH) and builds the condition."""

    def __init__(
        self,
        resource: Resource,
        vars: Mapping[str, Any],
        counts: Mapping[str, Any],
        today: dt.date,
        *,
        checking: bool = False,
    ) -> None:
        self.resource = resource
        self.context = {"vars": vars, "counts": counts}
        self.today = today
        self.checking = checking
        self.bound = 0

    def node(self, node: Any, path: str) -> ColumnElement[bool]:
        if "all" in node:
            return and_(*(self.node(c, f"{path}.all[{i}]") for i, c in enumerate(node["all"])))
        if "any" in node:
            return or_(*(self.node(c, f"{path}.any[{i}]") for i, c in enumerate(node["any"])))
        if "not" in node:
            return not_(self.node(node["not"], f"{path}.not"))
        return self.leaf(node, path)

    def leaf(self, node: Mapping[str, Any], path: str) -> ColumnElement[bool]:
        name: str = node["field"]
        head, _, rest = name.partition(".")
        if head in ("vars", "counts") and rest:
            if self.checking:
                return true()
            matched = filters.evaluate(node, self.context, today=self.today)
            return true() if matched else false()
        link, field = self.resolve(name, path)
        op: str = node["op"]
        if op not in OPS_BY_KIND.get(field.kind, OPS_BY_KIND["string"]):
            raise _error(f"{path}.op", f"'{op}' does not apply to {field.kind} field {_show(name)}")
        if self.checking and expressions.find_placeholders(node.get("value")):
            return true()
        value = node.get("value")
        if link is None:
            return self.condition(field, op, value, f"{path}.value")
        positive = _NEGATED_ON_LINKS.get(op)
        if positive is not None:
            return not_(self.linked(link, self.condition(field, positive, value, f"{path}.value")))
        return self.linked(link, self.condition(field, op, value, f"{path}.value"))

    def resolve(self, name: str, path: str) -> tuple[Link | None, Field]:
        link_name, dot, rest = name.partition(".")
        if dot:
            link = self.resource.links.get(link_name)
            if link is not None and rest in link.fields:
                return link, link.fields[rest]
            known = [f"{n}.{f}" for n, lk in self.resource.links.items() for f in lk.fields]
        else:
            found = self.resource.fields.get(name)
            if found is not None:
                return None, found
            known = list(self.resource.fields)
        guess = difflib.get_close_matches(name[:_SHOWN_CHARS], known, n=1)
        hint = f"; did you mean '{guess[0]}'?" if guess else ""
        raise FilterError(
            f"{path}.field: unknown field {_show(name)} of resource '{self.resource.name}'{hint}",
            details={"path": f"{path}.field", "field": name[:64]},
        )

    def linked(self, link: Link, condition: ColumnElement[bool]) -> ColumnElement[bool]:
        query = select(literal(1)).select_from(link.source).where(link.on, condition)
        return query.correlate(self.resource.table).exists()

    def condition(self, field: Field, op: str, value: Any, path: str) -> ColumnElement[bool]:
        column, kind = field.column, field.kind
        if op == "isEmpty":
            return or_(column.is_(None), column == "") if kind == "string" else column.is_(None)
        if op == "notEmpty":
            if kind == "string":
                return and_(column.is_not(None), column != "")
            return column.is_not(None)
        if op == "ne":
            self.count(1, path)
            coerced = _coerce(value, field, path)
            return or_(_compare(field, "ne", coerced), column.is_(None))
        if op == "notIn":
            return and_(column.is_not(None), not_(self.member(field, value, path)))
        # SQL answers NULL where the column is NULL: make it false, so that `not` holds
        # for a missing value as it does in the evaluator.
        return _present(field, self.positive(field, op, value, path))

    def positive(self, field: Field, op: str, value: Any, path: str) -> ColumnElement[bool]:
        if op == "relativeDays":
            return self.relative_days(field, value, path)
        if op == "in":
            return self.member(field, value, path)
        if op == "between":
            self.count(2, path)
            low = _coerce(value[0], field, f"{path}[0]")
            high = _coerce(value[1], field, f"{path}[1]")
            return and_(_compare(field, "ge", low), _compare(field, "le", high))
        self.count(1, path)
        coerced = _coerce(value, field, path)
        if op in ("contains", "startsWith", "endsWith"):
            return _text_match(field.column, op, coerced)
        return _compare(field, op, coerced)

    def member(self, field: Field, values: list[Any], path: str) -> ColumnElement[bool]:
        self.count(len(values), path)
        items = [_coerce(item, field, f"{path}[{i}]") for i, item in enumerate(values)]
        return _member(field, items)

    def relative_days(
        self, field: Field, spec: Mapping[str, Any], path: str
    ) -> ColumnElement[bool]:
        day = _calendar_day(field)
        low, high = spec["days"]
        self.count(2, path)
        if not spec.get("anniversary", False):
            first, last = _shift(self.today, low), _shift(self.today, high)
            return and_(day >= literal(first, Date()), day <= literal(last, Date()))
        runs = _anniversary_runs(self.today, low, high)
        if runs is None:
            return field.column.is_not(None)
        month_day = extract("month", day) * 100 + extract("day", day)
        return or_(
            *(
                month_day == literal(first, Integer())
                if first == last
                else month_day.between(literal(first, Integer()), literal(last, Integer()))
                for first, last in runs
            )
        )

    def count(self, values: int, path: str) -> None:
        self.bound += values
        if self.bound > MAX_BOUND_VALUES:
            raise _error(path, f"filter binds more than {MAX_BOUND_VALUES:,} values")


# -- values --------------------------------------------------------------------------------


def _substitute(node: Any, vars: Mapping[str, Any], path: str) -> Any:
    """A copy of a validated filter with the placeholders of its leaf values substituted."""
    if "all" in node or "any" in node:
        key = "all" if "all" in node else "any"
        return {key: [_substitute(c, vars, f"{path}.{key}[{i}]") for i, c in enumerate(node[key])]}
    if "not" in node:
        return {"not": _substitute(node["not"], vars, f"{path}.not")}
    if "value" not in node or not expressions.find_placeholders(node["value"]):
        return node
    try:
        value = expressions.substitute(node["value"], vars)
    except FilterError as exc:
        raise _error(f"{path}.value", exc.message) from None
    if value is None:
        names = ", ".join(sorted(expressions.find_placeholders(node["value"])))
        raise _error(f"{path}.value", f"variable {_show(names)} has no value")
    return {**node, "value": value}


def _coerce(value: Any, field: Field, path: str) -> Any:
    """`value` as the Python type of the field's kind; FilterError when it does not fit."""
    kind = field.kind
    if kind in ("integer", "number"):
        return _as_number(value, field, path)
    if kind == "boolean":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise _mismatch(field, "true or false", value, path)
    if kind in ("date", "datetime"):
        return _as_moment(value, field, path)
    return _as_text(value, field, path)


def _as_number(value: Any, field: Field, path: str) -> int | float:
    number = None if isinstance(value, bool) else filters.as_number(value)
    if number is None:
        raise _mismatch(field, "a number", value, path)
    if isinstance(number, int) and abs(number) > _INT64:
        # Drivers cannot bind integers past 64 bits; a float compares the same way.
        try:
            return float(number)
        except OverflowError:
            raise _error(path, "number out of range") from None
    return number


def _as_moment(value: Any, field: Field, path: str) -> dt.date:
    moment = filters.parse_temporal(value) if isinstance(value, str) else None
    if isinstance(value, dt.date):
        moment = value
    if moment is None:
        raise _mismatch(field, "an ISO-8601 date or datetime", value, path)
    if isinstance(moment, dt.datetime):
        if field.kind == "date":
            return moment.date()
        return moment.replace(tzinfo=dt.UTC) if moment.utcoffset() is None else moment
    return moment


def _as_text(value: Any, field: Field, path: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise _mismatch(field, "a string", value, path)
    try:
        text = value if isinstance(value, str) else str(value)
        text.encode("utf-8")
    except (ValueError, UnicodeEncodeError):
        raise _error(path, "not valid text") from None
    if "\x00" in text:
        raise _error(path, "strings may not contain NUL characters")
    return text


def _mismatch(field: Field, expected: str, value: Any, path: str) -> FilterError:
    return _error(
        path, f"{field.kind} field {_show(field.name)} expects {expected}, got {_show(value)}"
    )


# -- SQL pieces ----------------------------------------------------------------------------


def _bind_type(field: Field, value: Any) -> TypeEngine[Any]:
    if field.kind == "boolean":
        return Boolean()
    if field.kind in ("integer", "number"):
        return Float() if isinstance(value, float) else BigInteger()
    if field.kind == "date" or (field.kind == "datetime" and not isinstance(value, dt.datetime)):
        return Date()
    if field.kind == "datetime":
        return UTCDateTime()
    return String()


def _side(field: Field, value: Any) -> ColumnElement[Any]:
    """The field as compared with `value`: its UTC calendar day against a plain date."""
    if field.kind == "datetime" and not isinstance(value, dt.datetime):
        return _utc_day(field.column)
    return field.column


def _compare(field: Field, op: str, value: Any) -> ColumnElement[bool]:
    left, right = _side(field, value), literal(value, _bind_type(field, value))
    if op == "eq":
        return left == right
    if op == "ne":
        return left != right
    if op == "lt":
        return left < right
    if op == "le":
        return left <= right
    if op == "gt":
        return left > right
    return left >= right


def _member(field: Field, items: list[Any]) -> ColumnElement[bool]:
    """`field IN items`, one expanding parameter per group of values compared alike."""
    if field.kind != "datetime":
        return field.column.in_(items)
    moments = [item for item in items if isinstance(item, dt.datetime)]
    days = [item for item in items if not isinstance(item, dt.datetime)]
    if not days:
        return field.column.in_(moments)
    if not moments:
        return _utc_day(field.column).in_(days)
    return or_(field.column.in_(moments), _utc_day(field.column).in_(days))


def _text_match(column: ColumnElement[Any], op: str, text: str) -> ColumnElement[bool]:
    needle = literal(text, String())
    if op == "contains":
        return _position(column, needle) > 0
    size = literal(len(text), Integer())
    if op == "startsWith":
        return func.substr(column, 1, size) == needle
    # Past the start, SQLite counts from the end and PostgreSQL clips: either way the
    # piece is shorter than the needle, so it cannot match.
    return func.substr(column, func.length(column) - size + 1) == needle


def _present(field: Field, condition: ColumnElement[bool]) -> ColumnElement[bool]:
    if not getattr(field.column, "nullable", True):
        return condition
    return and_(field.column.is_not(None), condition)


def _calendar_day(field: Field) -> ColumnElement[Any]:
    return _utc_day(field.column) if field.kind == "datetime" else field.column


def _shift(today: dt.date, days: int) -> dt.date:
    try:
        return today + dt.timedelta(days=days)
    except OverflowError:
        return dt.date.max if days > 0 else dt.date.min


def _anniversary_runs(today: dt.date, low: int, high: int) -> list[tuple[int, int]] | None:
    """Month-days (month * 100 + day) whose yearly recurrence lies in today+low..today+high,
    as runs of consecutive calendar days; None when every day of the year does.

    Feb 29 recurs on Feb 28 in other years, so a window holding Feb 28 of a common year
    also takes Feb 29 (as filters._recurrence does).
    """
    wanted: set[int] = set()
    for offset in range(low, high + 1):
        try:
            day = today + dt.timedelta(days=offset)
        except OverflowError:
            continue
        wanted.add(day.month * 100 + day.day)
        if (day.month, day.day) == (2, 28) and not calendar.isleap(day.year):
            wanted.add(229)
    if len(wanted) == len(_MONTH_DAYS):
        return None
    runs: list[tuple[int, int]] = []
    start: int | None = None
    for index, month_day in enumerate(_MONTH_DAYS):
        if month_day in wanted and start is None:
            start = month_day
        if start is not None and (
            index + 1 == len(_MONTH_DAYS) or _MONTH_DAYS[index + 1] not in wanted
        ):
            runs.append((start, month_day))
            start = None
    return runs


def _error(path: str, message: str) -> FilterError:
    return FilterError(f"{path}: {message}", details={"path": path})


def _show(value: Any) -> str:
    """Quote a user value for a message, cut short."""
    if isinstance(value, str):
        return repr(value[:_SHOWN_CHARS] + "..." if len(value) > _SHOWN_CHARS else value)
    if isinstance(value, bool | int | float):
        return "a boolean" if isinstance(value, bool) else "a number"
    return "a list" if isinstance(value, list) else type(value).__name__
