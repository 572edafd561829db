"""The validation API: list, read, decide; other organizations and hostile input see nothing."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import select

from tests import api_conftest
from tests.api_conftest import PUBLIC_URL, Rest, error_of
from worker.messaging import validation
from worker.models import Task

make_rest_fixture = api_conftest.make_rest_fixture
rest_fixture = api_conftest.rest_fixture

BASE = "/acme/campaign/workflow/validation"


def approval(name: str = "approval", **options: Any) -> dict[str, Any]:
    return {
        "id": name,
        "activities": [
            {"name": "start1", "type": "start", "transitions": {"done": "validation1"}},
            {
                "name": "validation1",
                "type": "validation",
                "subject": "Send the newsletter?",
                "assignee": "alice",
                "instructions": "Check the links",
                **options,
                "transitions": {"approved": "sent", "rejected": "dropped", "timeout": "late"},
            },
            {"name": "sent", "type": "end"},
            {"name": "dropped", "type": "end"},
            {"name": "late", "type": "end"},
        ],
    }


def started(rest: Rest, name: str = "approval", **options: Any) -> str:
    """Start a workflow that waits for a validation; returns the validation's PKey."""
    rest.start(approval(name, **options))
    rest.stub.drain()
    response = rest.get(f"{BASE}?state=pending")
    assert response.status_code == 200
    for item in response.json["content"]:  # type: ignore[index]
        if item["workflow"]["id"] == name:
            return str(item["PKey"])
    raise AssertionError(f"no pending validation for {name}")


def snapshot(rest: Rest) -> tuple[Any, ...]:
    """Everything a refused request must leave as it was."""
    with rest.services.sessions() as s:
        rows = s.execute(select(validation).order_by(validation.c.id)).all()
        tasks = s.execute(select(Task.id, Task.state, Task.attempt).order_by(Task.id)).all()
    return (tuple(tuple(r) for r in rows), tuple(tuple(t) for t in tasks), rest.rows())


def decision_path(pkey: str, org: str = "acme") -> str:
    return f"/{org}/campaign/workflow/validation/{pkey}/decision"


def test_a_pending_validation_is_listed_with_its_links_and_instructions(rest: Rest) -> None:
    pkey = started(rest, timeout="1d")

    body = rest.get(f"{BASE}?state=pending&assignee=alice").json
    assert body["count"] == {"value": 1} and "next" not in body  # type: ignore[index]
    (item,) = body["content"]  # type: ignore[index]
    assert item["PKey"] == pkey and pkey.startswith("@")
    assert item["href"] == f"{PUBLIC_URL}{BASE}/{pkey}"
    assert item["decision"] == {"href": f"{PUBLIC_URL}{decision_path(pkey)}"}
    assert (item["state"], item["subject"], item["assignee"], item["group"]) == (
        "pending",
        "Send the newsletter?",
        "alice",
        "",
    )
    assert item["instructions"] == "Check the links"
    assert item["dueAt"] is not None and item["decidedAt"] is None
    assert item["workflow"]["id"] == "approval"
    assert item["workflow"]["href"].startswith(f"{PUBLIC_URL}/acme/campaign/workflow/execution/@")
    assert rest.get(f"{BASE}/{pkey}").json == item
    assert rest.get(f"{BASE}?assignee=bob").json["count"] == {"value": 0}  # type: ignore[index]
    assert rest.get(f"{BASE}?state=approved").json["count"] == {"value": 0}  # type: ignore[index]


def test_lists_are_paginated_the_platforms_way(rest: Rest) -> None:
    for name in ("first", "second", "third"):
        started(rest, name)

    page = rest.get(f"{BASE}?_lineCount=2").json
    assert page["count"] == {"value": 3}  # type: ignore[index]
    assert [i["workflow"]["id"] for i in page["content"]] == ["first", "second"]  # type: ignore[index]
    following = page["next"]["href"]  # type: ignore[index]
    assert following.startswith(PUBLIC_URL) and "_lineStart=2" in following
    rest_page = rest.get(following[len(PUBLIC_URL) :]).json
    assert [i["workflow"]["id"] for i in rest_page["content"]] == ["third"]  # type: ignore[index]


def test_approve_answers_the_row_and_the_workflow_continues_on_approved(rest: Rest) -> None:
    pkey = started(rest)

    response = rest.post(decision_path(pkey), {"decision": "approve", "user": "bob"})
    assert response.status_code == 200, response.json
    assert response.json["state"] == "approved"  # type: ignore[index]
    assert response.json["decidedBy"] == "bob"  # type: ignore[index]
    rest.stub.drain()

    assert rest.workflow("approval").state == "finished"
    activities = rest.execution("approval")["activities"]["activity"]
    assert activities["sent"]["state"] == "done" and activities["dropped"]["state"] == "idle"
    assert activities["sent"]["vars"]["validationDecidedBy"] == "bob"


def test_reject_needs_a_comment_and_the_workflow_continues_on_rejected(rest: Rest) -> None:
    pkey = started(rest)
    before = snapshot(rest)

    error = error_of(rest.post(decision_path(pkey), {"decision": "reject", "user": "bob"}), 400)
    assert "comment" in error["message"]
    assert snapshot(rest) == before
    response = rest.post(
        decision_path(pkey), {"decision": "reject", "comment": "wrong price", "user": "bob"}
    )
    assert response.status_code == 200
    rest.stub.drain()
    activities = rest.execution("approval")["activities"]["activity"]
    assert activities["dropped"]["vars"]["validationComment"] == "wrong price"


