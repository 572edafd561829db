"""Strict JSON request bodies: size-capped, JSON media type, no NaN/Infinity, bounded nesting."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import Any

from flask import current_app, request
from werkzeug.exceptions import RequestEntityTooLarge

from api.errors import ApiError, bad_request

DEFAULT_LIMIT = 64 * 1024
CHUNK = 16 * 1024
#: Deepest nesting of arrays and objects accepted (a definition's filters need some depth).
MAX_DEPTH = 64


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed in JSON bodies")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:20]} is out of range")
    return value


def _check_tree(value: Any) -> None:
    """Refuse nesting past MAX_DEPTH and lone surrogates (`"\\ud800"`: valid JSON that no
    database can store); iterative, so a deep document cannot exhaust the stack here."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise bad_request(
                    "the body holds a lone UTF-16 surrogate (\\ud800-\\udfff)"
                ) from None
            continue
        if isinstance(item, dict | list):
            if depth >= MAX_DEPTH:
                raise bad_request(f"the body is nested more than {MAX_DEPTH} levels deep")
            children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Parsers disagree on which of two equal keys counts (first, last, error): refuse both.
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise ValueError(f"duplicate key {json.dumps(key[:80])}")
        found[key] = value
    return found


def parse_json(raw: bytes) -> Any:
    """Decode a JSON document strictly; ApiError(400) saying what is wrong otherwise."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise bad_request("the body is not valid UTF-8") from None
    try:
        value = json.loads(
            text,
            parse_constant=_refuse_constant,
            parse_float=_finite_float,
            object_pairs_hook=_unique_keys,
        )
    except RecursionError:
        raise bad_request(f"the body is nested more than {MAX_DEPTH} levels deep") from None
    except ValueError as exc:
        raise bad_request(f"the body is not valid JSON: {exc}") from None
    _check_tree(value)
    return value


def read_body() -> bytes:
    """The raw body, at most MAX_CONTENT_LENGTH bytes, chunked bodies included (413 beyond)."""
    if request.content_length is not None:
        # werkzeug refuses a Content-Length over the limit and reads no further than it.
        return request.get_data(cache=True)
    if "wsgi.input_terminated" not in request.environ:
        return b""  # no length and a server that does not end the stream: nothing safe to read
    # A chunked body: werkzeug would stop silently at the limit; read one byte more to know.
    limit = int(current_app.config.get("MAX_CONTENT_LENGTH") or DEFAULT_LIMIT)
    stream = request.environ["wsgi.input"]
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = stream.read(min(CHUNK, limit + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if size > limit:
        raise RequestEntityTooLarge()
    return b"".join(chunks)


def json_body() -> Any:
    """The request's JSON document: 413 over MAX_CONTENT_LENGTH, 415 not JSON, 400 malformed."""
    # Read first: a body over the limit is refused as such whatever its media type.
    raw = read_body()
    if not raw.strip():
        raise bad_request("a JSON body is required")
    if not request.is_json:
        raise ApiError(
            415,
            "the body must be JSON (Content-Type: application/json)",
            details={"contentType": request.mimetype or None},
        )
    return parse_json(raw)


def json_object(allowed: Iterable[str] | None = None) -> dict[str, Any]:
    """The body as a JSON object; with `allowed`, any other top-level key is refused."""
    body = json_body()
    if not isinstance(body, dict):
        raise bad_request("the body must be a JSON object")
    if allowed is not None:
        extra = sorted(set(body) - set(allowed))
        if extra:
            raise bad_request(
                f"unknown key(s) {', '.join(repr(k) for k in extra)}; "
                f"allowed: {', '.join(sorted(allowed))}",
                unknown=extra,
            )
    return body
