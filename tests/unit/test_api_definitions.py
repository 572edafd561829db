"""Workflow definitions over the API: list, create, read, new versions, delete."""

from __future__ import annotations

import copy
from typing import Any

from sqlalchemy import func, select

from tests import api_conftest
from tests.api_conftest import PUBLIC_URL, SIGNAL_WORKFLOW, Rest, error_of
from worker.models import LogLine, StateEvent, WorkflowVersion

# The fixtures `make_rest` and `rest`, shared by the API tests.
make_rest_fixture = api_conftest.make_rest_fixture
rest_fixture = api_conftest.rest_fixture

DEFINITIONS = "/acme/campaign/workflow/definitions"


def named(name: str) -> dict[str, Any]:
    body = copy.deepcopy(SIGNAL_WORKFLOW)
    body["id"] = name
    return body


def test_a_definition_is_created_with_201_and_its_location(rest: Rest) -> None:
    response = rest.post(DEFINITIONS, SIGNAL_WORKFLOW)

    assert response.status_code == 201
    assert response.headers["Location"] == f"{PUBLIC_URL}{DEFINITIONS}/sig"
    body = response.json
    assert body is not None
    assert body["id"] == "sig" and body["state"] == "edition" and body["latestVersion"] == 1
    assert body["PKey"].startswith("@")
    assert body["definition"] == SIGNAL_WORKFLOW
    assert rest.get(f"{DEFINITIONS}/sig").json == body


def test_an_invalid_definition_is_a_422_naming_the_activity(rest: Rest) -> None:
    body = named("bad")
    body["activities"][0]["transitions"] = {"done": "nowhere"}

    error = error_of(rest.post(DEFINITIONS, body), 422, "invalidDefinition")

    assert error["details"]["activity"] == "signal1"
    assert "signal1" in error["message"] and "nowhere" in error["message"]
    error_of(rest.get(f"{DEFINITIONS}/bad"), 404)


def test_a_definition_body_must_be_a_json_object(rest: Rest) -> None:
    error_of(rest.post(DEFINITIONS, [SIGNAL_WORKFLOW]), 400, "badRequest")
    error_of(rest.raw("POST", DEFINITIONS, b"id: sig", "application/yaml"), 415)


def test_creating_an_existing_workflow_again_is_a_409(rest: Rest) -> None:
    assert rest.post(DEFINITIONS, SIGNAL_WORKFLOW).status_code == 201

    error = error_of(rest.post(DEFINITIONS, SIGNAL_WORKFLOW), 409, "alreadyExists")

    assert error["details"] == {"href": f"{PUBLIC_URL}{DEFINITIONS}/sig"}


def test_the_list_is_paginated_by_name(rest: Rest) -> None:
    for index in range(30):
        rest.save(named(f"w{index:02d}"))
    rest.save(named("other"), org="globex")

    first = rest.get(DEFINITIONS).json
    last = rest.get(f"{DEFINITIONS}?_lineStart=25").json

    assert first is not None and last is not None
    assert [w["id"] for w in first["content"]] == [f"w{i:02d}" for i in range(25)]
    assert first["count"] == {"value": 30}
    assert first["next"] == {"href": f"{PUBLIC_URL}{DEFINITIONS}?_lineStart=25"}
    assert [w["id"] for w in last["content"]] == [f"w{i:02d}" for i in range(25, 30)]
    assert "next" not in last


def test_put_saves_a_new_version_and_a_started_workflow_keeps_running_its_own(rest: Rest) -> None:
    rest.start(SIGNAL_WORKFLOW)
    changed = named("sig")
    changed["label"] = "second"
    del changed["id"]  # absent: the URL's

    response = rest.put(f"{DEFINITIONS}/sig", changed)

    assert response.status_code == 200
    body = response.json
    assert body is not None
    assert (body["latestVersion"], body["runningVersion"], body["label"]) == (2, 1, "second")
    assert body["definition"]["id"] == "sig"
    assert rest.execution("sig")["version"] == 1
    # restarting runs the new version
    rest.command("sig", "stop")
    rest.command("sig", "start")
    assert rest.execution("sig")["version"] == 2


def test_put_by_pkey_works_and_a_different_id_is_a_400(rest: Rest) -> None:
    rest.save(SIGNAL_WORKFLOW)
    pkey = f"@{rest.workflow('sig').pkey}"

    assert rest.put(f"{DEFINITIONS}/{pkey}", named("sig")).status_code == 200
    error = error_of(rest.put(f"{DEFINITIONS}/sig", named("other")), 400, "badRequest")

    assert error["details"] == {"expected": "sig"}
    assert rest.workflow("sig").latest_version == 2


def test_put_of_an_invalid_definition_is_a_422_and_keeps_the_version(rest: Rest) -> None:
    rest.save(SIGNAL_WORKFLOW)
    body = named("sig")
    body["activities"][1]["type"] = "teleport"

    error = error_of(rest.put(f"{DEFINITIONS}/sig", body), 422)

    assert error["details"]["activity"] == "end1"
    assert rest.workflow("sig").latest_version == 1


def test_put_or_get_of_an_unknown_workflow_is_a_404(rest: Rest) -> None:
    error_of(rest.put(f"{DEFINITIONS}/nope", named("nope")), 404, "notFound")
    error_of(rest.get(f"{DEFINITIONS}/nope"), 404, "notFound")


def test_a_started_or_paused_workflow_cannot_be_deleted(rest: Rest) -> None:
    rest.start(SIGNAL_WORKFLOW)

    error = error_of(rest.delete(f"{DEFINITIONS}/sig"), 409, "commandRefused")
    rest.command("sig", "pause")
    error_of(rest.delete(f"{DEFINITIONS}/sig"), 409)

    assert error["message"] == "the workflow is started; stop it before deleting it"
    assert rest.workflow("sig").state == "paused"


def test_deleting_a_stopped_workflow_removes_it_and_all_its_rows(rest: Rest) -> None:
    rest.start(SIGNAL_WORKFLOW)
    assert rest.post(rest.trigger_path("sig"), {"source": "t"}).status_code == 202
    rest.stub.drain()
    rest.command("sig", "stop")
    rest.save(named("kept"))

    response = rest.delete(f"{DEFINITIONS}/sig")

    assert response.status_code == 204
    error_of(rest.get(f"{DEFINITIONS}/sig"), 404)
    assert rest.rows() == {"Command": 0, "Trigger": 0, "Job": 0, "Task": 0}
    with rest.services.sessions() as s:
        for model in (WorkflowVersion, LogLine, StateEvent):
            count = s.execute(select(func.count()).select_from(model)).scalar_one()
            assert count == (1 if model is WorkflowVersion else 0), model.__name__
    assert rest.get(f"{DEFINITIONS}/kept").status_code == 200


def test_a_workflow_created_after_a_deletion_runs_its_own_definition(rest: Rest) -> None:
    # SQLite may give the new workflow the deleted one's id: no stale cached definition
    rest.start(SIGNAL_WORKFLOW)
    rest.command("sig", "stop")
    assert rest.delete(f"{DEFINITIONS}/sig").status_code == 204
    other = named("again")
    other["activities"][0]["parameters"] = {"only": "string"}
    assert rest.post(DEFINITIONS, other).status_code == 201
    rest.command("again", "start")

    response = rest.post(rest.trigger_path("again"), {"source": "t", "parameters": {"only": "x"}})

    assert response.status_code == 202, response.json
