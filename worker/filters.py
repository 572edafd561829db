"""The filter DSL: structural validation at save time and evaluation against event variables."""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping
from datetime import MAXYEAR, MINYEAR, UTC, date, datetime, timedelta, timezone
from typing import Any

from worker.errors import FilterError

OPS: frozenset[str] = frozenset(
    {
        "eq",
        "ne",
        "lt",
        "le",
        "gt",
        "ge",
        "in",
        "notIn",
        "between",
        "contains",
        "startsWith",
        "endsWith",
        "isEmpty",
        "notEmpty",
        "relativeDays",
    }
)
MAX_DEPTH = 16
MAX_NODES = 1000
MAX_LIST = 10_000
MAX_STRING = 10_000

_COMBINATORS = ("all", "any", "not")
_LEAF_KEYS = frozenset({"field", "op", "value"})
_ORDERING: dict[str, Callable[[Any, Any], bool]] = {
    "lt": operator.lt,
    "le": operator.le,
    "gt": operator.gt,
    "ge": operator.ge,
}
_NO_VALUE_OPS = frozenset({"isEmpty", "notEmpty"})
# Plain relativeDays bounds keep `today + days` inside the calendar for the SQL compiler;
# an anniversary is at most a year away in either direction.
_MAX_DAYS = 100_000
_MAX_ANNIVERSARY_DAYS = 366
_SHOWN_CHARS = 40

_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_INTEGER = re.compile(r"[+-]?[0-9]+")
_ISO = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})"
    r"(?:[Tt ]([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:[.,]([0-9]{1,9}))?)?"
    r"([Zz]|[+-][0-9]{2}(?::?[0-9]{2})?)?)?"
)


def validate_filter(node: object, *, where: str = "filter") -> None:
    """Check that `node` is a well-formed filter, or raise FilterError naming the bad path.

    A node is exactly one of `{"all": [node, ...]}`, `{"any": [node, ...]}`,
    `{"not": node}` or a leaf `{"field": name, "op": op, "value": value}`. Paths in the
    messages start at `where` and read like `filter.all[2].op`.

    Leaf values by operator:

    - `eq ne contains`: a string, number or boolean;
    - `lt le gt ge`: a string or number (ISO-8601 strings compare as datetimes);
    - `startsWith endsWith`: a string;
    - `in notIn`: a list of at most MAX_LIST strings, numbers or booleans;
    - `between`: `[low, high]`, both strings or numbers, bounds included;
    - `isEmpty notEmpty`: no value (absent or null);
    - `relativeDays`: `{"days": [min, max], "anniversary": false}`, `min <= max` integers,
      `anniversary` optional (default false). Without it, the field's date must lie
      between today+min and today+max; with it, some yearly recurrence of the field's
      month and day must (so `{"days": [0, 7], "anniversary": true}` is "birthday in
      the next 7 days"), and |min|, |max| <= 366. Otherwise |min|, |max| <= 100,000.

    null is never a value: use isEmpty/notEmpty. Limits: MAX_DEPTH levels, MAX_NODES
    nodes, MAX_STRING characters per string. The walk is iterative, so any JSON-like
    input, however deep or large, raises FilterError and nothing else.
    """
    count = 0
    # Depth-first with an explicit stack, children pushed in reverse so that the first
    # error reported is the first one in document order.
    stack: list[tuple[object, str, int]] = [(node, where, 1)]
    while stack:
        current, path, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise _error(path, f"filter nested deeper than {MAX_DEPTH} levels")
        count += 1
        children = _check_node(current, path)
        if count + len(stack) + len(children) > MAX_NODES:
            raise _error(where, f"filter has more than {MAX_NODES} nodes")
        stack.extend((child, child_path, depth + 1) for child, child_path in reversed(children))


