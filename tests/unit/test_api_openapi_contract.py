"""/openapi.json says what the views refuse: a request the document calls valid never gets a
400 (F16c, schemathesis's positive_data_acceptance), one it calls invalid is refused.

Each case validates a request part against the served document (OpenAPI 3.0 semantics:
`nullable`), then sends it to the app and checks the view agrees.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from openapi_schema_validator import OAS30Validator

from api.pages import MAX_LINE_START
from tests import api_conftest
from tests.api_conftest import SIGNAL_WORKFLOW, Rest

make_rest_fixture = api_conftest.make_rest_fixture
rest_fixture = api_conftest.rest_fixture

CAMPAIGN = "/acme/campaign"
TRIGGER = f"{CAMPAIGN}/workflow/execution/sig/activities/activity/signal1/trigger"


def served(rest: Rest) -> dict[str, Any]:
    response = rest.client.get("/openapi.json")
    assert response.status_code == 200
    document: dict[str, Any] = json.loads(response.get_data(as_text=True))
    return document


def valid(document: dict[str, Any], schema: dict[str, Any], value: Any) -> bool:
    root = {**schema, "components": document["components"]}
    return bool(OAS30Validator(root).is_valid(value))


def component(document: dict[str, Any], name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def body_schema(document: dict[str, Any], path: str, method: str) -> dict[str, Any]:
    operation = document["paths"][path][method]
    schema: dict[str, Any] = operation["requestBody"]["content"]["application/json"]["schema"]
    return schema


def parameter(document: dict[str, Any], path: str, method: str, name: str) -> dict[str, Any]:
    """A parameter's schema, for a parameter given inline or by reference."""
    for found in document["paths"][path][method].get("parameters", []):
        if "$ref" in found:
            found = document["components"]["parameters"][found["$ref"].rsplit("/", 1)[1]]
        if found["name"] == name:
            schema: dict[str, Any] = found["schema"]
            return schema
    raise AssertionError(f"{name} is not a parameter of {method} {path}")


# (body, valid by the document) for the trigger: `source` must not be blank
TRIGGER_BODIES = [
    ({"source": ""}, False),
    ({"source": " \t"}, False),
    ({"source": "x" * 256}, False),
    ({"source": "api"}, True),
    ({"source": " api "}, True),
]


@pytest.mark.parametrize(("body", "expected"), TRIGGER_BODIES)
def test_a_trigger_body_is_refused_exactly_when_the_document_says_so(
    rest: Rest, body: dict[str, Any], expected: bool
) -> None:
    rest.save(SIGNAL_WORKFLOW)
    assert rest.command("sig", "start").status_code == 202
    document = served(rest)

    assert valid(document, component(document, "TriggerRequest"), body) is expected
    status = rest.post(TRIGGER, body).status_code
    assert (status == 202) if expected else (status == 400), (body, status)


BOUNCES = [
    ([], False),
    ({"messageId": "", "kind": "hard"}, False),
    ([{"messageId": "", "kind": "soft"}], False),
    ({"messageId": "m", "kind": "bounced"}, False),
    ({"messageId": "m", "kind": "hard", "detail": None}, True),
    ([{"messageId": "<m@x>", "kind": "complaint", "detail": "spam"}], True),
]


@pytest.mark.parametrize(("body", "expected"), BOUNCES)
def test_a_bounce_report_is_refused_exactly_when_the_document_says_so(
    rest: Rest, body: Any, expected: bool
) -> None:
    document = served(rest)
    schema = body_schema(document, "/{org}/campaign/bounce", "post")

    assert valid(document, schema, body) is expected
    status = rest.post(f"{CAMPAIGN}/bounce", body).status_code
    assert status == (200 if expected else 400), (body, status)


EVENTS = [
    ({}, False),
    ({"mobilePhone": ""}, False),
    ({"mobilePhone": "06 12 ab"}, False),
    ({"email": "ada example.com"}, False),
    ({"email": "ada@example.com", "mobilePhone": ""}, False),
    ({"email": None}, False),
    ({"pushToken": "tok\x01en"}, False),
    ({"pushToken": "   "}, False),
    ({"email": " ada@example.com "}, True),
    ({"mobilePhone": "+33 (0)1.23-45"}, True),
    ({"email": None, "pushToken": "a token"}, True),
    ({"email": "ada@example.com", "ctx": {"orderId": "A-1"}}, True),
]


