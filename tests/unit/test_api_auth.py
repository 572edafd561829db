"""Authentication: bearer token and API key on every route but /healthz and /openapi.json;
a key sees only its own organization."""

from __future__ import annotations

import logging

import pytest

from tests import api_conftest
from tests.api_conftest import SIGNAL_WORKFLOW, Rest, error_of

# The fixtures `make_rest` and `rest`, shared by the API tests.
make_rest_fixture = api_conftest.make_rest_fixture
rest_fixture = api_conftest.rest_fixture

EXECUTION = "/acme/campaign/workflow/execution/sig"


@pytest.fixture
def saved(rest: Rest) -> Rest:
    rest.save(SIGNAL_WORKFLOW)
    rest.save(SIGNAL_WORKFLOW, org="globex")
    return rest


def variants(rest: Rest) -> dict[str, dict[str, str]]:
    """Every way of getting the credentials wrong."""
    token = rest.headers["Authorization"].split()[1]
    key = rest.headers["X-Api-Key"]
    other_token = rest.globex["Authorization"].split()[1]
    return {
        "none": {},
        "token only": {"Authorization": f"Bearer {token}"},
        "key only": {"X-Api-Key": key},
        "wrong token": {"Authorization": "Bearer nope", "X-Api-Key": key},
        "wrong key": {"Authorization": f"Bearer {token}", "X-Api-Key": "ck_000000000000_x"},
        "key of one org, token of another": {
            "Authorization": f"Bearer {other_token}",
            "X-Api-Key": key,
        },
        "basic scheme": {"Authorization": f"Basic {token}", "X-Api-Key": key},
        "empty bearer": {"Authorization": "Bearer ", "X-Api-Key": key},
        "malformed key": {"Authorization": f"Bearer {token}", "X-Api-Key": "garbage"},
    }


def test_every_wrong_credential_is_the_same_401(saved: Rest) -> None:
    bodies = set()
    for name, headers in variants(saved).items():
        response = saved.client.get(EXECUTION, headers=headers)
        error = error_of(response, 401, "unauthorized")
        assert response.headers["WWW-Authenticate"].startswith("Bearer"), name
        bodies.add((error["message"], str(error["details"])))

    assert len(bodies) == 1  # nothing says which part was wrong


def test_a_refused_call_writes_nothing(saved: Rest) -> None:
    before = saved.rows()

    for headers in variants(saved).values():
        response = saved.client.post(
            f"{EXECUTION}/commands", json={"method": "start"}, headers=headers
        )
        assert response.status_code == 401

    assert saved.rows() == before
    assert saved.workflow("sig").state == "edition"


def test_the_right_credentials_are_let_in(saved: Rest) -> None:
    assert saved.get(EXECUTION).status_code == 200
    lower = {"authorization": saved.headers["Authorization"].replace("Bearer", "bearer")}
    assert (
        saved.get(EXECUTION, {**lower, "x-api-key": saved.headers["X-Api-Key"]}).status_code == 200
    )


def test_health_and_the_openapi_document_are_public(rest: Rest) -> None:
    assert rest.client.get("/healthz").status_code == 200
    assert rest.client.get("/openapi.json").status_code == 200


def test_another_organizations_url_is_a_404_even_where_it_exists(saved: Rest) -> None:
    # acme's credentials on globex's workflow, which exists under the same name
    for path in (
        "/globex/campaign/workflow/execution/sig",
        "/globex/campaign/workflow/definitions",
        "/globex/campaign/workflow/definitions/sig",
        "/globex/campaign/workflow/execution/sig/tasks",
    ):
        error_of(saved.get(path), 404, "notFound")
    response = saved.post("/globex/campaign/workflow/execution/sig/commands", {"method": "start"})
    error_of(response, 404, "notFound")
    assert saved.rows()["Command"] == 0


def test_an_unknown_organization_is_the_same_404(saved: Rest) -> None:
    unknown = error_of(saved.get("/initech/campaign/workflow/execution/sig"), 404)
    other = error_of(saved.get("/globex/campaign/workflow/execution/sig"), 404)

    assert unknown == other


def test_a_pkey_of_another_organization_is_not_found(saved: Rest) -> None:
    pkey = saved.client.get("/globex/campaign/workflow/execution/sig", headers=saved.globex).json[
        "PKey"
    ]  # type: ignore[index]

    error_of(saved.get(f"/acme/campaign/workflow/execution/{pkey}"), 404, "notFound")


def test_credentials_never_reach_the_log(saved: Rest, caplog: pytest.LogCaptureFixture) -> None:
    token = saved.headers["Authorization"].split()[1]
    with caplog.at_level(logging.DEBUG):
        saved.get(EXECUTION)
        saved.client.get(EXECUTION, headers={"Authorization": "Bearer leaked-token"})
        saved.post(f"{EXECUTION}/commands", {"method": "start"})

    assert token not in caplog.text
    assert saved.headers["X-Api-Key"] not in caplog.text
    assert "leaked-token" not in caplog.text
