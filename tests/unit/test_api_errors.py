"""The API's one error shape and its statuses: bodies, sizes, media types, routes, surprises."""

from __future__ import annotations

import io
import logging
from typing import Any

import pytest

from tests import api_conftest
from tests.api_conftest import SIGNAL_WORKFLOW, Rest, error_of
from worker.errors import CommandRefused, DefinitionError, NotFound, TooManyTriggers

# The fixtures `make_rest` and `rest`, shared by the API tests.
make_rest_fixture = api_conftest.make_rest_fixture
rest_fixture = api_conftest.rest_fixture

COMMANDS = "/acme/campaign/workflow/execution/sig/commands"


@pytest.fixture
def saved(rest: Rest) -> Rest:
    rest.save(SIGNAL_WORKFLOW)
    return rest


def test_health_needs_no_credentials(rest: Rest) -> None:
    response = rest.client.get("/healthz")

    assert response.status_code == 200
    assert response.json == {"status": "ok"}


def test_malformed_json_is_a_400(saved: Rest) -> None:
    error = error_of(saved.raw("POST", COMMANDS, b'{"method": "start"'), 400, "badRequest")

    assert "not valid JSON" in error["message"]


@pytest.mark.parametrize(
    "raw",
    [b'{"method": NaN}', b'{"method": Infinity}', b'{"method": -Infinity}', b'{"n": 1e999}'],
)
def test_nan_and_infinity_are_refused(saved: Rest, raw: bytes) -> None:
    error_of(saved.raw("POST", COMMANDS, raw), 400, "badRequest")


def test_duplicate_keys_are_refused_at_any_depth_and_nothing_is_done(saved: Rest) -> None:
    # Parsers disagree on which duplicate counts, so a proxy and we could read two bodies.
    for raw in (
        b'{"method": "stop", "method": "start"}',
        b'{"method": "start", "x": {"a": 1, "a": 2}}',
    ):
        error = error_of(saved.raw("POST", COMMANDS, raw), 400, "badRequest")
        assert "duplicate key" in error["message"]
    assert saved.rows()["Command"] == 0


def test_nesting_deeper_than_the_cap_is_refused(saved: Rest) -> None:
    deep = b'{"method": ' + b"[" * 100 + b"]" * 100 + b"}"
    very_deep = b"[" * 20_000 + b"]" * 20_000

    error = error_of(saved.raw("POST", COMMANDS, deep), 400, "badRequest")
    error_of(saved.raw("POST", COMMANDS, very_deep), 400, "badRequest")

    assert "nested" in error["message"]


def test_a_lone_surrogate_is_refused_rather_than_stored(saved: Rest) -> None:
    error = error_of(saved.raw("POST", COMMANDS, b'{"method": "\\ud800"}'), 400)

    assert "surrogate" in error["message"]


def test_invalid_utf8_is_a_400(saved: Rest) -> None:
    error_of(saved.raw("POST", COMMANDS, b'{"method": "\xff"}'), 400, "badRequest")


def test_a_body_that_is_not_json_is_a_415(saved: Rest) -> None:
    response = saved.raw("POST", COMMANDS, b"method=start", "application/x-www-form-urlencoded")

    error = error_of(response, 415, "unsupportedMediaType")
    assert error["details"] == {"contentType": "application/x-www-form-urlencoded"}


def test_json_with_a_charset_is_json(saved: Rest) -> None:
    response = saved.raw("POST", COMMANDS, b'{"method": "start"}', "application/json;charset=utf-8")

    assert response.status_code == 202


def test_a_missing_body_is_a_400(saved: Rest) -> None:
    error = error_of(saved.raw("POST", COMMANDS, b""), 400, "badRequest")

    assert error["message"] == "a JSON body is required"


def test_a_body_over_64_kb_is_a_413(saved: Rest) -> None:
    body = b'{"method": "' + b"x" * (64 * 1024) + b'"}'

    error = error_of(saved.raw("POST", COMMANDS, body), 413, "payloadTooLarge")

    assert "64 KB" in error["message"]
    assert saved.rows()["Command"] == 0


