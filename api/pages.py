"""Lists the platform's way: `_lineCount`/`_lineStart` in, `{content, count, next}` out."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from flask import request
from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from api.context import public_url
from api.errors import bad_request

DEFAULT_LINE_COUNT = 25
MAX_LINE_COUNT = 500
#: An offset beyond this is refused rather than scanned (it would not be a page any more).
MAX_LINE_START = 10**9


@dataclass(frozen=True)
class Window:
    """The requested slice of a list."""

    start: int
    count: int


def _integer(name: str, default: int, minimum: int, maximum: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    text = raw.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 10:
        raise bad_request(f"{name} must be an integer between {minimum} and {maximum}", name=name)
    value = int(text)
    if not minimum <= value <= maximum:
        raise bad_request(f"{name} must be an integer between {minimum} and {maximum}", name=name)
    return value


def text_filter(name: str, maximum: int) -> str | None:
    """A list's text filter from the query string: absent, or at most `maximum` characters
    and no control character (PostgreSQL refuses NUL: it must be a 400 here, not a 500)."""
    value = request.args.get(name)
    if value is None:
        return None
    if len(value) > maximum or any(ord(char) < 32 for char in value):
        raise bad_request(
            f"{name} must be at most {maximum} characters, none a control character", name=name
        )
    return value


def window() -> Window:
    """The `_lineStart`/`_lineCount` of the request; ApiError(400) when they are not valid."""
    return Window(
        start=_integer("_lineStart", 0, 0, MAX_LINE_START),
        count=_integer("_lineCount", DEFAULT_LINE_COUNT, 1, MAX_LINE_COUNT),
    )


def _next_href(start: int) -> str:
    args = [(key, value) for key, value in request.args.items(multi=True) if key != "_lineStart"]
    args.append(("_lineStart", str(start)))
    return public_url(f"{request.path}?{urlencode(args)}")


def page(
    s: Session,
    stmt: Select[Any],
    render: Callable[[Any], dict[str, Any]],
) -> dict[str, Any]:
    """Run `stmt` (already ordered) for the requested window and render a list response."""
    slot = window()
    total = s.execute(select(func.count()).select_from(stmt.order_by(None).subquery())).scalar_one()
    found: Sequence[Any] = s.scalars(stmt.offset(slot.start).limit(slot.count)).all()
    body: dict[str, Any] = {"content": [render(row) for row in found], "count": {"value": total}}
    if slot.start + slot.count < total:
        body["next"] = {"href": _next_href(slot.start + slot.count)}
    return body