@pytest.mark.parametrize(("body", "expected"), EVENTS)
def test_an_event_is_refused_exactly_when_the_document_says_so(
    rest: Rest, body: dict[str, Any], expected: bool
) -> None:
    document = served(rest)

    assert valid(document, component(document, "EventRequest"), body) is expected
    status = rest.post(f"{CAMPAIGN}/event/orderPlaced", body).status_code
    assert status == (201 if expected else 400), (body, status)


DECISIONS = [
    ({"decision": "reject", "user": "alice"}, False),
    ({"decision": "reject", "comment": " ", "user": "alice"}, False),
    ({"decision": "reject", "comment": None, "user": "alice"}, False),
    ({"decision": "approve", "user": "  "}, False),
    ({"decision": "approve", "user": "alice"}, True),
    ({"decision": "approve", "comment": None, "user": "alice"}, True),
    ({"decision": "reject", "comment": "ends Friday", "user": "alice"}, True),
]


@pytest.mark.parametrize(("body", "expected"), DECISIONS)
def test_a_decision_is_refused_exactly_when_the_document_says_so(
    rest: Rest, body: dict[str, Any], expected: bool
) -> None:
    document = served(rest)

    assert valid(document, component(document, "DecisionRequest"), body) is expected
    # No such validation: a valid body reaches the lookup (404), an invalid one stops at 400
    status = rest.post(f"{CAMPAIGN}/workflow/validation/@nope/decision", body).status_code
    assert status == (404 if expected else 400), (body, status)


def _template(**changes: Any) -> dict[str, Any]:
    return {"name": "t1", "eventType": "orderPlaced", **changes}


TEMPLATES = [
    (_template(content={"subject": "s", "html": "<p>x</p>", "extra": ""}), False),
    (_template(content={"subject": "s"}), False),
    (_template(content={"subject": " ", "text": "x"}), False),
    (_template(content={"subject": "s", "html": " "}), False),
    (_template(channel="sms", content={"subject": "s", "text": "x"}), False),
    (_template(channel="push", content={"title": "t"}), False),
    (_template(content={"subject": "s", "text": "x"}), True),
    (_template(channel="email", content={"subject": "s", "html": "<b>x</b>"}), True),
    (_template(channel="sms", content={"text": "x"}), True),
    (_template(channel="push", content={"body": "b", "title": "t"}), True),
]


@pytest.mark.parametrize(("body", "expected"), TEMPLATES)
def test_a_template_is_refused_exactly_when_the_document_says_so(
    rest: Rest, body: dict[str, Any], expected: bool
) -> None:
    document = served(rest)

    assert valid(document, component(document, "MessageTemplateRequest"), body) is expected
    status = rest.post(f"{CAMPAIGN}/messageTemplate", body).status_code
    assert status == (201 if expected else 422), (body, status)


def test_a_definition_states_its_shape_and_a_put_leaves_the_id_to_the_path(rest: Rest) -> None:
    document = served(rest)
    create = component(document, "Definition")
    update = component(document, "DefinitionUpdate")
    good = {k: v for k, v in SIGNAL_WORKFLOW.items() if k != "label"}

    assert valid(document, create, good)
    wrongs: list[dict[str, Any]] = [
        {"consecutiveErrors": 0},
        {"historyDays": 3651},
        {"activities": []},
    ]
    for wrong in wrongs:
        assert not valid(document, create, {**good, **wrong}), wrong
        status = rest.post(f"{CAMPAIGN}/workflow/definitions", {**good, **wrong}).status_code
        assert status == 422, (wrong, status)
    assert not valid(document, create, {**good, "unknown": 1})
    assert rest.post(f"{CAMPAIGN}/workflow/definitions", {**good, "unknown": 1}).status_code == 422
    # A PUT body valid by the document (no id) is saved under the path's workflow
    without_id = {k: v for k, v in good.items() if k != "id"}
    assert valid(document, update, without_id) and not valid(document, update, good)
    assert rest.post(f"{CAMPAIGN}/workflow/definitions", good).status_code == 201
    assert rest.put(f"{CAMPAIGN}/workflow/definitions/sig", without_id).status_code == 200
    path = "/{org}/campaign/workflow/definitions/{definition_id}"
    assert body_schema(document, path, "put") == update


