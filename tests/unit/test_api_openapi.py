"""/openapi.json: a valid OpenAPI 3 document describing every route of the app."""

from __future__ import annotations

import json
from typing import Any

from openapi_spec_validator import validate

from api.openapi import openapi_path
from tests import api_conftest
from tests.api_conftest import Rest

# The fixtures `make_rest` and `rest`, shared by the API tests.
make_rest_fixture = api_conftest.make_rest_fixture
rest_fixture = api_conftest.rest_fixture

IGNORED_METHODS = {"HEAD", "OPTIONS"}


def document(rest: Rest) -> dict[str, Any]:
    response = rest.client.get("/openapi.json")
    assert response.status_code == 200
    body: dict[str, Any] = json.loads(response.get_data(as_text=True))
    return body


def test_the_document_is_valid_openapi_3(rest: Rest) -> None:
    spec = document(rest)

    assert spec["openapi"].startswith("3.")
    validate(spec)


def test_every_route_and_method_of_the_url_map_is_described(rest: Rest) -> None:
    paths = document(rest)["paths"]

    rules = [rule for rule in rest.app.url_map.iter_rules() if rule.endpoint != "static"]
    assert len(rules) >= 12
    for rule in rules:
        path = openapi_path(rule.rule)
        assert path in paths, path
        for method in (rule.methods or set()) - IGNORED_METHODS:
            operation = paths[path][method.lower()]
            assert operation["responses"], (path, method)
            assert "500" in operation["responses"]


def test_protected_operations_declare_both_credentials_and_their_401(rest: Rest) -> None:
    paths = document(rest)["paths"]

    for path, item in paths.items():
        for method, operation in item.items():
            if method == "parameters":
                continue
            # tracking (/r/...), the monitoring page (it holds no data), and /metrics,
            # which checks its own access (admin token)
            public = ("/healthz", "/readyz", "/openapi.json", "/metrics", "/monitoring")
            if path in public or path.startswith(("/r/", "/monitoring/static/")):
                assert operation["security"] == []
            else:
                assert operation["security"] == [{"bearerAuth": [], "apiKey": []}]
                assert "401" in operation["responses"] and "404" in operation["responses"]


def test_bodies_and_their_errors_are_described(rest: Rest) -> None:
    paths = document(rest)["paths"]
    trigger = paths[
        "/{org}/campaign/workflow/execution/{workflow_ref}/activities/activity/{activity_ref}"
        "/trigger/"
    ]["post"]

    schema = trigger["requestBody"]["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/TriggerRequest"}
    assert {"400", "404", "409", "413", "415", "429"} <= set(trigger["responses"])
    command = paths["/{org}/campaign/workflow/execution/{workflow_ref}/commands"]["post"]
    assert {"202", "400", "409", "413", "415"} <= set(command["responses"])
    create = paths["/{org}/campaign/workflow/definitions"]["post"]
    assert {"201", "409", "422"} <= set(create["responses"])


def test_path_parameters_are_declared_for_every_path(rest: Rest) -> None:
    paths = document(rest)["paths"]

    for path, item in paths.items():
        declared = {p["name"] for p in item.get("parameters", [])}
        used = {part[1:-1] for part in path.split("/") if part.startswith("{")}
        assert declared == used, path
