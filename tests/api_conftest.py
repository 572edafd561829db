"""Fixtures of the API tests: an app on a throw-away SQLite database, the stub dispatcher,
credentials for two organizations.

Test modules import `make_rest_fixture` and `rest_fixture`; the fixtures are named
`make_rest` and `rest`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from werkzeug.test import TestResponse

import tests.plugins
from api import create_app
from api.context import Carillon
from tests.stub import StubDispatcher
from worker import catalog, definitions
from worker.config import Settings
from worker.models import Command, Job, Organization, Task, Trigger, Workflow

PUBLIC_URL = "https://campaign.example.com"
SAMPLES = Path(definitions.__file__).parent / "samples"

#: A signal workflow whose signal waits mid-graph is not needed here: entry signals only.
SIGNAL_WORKFLOW: dict[str, Any] = {
    "id": "sig",
    "label": "Signal test",
    "activities": [
        {
            "name": "signal1",
            "type": "externalSignal",
            "parameters": {"n": "number", "flag": "boolean", "when": "datetime", "s": "string"},
            "transitions": {"done": "end1"},
        },
        {"name": "end1", "type": "end"},
    ],
}


class ApiStub(StubDispatcher):
    """The stub dispatcher, also applying the commands the API asked a worker to apply."""

    def drain(self, limit: int = 10_000) -> int:
        assert self.engine is not None
        runs = 0
        while self.command_requests or self.queue:
            while self.command_requests:
                self.engine.apply_commands(self.command_requests.pop(0))
            runs += super().drain(limit)
        return runs


class Rest:
    """One app, its test client, the stub dispatcher and credentials for `acme` and `globex`."""

    def __init__(self, home: Path, **settings: Any) -> None:
        values: dict[str, Any] = {
            "home": home,
            "database_url": f"sqlite:///{home / 'api.sqlite'}",
            "broker_url": "memory://",
            "result_backend": "cache+memory://",
            "signal_min_interval": 0,
            "public_url": PUBLIC_URL,
            **settings,
        }
        self.stub = ApiStub()
        self.app: Flask = create_app(Settings(**values).resolved(), dispatcher=self.stub)
        self.services: Carillon = self.app.extensions["carillon"]
        self.engine = self.services.engine
        self.stub.engine = self.engine
        tests.plugins.create_tables(self.services.db)
        self.client: FlaskClient = self.app.test_client()
        with self.services.sessions() as s, s.begin():
            acme = catalog.create_credentials(s, "acme")
            globex = catalog.create_credentials(s, "globex")
        self.headers = {"Authorization": f"Bearer {acme['token']}", "X-Api-Key": acme["apiKey"]}
        self.globex = {
            "Authorization": f"Bearer {globex['token']}",
            "X-Api-Key": globex["apiKey"],
        }

    # ---------------------------------------------------------------- requests

    def get(self, path: str, headers: dict[str, str] | None = None) -> TestResponse:
        return self.client.get(path, headers=self.headers if headers is None else headers)

    def post(
        self, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> TestResponse:
        return self.client.post(
            path, json=body, headers=self.headers if headers is None else headers
        )

    def put(self, path: str, body: Any) -> TestResponse:
        return self.client.put(path, json=body, headers=self.headers)

    def delete(self, path: str) -> TestResponse:
        return self.client.delete(path, headers=self.headers)

    def raw(
        self, method: str, path: str, data: bytes, content_type: str = "application/json"
    ) -> TestResponse:
        return self.client.open(
            path, method=method, data=data, content_type=content_type, headers=self.headers
        )

    # ---------------------------------------------------------------- setup

    def save(self, body: dict[str, Any] | str, org: str = "acme") -> str:
        if isinstance(body, str):
            body = definitions.load_text(body)
        with self.services.sessions() as s, s.begin():
            return catalog.save_definition(s, catalog.ensure_org(s, org), body).name

    def command(self, name: str, method: str, org: str = "acme") -> TestResponse:
        response = self.post(
            f"/{org}/campaign/workflow/execution/{name}/commands", {"method": method}
        )
        self.stub.drain()
        return response

    def start(self, body: dict[str, Any] | str) -> str:
        name = self.save(body)
        response = self.command(name, "start")
        assert response.status_code == 202, response.json
        return name

    def workflow(self, name: str, org: str = "acme") -> Workflow:
        with self.services.sessions() as s:
            return s.scalars(
                select(Workflow)
                .join(Organization, Organization.id == Workflow.org_id)
                .where(Workflow.name == name, Organization.name == org)
            ).one()

    def execution(self, name: str) -> dict[str, Any]:
        response = self.get(f"/acme/campaign/workflow/execution/{name}")
        assert response.status_code == 200, response.json
        body: dict[str, Any] = response.json  # type: ignore[assignment]
        return body

    def trigger_path(self, name: str, activity: str = "signal1") -> str:
        """The path of the trigger href the execution resource gives."""
        href = self.execution(name)["activities"]["activity"][activity]["trigger"]["href"]
        assert href.startswith(PUBLIC_URL)
        return str(href[len(PUBLIC_URL) :])

    def rows(self) -> dict[str, int]:
        """Rows a request may write: a refused one must leave these unchanged."""
        with self.services.sessions() as s:
            return {
                model.__name__: s.execute(select(func.count()).select_from(model)).scalar_one()
                for model in (Command, Trigger, Job, Task)
            }

    def close(self) -> None:
        self.services.db.dispose()


@pytest.fixture(name="make_rest")
def make_rest_fixture(tmp_path: Path) -> Iterator[Callable[..., Rest]]:
    built: list[Rest] = []

    def make(**settings: Any) -> Rest:
        home = tmp_path / f"rest{len(built)}"
        home.mkdir()
        built.append(Rest(home, **settings))
        return built[-1]

    yield make
    for rest in built:
        rest.close()


@pytest.fixture(name="rest")
def rest_fixture(make_rest: Callable[..., Rest]) -> Rest:
    return make_rest()


def error_of(response: TestResponse, status: int, code: str | None = None) -> dict[str, Any]:
    """The error object of a response, checked to have the one shape and the status."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.json
    assert isinstance(body, dict) and set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    assert set(error) == {"code", "message", "details"}
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["details"], dict)
    if code is not None:
        assert error["code"] == code
    return error


def sample(name: str) -> str:
    return (SAMPLES / f"{name}.yaml").read_text()
