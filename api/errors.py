"""One error response shape, `{"error": {"code", "message", "details"}}`, and the status table.

| raised                                  | status | code                  |
|-----------------------------------------|--------|-----------------------|
| ApiError (bad body, bad query...)       | its own| its own               |
| worker.errors.NotFound                  | 404    | notFound              |
| worker.errors.CommandRefused            | 409    | commandRefused        |
| worker.errors.TooManyTriggers           | 429    | tooManyTriggers (+ Retry-After) |
| worker.errors.TriggerRefused            | .status| triggerRefused        |
| worker.errors.DefinitionError (+ subs)  | 422    | invalidDefinition...  |
| any other CarillonError, any Exception  | 500    | internalError (logged, no detail in the body) |
| werkzeug HTTPException (404, 405, 413...)| its own| see HTTP_CODES       |
| database unreachable (OperationalError, | 503    | unavailable (+ Retry-After; nothing |
|   DisconnectionError, pool timeout)     |        |   was done: the transaction rolled back) |
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, current_app, jsonify, request
from sqlalchemy import exc as sa_exc
from werkzeug.exceptions import HTTPException

from worker.errors import (
    CarillonError,
    CommandRefused,
    DefinitionError,
    NotFound,
    TooManyTriggers,
    TriggerRefused,
)
from worker.outage import is_outage

log = logging.getLogger(__name__)

#: Error codes of the HTTP statuses werkzeug raises itself (routing, size limits).
HTTP_CODES = {
    400: "badRequest",
    401: "unauthorized",
    403: "forbidden",
    404: "notFound",
    405: "methodNotAllowed",
    409: "conflict",
    413: "payloadTooLarge",
    415: "unsupportedMediaType",
    422: "unprocessableEntity",
    429: "tooManyRequests",
    500: "internalError",
    503: "unavailable",
}
INTERNAL_MESSAGE = "an unexpected error occurred; it has been logged"
UNAVAILABLE_MESSAGE = "the database is unavailable; nothing was done, retry later"
#: Seconds a client is told to wait while the database is away (a restart takes a few).
UNAVAILABLE_RETRY_AFTER = 5


class ApiError(Exception):
    """Raised by a view when a request is refused before it reaches the engine."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code or HTTP_CODES.get(status, "error")
        self.message = message
        self.details = details or {}
        self.headers = headers or {}


def bad_request(message: str, **details: Any) -> ApiError:
    return ApiError(400, message, details=details)


def error_response(
    status: int,
    code: str,
    message: str,
    details: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    response = jsonify({"error": {"code": code, "message": message, "details": details or {}}})
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def status_of(exc: CarillonError) -> int:
    """The HTTP status of an engine error (500 for those a client cannot cause)."""
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, CommandRefused):
        return 409
    if isinstance(exc, TriggerRefused):  # TooManyTriggers carries 429
        return exc.status
    if isinstance(exc, DefinitionError):
        return 422
    return 500


def _on_api_error(exc: ApiError) -> Response:
    return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)


def _on_carillon_error(exc: CarillonError) -> Response:
    status = status_of(exc)
    if status >= 500:
        return _on_unexpected(exc)
    headers: dict[str, str] = {}
    if isinstance(exc, TooManyTriggers):
        headers["Retry-After"] = str(exc.retry_after)
    details = dict(exc.details)
    if isinstance(exc, DefinitionError) and exc.activity is not None:
        details["activity"] = exc.activity
    return error_response(status, exc.code, exc.message, details, headers)


def _on_http_error(exc: HTTPException) -> Response:
    status = exc.code or 500
    if status >= 500:
        return _on_unexpected(exc)
    headers = {
        name: value for name, value in exc.get_headers() if name.lower() in ("allow", "retry-after")
    }
    message = {
        404: "no such resource",
        405: f"method {request.method} is not allowed here",
        413: f"the request body is larger than {_limit_kb()} KB",
    }.get(status, exc.description or exc.name)
    return error_response(status, HTTP_CODES.get(status, "error"), message, headers=headers)


def _limit_kb() -> int:
    return int(current_app.config.get("MAX_CONTENT_LENGTH") or 0) // 1024


def _on_unexpected(exc: BaseException) -> Response:
    # The method and path only: headers carry credentials and are never logged.
    log.error("unhandled error on %s %s", request.method, request.path, exc_info=exc)
    return error_response(500, "internalError", INTERNAL_MESSAGE)


#: psycopg2's refusal of a NUL character in a string parameter (PostgreSQL's text cannot hold
#: one): raised while the statement is sent, so its transaction rolls back, nothing done.
NUL_REFUSED = "cannot contain NUL (0x00) characters"


def _on_value_error(exc: ValueError) -> Response:
    if NUL_REFUSED not in str(exc):
        return _on_unexpected(exc)
    return error_response(
        400,
        "badRequest",
        "a string holds a NUL character (\\u0000), which the database cannot store; "
        "nothing was done",
    )


def _on_database_error(exc: Exception) -> Response:
    if not is_outage(exc):
        return _on_unexpected(exc)
    # No traceback: an outage is expected now and then, and says nothing about this request.
    log.warning(
        "database unavailable on %s %s (%s): 503", request.method, request.path, type(exc).__name__
    )
    return error_response(
        503,
        "unavailable",
        UNAVAILABLE_MESSAGE,
        headers={"Retry-After": str(UNAVAILABLE_RETRY_AFTER)},
    )


def register(app: Flask) -> None:
    """Install the handlers: every error leaves the app in the one shape."""
    app.register_error_handler(ApiError, _on_api_error)
    app.register_error_handler(CarillonError, _on_carillon_error)
    app.register_error_handler(HTTPException, _on_http_error)
    for database_error in (sa_exc.DBAPIError, sa_exc.DisconnectionError, sa_exc.TimeoutError):
        app.register_error_handler(database_error, _on_database_error)
    app.register_error_handler(ValueError, _on_value_error)
    app.register_error_handler(Exception, _on_unexpected)