def test_a_second_decision_is_a_409_and_changes_nothing(rest: Rest) -> None:
    pkey = started(rest)
    assert rest.post(decision_path(pkey), {"decision": "approve", "user": "bob"}).status_code == 200
    rest.stub.drain()
    before = snapshot(rest)

    again = rest.post(decision_path(pkey), {"decision": "reject", "comment": "no", "user": "eve"})
    error = error_of(again, 409, "decisionRefused")
    assert "already approved by bob" in error["message"]
    assert error["details"] == {"state": "approved"}
    assert snapshot(rest) == before


def test_a_stopped_workflows_validation_cannot_be_decided(rest: Rest) -> None:
    pkey = started(rest)
    rest.command("approval", "stop")
    assert rest.get(f"{BASE}/{pkey}").json["state"] == "cancelled"  # type: ignore[index]
    before = snapshot(rest)

    response = rest.post(decision_path(pkey), {"decision": "approve", "user": "bob"})
    error_of(response, 409, "decisionRefused")
    assert snapshot(rest) == before


def test_another_organizations_validation_is_a_404(rest: Rest) -> None:
    pkey = started(rest)
    before = snapshot(rest)
    globex = "/globex/campaign/workflow/validation"

    error_of(rest.get(f"{globex}/{pkey}", headers=rest.globex), 404)
    decided = {"decision": "approve", "user": "x"}
    error_of(rest.post(decision_path(pkey, "globex"), decided, headers=rest.globex), 404)
    assert rest.get(globex, headers=rest.globex).json["count"] == {"value": 0}  # type: ignore[index]
    # acme's key on globex's URL: as if nothing were there
    error_of(rest.get(f"{globex}/{pkey}"), 404)
    assert snapshot(rest) == before


@pytest.mark.parametrize(
    "body",
    [
        {"decision": "approve"},
        {"decision": "maybe", "user": "bob"},
        {"decision": 1, "user": "bob"},
        {"decision": ["approve"], "user": "bob"},
        {"decision": "approve", "user": {"name": "bob"}},
        {"decision": "approve", "user": ""},
        {"decision": "approve", "user": "u" * 129},
        {"decision": "approve", "user": "bob", "comment": 3},
        {"decision": "approve", "user": "bob", "comment": None, "extra": True},
        {"decision": "approve", "user": "bob", "comment": "c" * 4001},
        {"decision": "approve", "user": "bob", "state": "approved"},
        [],
        "approve",
        None,
    ],
)
def test_a_malformed_decision_is_a_400_and_changes_nothing(rest: Rest, body: Any) -> None:
    pkey = started(rest)
    before = snapshot(rest)

    error_of(rest.post(decision_path(pkey), body), 400)
    assert snapshot(rest) == before


def test_huge_and_non_json_bodies_are_refused_and_change_nothing(rest: Rest) -> None:
    pkey = started(rest)
    before = snapshot(rest)
    huge = json.dumps({"decision": "reject", "user": "bob", "comment": "x" * 70_000}).encode()

    error_of(rest.raw("POST", decision_path(pkey), huge), 413)
    error_of(rest.raw("POST", decision_path(pkey), b"decision=approve", "text/plain"), 415)
    error_of(rest.raw("POST", decision_path(pkey), b'{"decision": "approve",'), 400)
    error_of(rest.raw("POST", decision_path(pkey), b'{"decision": NaN}'), 400)
    error_of(rest.raw("POST", decision_path(pkey), b"\xff\xfe"), 400)
    assert snapshot(rest) == before


@pytest.mark.parametrize(
    "ref",
    ["@", "@nope", "nope", "@" + "a" * 1000, "@..%2F..%2Fetc", "@%00", "@' OR 1=1 --", "123"],
)
def test_an_unknown_or_malformed_pkey_is_a_404(rest: Rest, ref: str) -> None:
    started(rest)
    before = snapshot(rest)

    error_of(rest.get(f"{BASE}/{ref}"), 404)
    error_of(rest.post(decision_path(ref), {"decision": "approve", "user": "bob"}), 404)
    assert snapshot(rest) == before


@pytest.mark.parametrize(
    "query",
    [
        "state=bogus",
        "state=",
        "_lineCount=0",
        "_lineCount=abc",
        "_lineStart=-1",
        "assignee=" + "a" * 200,
    ],
)
def test_bad_list_queries_are_a_400(rest: Rest, query: str) -> None:
    error_of(rest.get(f"{BASE}?{query}"), 400)


def test_credentials_are_required(rest: Rest) -> None:
    pkey = started(rest)
    error_of(rest.get(BASE, headers={}), 401)
    error_of(rest.post(decision_path(pkey), {"decision": "approve", "user": "x"}, headers={}), 401)
    assert rest.get(f"{BASE}/{pkey}").json["state"] == "pending"  # type: ignore[index]


def test_the_openapi_document_describes_the_validation_paths(rest: Rest) -> None:
    paths = rest.client.get("/openapi.json").json["paths"]  # type: ignore[index]

    listed = paths["/{org}/campaign/workflow/validation"]["get"]
    assert {"200", "400", "401", "404"} <= set(listed["responses"])
    decide = paths["/{org}/campaign/workflow/validation/{validation_ref}/decision"]["post"]
    schema = decide["requestBody"]["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/DecisionRequest"}
    assert {"200", "400", "401", "404", "409", "413", "415"} <= set(decide["responses"])