def test_a_chunked_body_without_content_length_is_capped_too(saved: Rest) -> None:
    # Given a body streamed without Content-Length, as a chunked request reaches the app
    # through a server that sets wsgi.input_terminated
    body = b'{"method": "' + b"x" * (200 * 1024) + b'"}'

    response = saved.client.post(
        COMMANDS,
        input_stream=io.BytesIO(body),
        content_type="application/json",
        headers={**saved.headers, "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )

    error_of(response, 413, "payloadTooLarge")
    assert response.request.content_length is None


def test_a_small_chunked_body_is_read(saved: Rest) -> None:
    response = saved.client.post(
        COMMANDS,
        input_stream=io.BytesIO(b'{"method": "start"}'),
        content_type="application/json",
        headers={**saved.headers, "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )

    assert response.status_code == 202
    assert response.request.content_length is None


def test_an_unknown_route_is_a_404_in_the_one_shape(rest: Rest) -> None:
    error_of(rest.client.get("/nowhere"), 404, "notFound")
    error_of(rest.get("/acme/campaign/workflow/nowhere"), 404, "notFound")


def test_a_wrong_method_is_a_405_with_allow(saved: Rest) -> None:
    response = saved.client.delete(COMMANDS, headers=saved.headers)

    error_of(response, 405, "methodNotAllowed")
    assert "POST" in response.headers["Allow"]


def test_an_unexpected_error_is_a_500_that_reveals_nothing_and_is_logged(
    saved: Rest, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def explode(*_: Any, **__: Any) -> None:
        raise RuntimeError("password=hunter2 in /srv/secret/module.py")

    monkeypatch.setattr(saved.engine, "submit_command", explode)

    with caplog.at_level(logging.ERROR, logger="api.errors"):
        response = saved.post(COMMANDS, {"method": "start"})

    error = error_of(response, 500, "internalError")
    text = response.get_data(as_text=True)
    assert "hunter2" not in text and "Traceback" not in text and "RuntimeError" not in text
    assert error["details"] == {}
    assert "hunter2" in caplog.text  # the operator gets the stack trace in the log
    token = saved.headers["Authorization"].split()[1]
    assert token not in caplog.text and saved.headers["X-Api-Key"] not in caplog.text


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (NotFound("gone"), 404, "notFound"),
        (CommandRefused("no"), 409, "commandRefused"),
        (TooManyTriggers("slow down", retry_after=42), 429, "tooManyTriggers"),
        (DefinitionError("bad", activity="a1"), 422, "invalidDefinition"),
    ],
)
def test_engine_errors_map_to_their_status(
    saved: Rest, monkeypatch: pytest.MonkeyPatch, error: Exception, status: int, code: str
) -> None:

    def refuse(*_: Any, **__: Any) -> None:
        raise error

    monkeypatch.setattr(saved.engine, "submit_command", refuse)

    response = saved.post(COMMANDS, {"method": "start"})

    body = error_of(response, status, code)
    if status == 429:
        assert response.headers["Retry-After"] == "42"
        assert body["details"] == {"retryAfter": 42}
    if status == 422:
        assert body["details"]["activity"] == "a1"


@pytest.mark.parametrize("chunked", [False, True])
def test_a_body_of_exactly_64_kb_is_accepted(saved: Rest, chunked: bool) -> None:
    command = b'{"method": "start"}'
    body = command + b" " * (64 * 1024 - len(command))
    headers = {**saved.headers, "Transfer-Encoding": "chunked"} if chunked else saved.headers

    response = saved.client.post(
        COMMANDS,
        input_stream=io.BytesIO(body),
        content_type="application/json",
        headers=headers,
        environ_overrides={"wsgi.input_terminated": True},
    )

    assert response.status_code == 202, response.json