QUERIES = [
    ("/{org}/campaign/workflow/definitions", f"{CAMPAIGN}/workflow/definitions", "_lineStart"),
    ("/{org}/campaign/messageTemplate", f"{CAMPAIGN}/messageTemplate", "_lineStart"),
    ("/monitoring/api/{org}/workflows", "/monitoring/api/acme/workflows", "_lineStart"),
    ("/monitoring/api/{org}/workflows", "/monitoring/api/acme/workflows", "q"),
    ("/{org}/campaign/workflow/validation", f"{CAMPAIGN}/workflow/validation", "assignee"),
    (
        "/{org}/campaign/workflow/execution/{workflow_ref}/tasks",
        f"{CAMPAIGN}/workflow/execution/sig/tasks",
        "activity",
    ),
    (
        "/{org}/campaign/workflow/execution/{workflow_ref}/logs",
        f"{CAMPAIGN}/workflow/execution/sig/logs",
        "level",
    ),
]
#: Text filters reach PostgreSQL, which refuses NUL: a control character is a 400.
TEXT = [("a b", "a b", True), ("a\x02b", "a\x02b", False), ("\x00", "\x00", False)]
VALUES: dict[str, list[tuple[str, Any, bool]]] = {
    "_lineStart": [
        (str(MAX_LINE_START), MAX_LINE_START, True),
        (str(MAX_LINE_START + 1), MAX_LINE_START + 1, False),
        ("-1", -1, False),
    ],
    "q": TEXT,
    "assignee": [*TEXT, ("a" * 129, "a" * 129, False)],
    "activity": TEXT,
    "level": TEXT,
}


@pytest.mark.parametrize(("path", "url", "name"), QUERIES)
def test_query_parameters_are_refused_exactly_when_the_document_says_so(
    rest: Rest, path: str, url: str, name: str
) -> None:
    rest.save(SIGNAL_WORKFLOW)
    document = served(rest)
    schema = parameter(document, path, "get", name)

    assert "400" in document["paths"][path]["get"]["responses"]
    for raw, value, expected in VALUES[name]:
        assert valid(document, schema, value) is expected, (name, raw)
        status = rest.client.get(url, query_string={name: raw}, headers=rest.headers).status_code
        assert status == (200 if expected else 400), (name, raw, status)


def test_the_monitoring_log_level_is_a_word_of_one_to_eight_letters(rest: Rest) -> None:
    rest.save(SIGNAL_WORKFLOW)
    document = served(rest)
    path = "/monitoring/api/{org}/workflows/{workflow_ref}/logs"
    schema = parameter(document, path, "get", "level")

    for level, expected in (("warning", True), ("00000000", False), ("critical1", False)):
        assert valid(document, schema, level) is expected, level
        url = "/monitoring/api/acme/workflows/sig/logs"
        got = rest.client.get(url, query_string={"level": level}, headers=rest.headers)
        assert got.status_code == (200 if expected else 400), (level, got.status_code)


@pytest.mark.parametrize(
    ("key", "expected"), [("k-1", True), (" ~", True), ("é", False), ("a\x7f", False)]
)
def test_an_idempotency_key_is_printable_ascii_as_documented(
    rest: Rest, key: str, expected: bool
) -> None:
    rest.save(SIGNAL_WORKFLOW)
    document = served(rest)
    path = "/{org}/campaign/workflow/execution/{workflow_ref}/commands"
    schema = parameter(document, path, "post", "Idempotency-Key")

    assert valid(document, schema, key) is expected
    headers = {**rest.headers, "Idempotency-Key": key}
    url = f"{CAMPAIGN}/workflow/execution/sig/commands"
    status = rest.post(url, {"method": "start"}, headers=headers).status_code
    assert status == (202 if expected else 400), (key, status)


def test_every_operation_with_parameters_documents_its_400(rest: Rest) -> None:
    for path, item in served(rest)["paths"].items():
        for method, operation in item.items():
            if method != "parameters" and operation.get("parameters"):
                assert "400" in operation["responses"], (method, path)