def evaluate(node: object, context: Mapping[str, Any], *, today: date | None = None) -> bool:
    """Tell whether `context` matches the filter `node` (validated first).

    `context` holds `vars` (the event variables) and `counts` (population counts).
    Fields resolve as: `vars.x` -> vars["x"], `counts.x` -> counts["x"], a bare `x`
    -> vars["x"]; further dotted parts walk nested objects; anything missing is None.

    Comparison rules:

    - a missing (None) field matches nothing but `ne`, `isEmpty`; None, "", [] and {}
      are empty;
    - `ne` is exactly `not eq`, so it holds for a missing field or a value of another
      type; `notIn` needs a present field and holds when no item equals it;
    - values of incompatible types never match (no exception): booleans compare only
      with booleans, never with numbers;
    - a numeric string next to a number compares as a number; two strings compare as
      strings unless both are ISO-8601 dates or datetimes;
    - an ISO-8601 string (`2019-04-03`, `2019-04-03T08:17:19Z`, also
      `2019-04-03 08:17:19.100Z`) next to a date, datetime or another ISO-8601 string
      compares as a datetime; naive datetimes are taken as UTC; a datetime compared
      with a date is cut to its own calendar date;
    - `contains`, `startsWith`, `endsWith` are case-sensitive; `contains` on a list
      field holds when an item equals the value;
    - `relativeDays` counts days from `today` (default: today in UTC) to the field's
      calendar date; an anniversary on Feb 29 falls on Feb 28 in other years.

    Placeholders such as `$(vars/x)` are not expanded here: substitute them first.
    Raises FilterError, and only FilterError, when the filter is invalid.
    """
    validate_filter(node)
    if not isinstance(context, Mapping):
        raise FilterError(f"filter context must be an object, got {_kind(context)}")
    if today is None:
        today = datetime.now(UTC).date()
    return _evaluate(node, context, today)


def referenced_fields(node: object) -> set[str]:
    """Return the field names a filter reads, as written (validated first)."""
    validate_filter(node)
    fields: set[str] = set()
    stack: list[Any] = [node]
    while stack:
        current = stack.pop()
        if "all" in current or "any" in current:
            stack.extend(current.get("all") or current["any"])
        elif "not" in current:
            stack.append(current["not"])
        else:
            fields.add(current["field"])
    return fields


# -- validation ------------------------------------------------------------------------


def _check_node(node: object, path: str) -> list[tuple[object, str]]:
    """Check one node and return its children with their paths."""
    if not isinstance(node, dict):
        raise _error(path, f"expected a filter object, got {_kind(node)}")
    if not node:
        raise _error(path, "empty filter; expected all, any, not or a {field, op, value} leaf")
    combinators = [name for name in _COMBINATORS if name in node]
    if len(combinators) > 1:
        raise _error(path, f"several combinators in one node: {', '.join(combinators)}")
    if not combinators:
        _check_leaf(node, path)
        return []
    name = combinators[0]
    extra = [key for key in node if key != name]
    if extra:
        raise _error(path, f"unknown key {_show_keys(extra)} next to '{name}'")
    body = node[name]
    if name == "not":
        return [(body, f"{path}.not")]
    if not isinstance(body, list):
        raise _error(f"{path}.{name}", f"expected a list of filters, got {_kind(body)}")
    if not body:
        raise _error(f"{path}.{name}", "empty list; give at least one filter")
    if len(body) > MAX_NODES:
        raise _error(f"{path}.{name}", f"filter has more than {MAX_NODES} nodes")
    return [(child, f"{path}.{name}[{index}]") for index, child in enumerate(body)]


def _check_leaf(node: dict[Any, Any], path: str) -> None:
    extra = [key for key in node if key not in _LEAF_KEYS]
    if extra:
        raise _error(
            path,
            f"unknown key {_show_keys(extra)}; "
            "a node is all, any, not or a {field, op, value} leaf",
        )
    if "field" not in node:
        raise _error(path, "missing 'field'")
    if "op" not in node:
        raise _error(path, "missing 'op'")
    field = node["field"]
    if not isinstance(field, str) or not field:
        raise _error(f"{path}.field", f"expected a non-empty string, got {_kind(field)}")
    if len(field) > MAX_STRING:
        raise _error(f"{path}.field", f"longer than {MAX_STRING} characters")
    if not _FIELD.fullmatch(field):
        raise _error(
            f"{path}.field",
            f"invalid field name {_show(field)}: "
            "letters, digits and underscores, dotted for nested fields",
        )
    op = node["op"]
    if not isinstance(op, str):
        raise _error(f"{path}.op", f"expected an operator name, got {_kind(op)}")
    if op not in OPS:
        raise _error(f"{path}.op", f"unknown operator {_show(op)}")
    _check_value(op, node, f"{path}.value")


