"""`$(vars/x)` placeholders in activity options: find them and substitute event variables."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from worker.errors import FilterError

MAX_DEPTH = 32
PLACEHOLDER = re.compile(r"\$\(vars/([A-Za-z_][A-Za-z0-9_]*(?:/[A-Za-z_][A-Za-z0-9_]*)*)\)")


def substitute(value: Any, vars: Mapping[str, Any]) -> Any:
    """Return a copy of `value` with every `$(vars/name)` placeholder replaced.

    Dicts and lists are walked (dict keys are left alone); other values are returned
    as they are. A string that is exactly one placeholder becomes the variable's value
    with its type (None when missing); a placeholder inside a longer string is replaced
    by `str(value)` (the empty string when missing). `$(vars/a/b)` walks nested objects.
    Text that only looks like a placeholder (`$(vars/)`, `$(foo)`) is kept as is.

    Raises FilterError when `value`, or a container variable rendered into a string,
    nests deeper than MAX_DEPTH.
    """
    return _substitute(value, vars, 0)


def find_placeholders(value: Any) -> set[str]:
    """Return the variable paths (`name`, `a/b`) of the placeholders found in `value`.

    Raises FilterError when `value` nests deeper than MAX_DEPTH.
    """
    found: set[str] = set()
    for text in _strings(value):
        found.update(PLACEHOLDER.findall(text))
    return found


def _substitute(value: Any, vars: Mapping[str, Any], depth: int) -> Any:
    if isinstance(value, str):
        return _render(value, vars)
    if isinstance(value, dict):
        _check_depth(depth)
        return {key: _substitute(item, vars, depth + 1) for key, item in value.items()}
    if isinstance(value, list):
        _check_depth(depth)
        return [_substitute(item, vars, depth + 1) for item in value]
    return value


def _render(text: str, vars: Mapping[str, Any]) -> Any:
    whole = PLACEHOLDER.fullmatch(text)
    if whole is not None:
        return _lookup(vars, whole.group(1))
    if "$(" not in text:
        return text
    return PLACEHOLDER.sub(lambda match: _as_text(_lookup(vars, match.group(1))), text)


def _lookup(vars: Mapping[str, Any], path: str) -> Any:
    current: Any = vars
    for part in path.split("/"):
        if not isinstance(current, Mapping):
            return None
        current = current.get(part)
    return current


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, dict | list):
        # str() of a container recurses: walk it first so a deep one fails cleanly.
        for _text in _strings(value):
            pass
    try:
        return str(value)
    except ValueError as exc:
        # int.__str__ refuses integers past sys.get_int_max_str_digits() digits.
        raise FilterError(f"variable cannot be rendered as text: {exc}") from exc


def _strings(value: Any) -> Iterator[str]:
    """Yield the strings inside `value`, walking iteratively and bounding the depth."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        current, depth = stack.pop()
        if isinstance(current, str):
            yield current
        elif isinstance(current, dict | list):
            _check_depth(depth)
            items = current.values() if isinstance(current, dict) else current
            stack.extend((item, depth + 1) for item in items)


def _check_depth(depth: int) -> None:
    if depth >= MAX_DEPTH:
        raise FilterError(f"value nested deeper than {MAX_DEPTH} levels")
