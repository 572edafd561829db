"""Property: whatever body reaches the trigger and command endpoints, never a 5xx, and a
refused call changes nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.api_conftest import SIGNAL_WORKFLOW, Rest

COMMANDS = "/acme/campaign/workflow/execution/sig/commands"
KEYS = st.sampled_from(["source", "parameters", "method", "n", "flag", "when", "s", "x", ""])
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()  # NaN and infinities included: json.dumps writes them, the API refuses them
    | st.text(max_size=40)
    | st.sampled_from(["start", "pause", "resume", "stop", "true", "2019-04-03 08:17:19.100Z"])
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS | st.text(max_size=8), inner),
    max_leaves=12,
)
BODIES = st.dictionaries(KEYS, VALUES, max_size=4) | VALUES
CONTENT_TYPES = st.sampled_from(
    ["application/json", "application/json; charset=utf-8", "text/plain", "", "application/xml"]
)
FUZZ = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture
def started(tmp_path: Path) -> Iterator[Rest]:
    rest = Rest(tmp_path)
    rest.start(SIGNAL_WORKFLOW)
    yield rest
    rest.close()


def check(rest: Rest, path: str, data: bytes, content_type: str) -> None:
    before = rest.rows()
    response = rest.raw("POST", path, data, content_type)
    assert response.status_code < 500, response.get_data(as_text=True)
    body: Any = response.json
    if response.status_code >= 400:
        assert set(body) == {"error"}
        assert rest.rows() == before
    else:
        assert response.status_code == 202


@FUZZ
@given(body=BODIES)
def test_any_json_body_to_the_trigger_is_answered_without_a_5xx(started: Rest, body: Any) -> None:
    check(started, started.trigger_path("sig"), json.dumps(body).encode(), "application/json")


@FUZZ
@given(data=st.binary(max_size=300), content_type=CONTENT_TYPES)
def test_any_bytes_to_the_trigger_are_answered_without_a_5xx(
    started: Rest, data: bytes, content_type: str
) -> None:
    check(started, started.trigger_path("sig"), data, content_type)


@FUZZ
@given(body=BODIES)
def test_any_json_body_to_the_commands_is_answered_without_a_5xx(started: Rest, body: Any) -> None:
    check(started, COMMANDS, json.dumps(body).encode(), "application/json")
    started.stub.drain()


@FUZZ
@given(data=st.binary(max_size=300), content_type=CONTENT_TYPES)
def test_any_bytes_to_the_commands_are_answered_without_a_5xx(
    started: Rest, data: bytes, content_type: str
) -> None:

    check(started, COMMANDS, data, content_type)