def _check_value(op: str, node: dict[Any, Any], path: str) -> None:
    value = node.get("value")
    if op in _NO_VALUE_OPS:
        if value is not None:
            raise _error(path, f"'{op}' takes no value")
        return
    if "value" not in node:
        raise _error(path, f"missing value for '{op}'")
    if op in ("in", "notIn"):
        if not isinstance(value, list):
            raise _error(path, f"'{op}' expects a list, got {_kind(value)}")
        if len(value) > MAX_LIST:
            raise _error(path, f"list longer than {MAX_LIST} items")
        for index, item in enumerate(value):
            _check_scalar(item, f"{path}[{index}]")
    elif op == "between":
        if not isinstance(value, list) or len(value) != 2:
            raise _error(path, "'between' expects [low, high]")
        _check_scalar(value[0], f"{path}[0]", ordered=True)
        _check_scalar(value[1], f"{path}[1]", ordered=True)
        # A placeholder bound ("$(vars/lo)") is only known at run time: compare then.
        placeholder = any(isinstance(v, str) and "$(" in v for v in value)
        pair = None if placeholder else _comparable(value[0], value[1])
        if pair is not None and pair[0] > pair[1]:
            raise _error(path, "low bound is greater than high bound")
    elif op == "relativeDays":
        _check_relative_days(value, path)
    elif op in ("startsWith", "endsWith"):
        if not isinstance(value, str):
            raise _error(path, f"'{op}' expects a string, got {_kind(value)}")
        _check_scalar(value, path)
    else:
        _check_scalar(value, path, ordered=op in _ORDERING)


def _check_scalar(value: object, path: str, *, ordered: bool = False) -> None:
    if value is None:
        raise _error(path, "null is not a value; use isEmpty or notEmpty")
    if isinstance(value, bool):
        if ordered:
            raise _error(path, "booleans have no order")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise _error(path, "not a finite number")
    elif isinstance(value, str):
        if len(value) > MAX_STRING:
            raise _error(path, f"string longer than {MAX_STRING} characters")
    elif not isinstance(value, int):
        raise _error(path, f"expected a string, number or boolean, got {_kind(value)}")


def _check_relative_days(value: object, path: str) -> None:
    shape = '{"days": [min, max], "anniversary": false}'
    if not isinstance(value, dict):
        raise _error(path, f"'relativeDays' expects {shape}, got {_kind(value)}")
    extra = [key for key in value if key not in ("days", "anniversary")]
    if extra:
        raise _error(path, f"unknown key {_show_keys(extra)}; expected {shape}")
    anniversary = value.get("anniversary", False)
    if not isinstance(anniversary, bool):
        raise _error(f"{path}.anniversary", f"expected a boolean, got {_kind(anniversary)}")
    days = value.get("days")
    if (
        not isinstance(days, list)
        or len(days) != 2
        or not all(isinstance(day, int) and not isinstance(day, bool) for day in days)
    ):
        raise _error(f"{path}.days", "expected [min, max], two integers")
    low, high = days
    if low > high:
        raise _error(f"{path}.days", "min is greater than max")
    limit = _MAX_ANNIVERSARY_DAYS if anniversary else _MAX_DAYS
    if abs(low) > limit or abs(high) > limit:
        raise _error(f"{path}.days", f"bounds must lie within -{limit}..{limit} days")


def _error(path: str, message: str) -> FilterError:
    return FilterError(f"{path}: {message}", details={"path": path})


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _show(value: object) -> str:
    """Quote a user string for a message, cut short; anything else by its kind."""
    if not isinstance(value, str):
        return _kind(value)
    if len(value) > _SHOWN_CHARS:
        return repr(value[:_SHOWN_CHARS] + "...")
    return repr(value)


def _show_keys(keys: list[Any]) -> str:
    shown = sorted(_show(key) for key in keys[:5])
    return ", ".join(shown) + (", ..." if len(keys) > 5 else "")


# -- evaluation ------------------------------------------------------------------------


def _evaluate(node: Any, context: Mapping[str, Any], today: date) -> bool:
    # Recursion is safe here: validate_filter bounds the depth at MAX_DEPTH.
    if "all" in node:
        return all(_evaluate(child, context, today) for child in node["all"])
    if "any" in node:
        return any(_evaluate(child, context, today) for child in node["any"])
    if "not" in node:
        return not _evaluate(node["not"], context, today)
    return _leaf(node["op"], _resolve(node["field"], context), node.get("value"), today)


def _resolve(field: str, context: Mapping[str, Any]) -> Any:
    parts = field.split(".")
    if parts[0] in ("vars", "counts") and len(parts) > 1:
        current: Any = context.get(parts[0])
        parts = parts[1:]
    else:
        current = context.get("vars")
    for part in parts:
        if not isinstance(current, Mapping):
            return None
        current = current.get(part)
    return current


