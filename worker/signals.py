"""Typed parameters of external signals: declaration checks and coercion of trigger values."""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Mapping
from typing import Any

from worker.errors import TriggerRefused

PARAMETER_TYPES = frozenset({"string", "number", "boolean", "datetime"})
NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}\Z")
MAX_PARAMETERS = 100
MAX_STRING = 16_384
_NUMBER_RE = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d{1,3})?\Z")
# ISO 8601 with a 'T' or the platform's space form: 2019-04-03 08:17:19.100Z
_DATETIME_RE = re.compile(
    r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?)?(Z|[+-]\d{2}:?\d{2})?$"
)


def check_declaration(parameters: Any) -> str | None:
    """Why a signal's `parameters` declaration is invalid, or None when it is fine."""
    if not isinstance(parameters, Mapping):
        return "must map parameter names to types"
    if len(parameters) > MAX_PARAMETERS:
        return f"at most {MAX_PARAMETERS} parameters"
    for name, kind in parameters.items():
        if not isinstance(name, str) or not NAME_RE.match(name):
            return f"invalid parameter name {name!r}"
        if not isinstance(kind, str) or kind not in PARAMETER_TYPES:
            return f"parameter '{name}' has type {kind!r}; use one of {sorted(PARAMETER_TYPES)}"
    return None


def coerce(declared: Mapping[str, str], given: Any) -> dict[str, Any]:
    """Check trigger parameters against the declaration; return JSON-ready typed values."""
    if given is None:
        return {}
    if not isinstance(given, Mapping):
        raise TriggerRefused("'parameters' must be an object")
    values: dict[str, Any] = {}
    for name, raw in given.items():
        if name not in declared:
            raise TriggerRefused(
                f"'{name}' parameter isn't defined in signal activity",
                details={"parameter": name},
            )
        try:
            values[name] = _coerce_one(declared[name], raw)
        except ValueError as exc:
            raise TriggerRefused(
                f"'{name}' parameter must be a {declared[name]}: {exc}",
                details={"parameter": name, "expected": declared[name]},
            ) from None
    return values


def _coerce_one(kind: str, raw: Any) -> Any:
    if raw is None:
        return None
    if kind == "string":
        if isinstance(raw, bool) or not isinstance(raw, str | int | float):
            raise ValueError("expected a string")
        if isinstance(raw, float) and not math.isfinite(raw):
            raise ValueError("not a finite number")
        text = raw if isinstance(raw, str) else str(raw)
        if len(text) > MAX_STRING:
            raise ValueError(f"longer than {MAX_STRING} characters")
        return text
    if kind == "number":
        if isinstance(raw, bool):
            raise ValueError("expected a number, got a boolean")
        if isinstance(raw, int | float):
            number: float | int = raw
        elif isinstance(raw, str) and len(raw) <= 64 and _NUMBER_RE.match(raw.strip()):
            text = raw.strip()
            number = float(text) if any(c in text for c in ".eE") else int(text)
        else:
            raise ValueError("expected a number such as 42 or -3.5")
        if isinstance(number, float) and not math.isfinite(number):
            raise ValueError("not a finite number")
        return number
    if kind == "boolean":
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.lower() in ("true", "false"):
            return raw.lower() == "true"
        raise ValueError("expected true or false")
    if kind == "datetime":
        return parse_datetime(raw).isoformat()
    raise ValueError(f"unknown type {kind}")


def parse_datetime(raw: Any) -> dt.datetime:
    """ISO 8601 (also `2019-04-03 08:17:19.100Z`) to an aware UTC datetime; naive means UTC."""
    if not isinstance(raw, str) or not _DATETIME_RE.match(raw.strip()):
        raise ValueError("expected an ISO 8601 date-time such as 2019-04-03 08:17:19.100Z")
    text = raw.strip().replace("Z", "+00:00")
    value = dt.datetime.fromisoformat(text)
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    try:
        return value.astimezone(dt.UTC)
    except OverflowError:
        raise ValueError("the date-time is outside the supported calendar in UTC") from None
