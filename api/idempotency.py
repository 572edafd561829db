"""`Idempotency-Key` (Stripe's way): a retried POST gets the first response back, done once.

The key is claimed first, by inserting its row (primary key: organization and key) in its
own transaction: of concurrent identical requests exactly one inserts and runs the view,
the others wait for its response (bounded) and replay it. Only successful (2xx) responses
are kept: an error changed nothing, so the key is released and a retry runs again. The
same key with another method, path or body is refused (422). Rows live 24 hours; the
engine's tick deletes expired ones.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar, cast

from flask import Response, current_app, jsonify, request
from sqlalchemy import delete, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from api.context import caller, carillon
from api.errors import ApiError
from worker.db import utcnow
from worker.models import IdempotencyKey

log = logging.getLogger(__name__)

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255
#: How long a response is replayed.
TTL = dt.timedelta(hours=24)
#: How long a request waits for a concurrent one with its key to finish before a 409.
WAIT_SECONDS = 10.0
#: A key still `processing` after this long belongs to a request that died: taken over.
ABANDONED_AFTER = dt.timedelta(seconds=60)

View = TypeVar("View", bound=Callable[..., Any])


def validate_key(raw: str) -> str:
    """The key as sent, or a 400 when it is empty, too long or not printable ASCII."""
    if not raw or len(raw) > MAX_KEY_LENGTH or not all(" " <= ch <= "~" for ch in raw):
        raise ApiError(
            400,
            f"{HEADER} must be 1 to {MAX_KEY_LENGTH} printable ASCII characters",
            code="badRequest",
            details={"header": HEADER},
        )
    return raw


def fingerprint() -> str:
    """SHA-256 of the method, the path and the body (canonical JSON when it parses)."""
    data = request.get_data(cache=True)
    try:
        body = json.dumps(json.loads(data), sort_keys=True, separators=(",", ":")).encode()
    except ValueError:  # not JSON (the view will say so): compare the bytes
        body = data
    digest = hashlib.sha256()
    for part in (request.method.encode(), request.path.encode("utf-8", "replace"), body):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def _replay(row: IdempotencyKey) -> Response:
    response = jsonify(row.body)
    response.status_code = row.status or 200
    if row.location:
        response.headers["Location"] = row.location
    response.headers["Idempotent-Replayed"] = "true"
    return response


def _try_insert(sessions: sessionmaker[Session], org_id: int, key: str, digest: str) -> bool:
    now = utcnow()
    try:
        with sessions() as s, s.begin():
            s.add(
                IdempotencyKey(
                    org_id=org_id,
                    key=key,
                    fingerprint=digest,
                    state="processing",
                    created_at=now,
                    expires_at=now + TTL,
                )
            )
    except IntegrityError:
        return False
    return True


def claim(sessions: sessionmaker[Session], org_id: int, key: str, digest: str) -> Response | None:
    """None when this request owns the key now (run the view); else the response to give."""
    deadline = time.monotonic() + WAIT_SECONDS
    pause = 0.02
    while True:
        if _try_insert(sessions, org_id, key, digest):
            return None
        now = utcnow()
        with sessions() as s:
            row = s.get(IdempotencyKey, (org_id, key))
        if row is not None and row.expires_at <= now:
            with sessions() as s, s.begin():
                s.execute(
                    delete(IdempotencyKey).where(
                        IdempotencyKey.org_id == org_id,
                        IdempotencyKey.key == key,
                        IdempotencyKey.expires_at <= now,
                    )
                )
            continue
        if row is not None:
            if row.fingerprint != digest:
                raise ApiError(
                    422,
                    f"this {HEADER} was used with another request (method, path or body); "
                    "use a new key for a new request",
                    code="idempotencyKeyReused",
                    details={"header": HEADER},
                )
            if row.state == "done":
                return _replay(row)
            if row.created_at <= now - ABANDONED_AFTER and _take_over(sessions, row, now):
                return None
        if time.monotonic() >= deadline:
            raise ApiError(
                409,
                f"a request with this {HEADER} is still being processed; retry later",
                code="idempotencyKeyInUse",
                headers={"Retry-After": "1"},
            )
        time.sleep(pause)  # waiting for the concurrent request's response, bounded above
        pause = min(pause * 2, 0.2)


def _take_over(sessions: sessionmaker[Session], row: IdempotencyKey, now: dt.datetime) -> bool:
    with sessions() as s, s.begin():
        result = s.execute(
            update(IdempotencyKey)
            .where(
                IdempotencyKey.org_id == row.org_id,
                IdempotencyKey.key == row.key,
                IdempotencyKey.state == "processing",
                IdempotencyKey.created_at == row.created_at,
            )
            .values(created_at=now, expires_at=now + TTL)
        )
        return bool(cast(Any, result).rowcount == 1)


def _release(sessions: sessionmaker[Session], org_id: int, key: str) -> None:
    with sessions() as s, s.begin():
        s.execute(
            delete(IdempotencyKey).where(
                IdempotencyKey.org_id == org_id,
                IdempotencyKey.key == key,
                IdempotencyKey.state == "processing",
            )
        )


def _store(sessions: sessionmaker[Session], org_id: int, key: str, response: Response) -> None:
    with sessions() as s, s.begin():
        s.execute(
            update(IdempotencyKey)
            .where(IdempotencyKey.org_id == org_id, IdempotencyKey.key == key)
            .values(
                state="done",
                status=response.status_code,
                body=response.get_json(silent=True),
                location=response.headers.get("Location"),
            )
        )


def idempotent(view: View) -> View:
    """Make a POST view honour `Idempotency-Key` (absent: the view runs as always)."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        raw = request.headers.get(HEADER)
        if raw is None:
            return view(*args, **kwargs)
        key = validate_key(raw)
        sessions, org_id = carillon().sessions, caller().org_id
        replay = claim(sessions, org_id, key, fingerprint())
        if replay is not None:
            return replay
        try:
            response = current_app.make_response(view(*args, **kwargs))
        except BaseException:
            try:
                _release(sessions, org_id, key)  # nothing was done: a retry runs again
            except Exception:  # the database is away: the key is taken over once abandoned
                log.warning("could not release an Idempotency-Key", exc_info=True)
            raise
        if 200 <= response.status_code < 300:
            _store(sessions, org_id, key, response)
        else:
            _release(sessions, org_id, key)
        return response

    return cast(View, wrapper)