def _leaf(op: str, actual: Any, expected: Any, today: date) -> bool:
    if op == "isEmpty":
        return _is_empty(actual)
    if op == "notEmpty":
        return not _is_empty(actual)
    if op == "ne":
        return not _equals(actual, expected)
    if actual is None:
        return False
    if op == "eq":
        return _equals(actual, expected)
    if op in _ORDERING:
        return _order(op, actual, expected)
    if op == "in":
        return any(_equals(actual, item) for item in expected)
    if op == "notIn":
        return not any(_equals(actual, item) for item in expected)
    if op == "between":
        return _order("ge", actual, expected[0]) and _order("le", actual, expected[1])
    if op == "contains":
        if isinstance(actual, str):
            return isinstance(expected, str) and expected in actual
        if isinstance(actual, list):
            return any(_equals(item, expected) for item in actual)
        return False
    if op == "startsWith":
        return isinstance(actual, str) and actual.startswith(expected)
    if op == "endsWith":
        return isinstance(actual, str) and actual.endswith(expected)
    if op == "relativeDays":
        return _relative_days(actual, expected, today)
    raise FilterError(f"unknown operator {_show(op)}")


def _is_empty(value: Any) -> bool:
    return value is None or (isinstance(value, str | list | dict) and not value)


def _equals(left: Any, right: Any) -> bool:
    pair = _comparable(left, right)
    return pair is not None and bool(pair[0] == pair[1])


def _order(op: str, left: Any, right: Any) -> bool:
    pair = _comparable(left, right)
    return pair is not None and bool(_ORDERING[op](pair[0], pair[1]))


def _comparable(left: Any, right: Any) -> tuple[Any, Any] | None:
    """Bring two values to one comparable type, or None when they cannot be compared."""
    if left is None or right is None:
        return None
    if isinstance(left, bool) or isinstance(right, bool):
        return (left, right) if isinstance(left, bool) and isinstance(right, bool) else None
    if _is_number(left) or _is_number(right):
        number_left = as_number(left)
        number_right = as_number(right)
        if number_left is None or number_right is None:
            return None
        return number_left, number_right
    if isinstance(left, str) and isinstance(right, str):
        time_left, time_right = parse_temporal(left), parse_temporal(right)
        if time_left is None or time_right is None:
            return left, right
        return _temporal_pair(time_left, time_right)
    time_left, time_right = _as_temporal(left), _as_temporal(right)
    if time_left is None or time_right is None:
        return None
    return _temporal_pair(time_left, time_right)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def as_number(value: Any) -> int | float | None:
    if _is_number(value):
        return value
    if not isinstance(value, str) or not _NUMBER.fullmatch(value):
        return None
    try:
        # int() refuses more than sys.get_int_max_str_digits() digits with ValueError.
        number: int | float = int(value) if _INTEGER.fullmatch(value) else float(value)
    except ValueError:
        return None
    if isinstance(number, float) and not math.isfinite(number):
        return None
    return number


def _as_temporal(value: Any) -> date | None:
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        return parse_temporal(value)
    return None


def parse_temporal(text: str) -> date | None:
    """Parse an ISO-8601 date or datetime (`T`, `t` or a space between), else None."""
    match = _ISO.fullmatch(text)
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    try:
        if hour is None:
            return date(int(year), int(month), int(day))
        return datetime(
            int(year),
            int(month),
            int(day),
            int(hour),
            int(minute),
            int(second or 0),
            int((fraction or "").ljust(6, "0")[:6]),
            tzinfo=_parse_offset(offset),
        )
    except ValueError:
        return None


def _parse_offset(text: str | None) -> timezone | None:
    if text is None:
        return None
    if text in ("Z", "z"):
        return UTC
    digits = text[1:].replace(":", "")
    delta = timedelta(hours=int(digits[:2]), minutes=int(digits[2:] or 0))
    # timezone() raises ValueError past 24 hours, which the caller turns into None.
    return timezone(-delta if text[0] == "-" else delta)


def _temporal_pair(left: date, right: date) -> tuple[date, date]:
    if isinstance(left, datetime) and isinstance(right, datetime):
        return _aware(left), _aware(right)
    return _calendar_day(left), _calendar_day(right)


def _aware(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.utcoffset() is None else moment


def _calendar_day(value: date) -> date:
    return value.date() if isinstance(value, datetime) else value


def _relative_days(actual: Any, spec: dict[str, Any], today: date) -> bool:
    moment = _as_temporal(actual)
    if moment is None:
        return False
    day = _calendar_day(moment)
    low, high = spec["days"]
    if not spec.get("anniversary", False):
        return bool(low <= (day - today).days <= high)
    # The window spans at most 366 days either side of today, so the recurrences in the
    # previous, current and next years cover it.
    for year in (today.year - 1, today.year, today.year + 1):
        if MINYEAR <= year <= MAXYEAR and low <= (_recurrence(day, year) - today).days <= high:
            return True
    return False


def _recurrence(day: date, year: int) -> date:
    """The month and day of `day` in `year`; Feb 29 becomes Feb 28 outside leap years."""
    try:
        return day.replace(year=year)
    except ValueError:
        return date(year, 2, 28)
