"""The monitoring API on a real stack: a live Celery worker answers, depths are read from the
broker, and a workflow's graph shows what its activities did."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient

from api import create_app
from tests.integration.conftest import Stack, wait_for
from worker import catalog
from worker.queues import QUEUES
from worker.tasks import CeleryDispatcher

pytestmark = pytest.mark.integration

ADMIN_TOKEN = "live-monitoring-admin-token-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
FLOW = {
    "id": "monitored",
    "activities": [
        {"name": "start1", "type": "start", "transitions": {"done": "effect1"}},
        {"name": "effect1", "type": "effect", "seconds": 0.2, "transitions": {"done": "end1"}},
        {"name": "end1", "type": "end"},
    ],
}


@pytest.fixture(name="client")
def client_fixture(stack: Stack) -> Iterator[FlaskClient]:
    from dataclasses import replace

    settings = replace(stack.settings, admin_token=ADMIN_TOKEN)
    app = create_app(settings, dispatcher=CeleryDispatcher(stack.celery))
    try:
        yield app.test_client()
    finally:
        app.extensions["carillon"].db.dispose()


def get(client: FlaskClient, path: str) -> dict[str, Any]:
    response = client.get(path, headers=ADMIN)
    assert response.status_code == 200, response.get_data(as_text=True)
    body: dict[str, Any] = response.json  # type: ignore[assignment]
    return body


def test_workers_lists_the_live_worker_with_its_queues(stack: Stack, client: FlaskClient) -> None:
    def answered() -> dict[str, Any] | None:
        body = get(client, "/monitoring/api/workers")
        return body if body["workers"] else None

    body = wait_for(answered, 60, "the worker to answer the broadcast", interval=0.5)
    worker = next(w for w in body["workers"] if w["name"].startswith("w1@"))
    assert worker["online"] is True
    assert set(worker["queues"]) == set(QUEUES)
    assert isinstance(worker["active"], int) and isinstance(worker["processed"], int)
    assert worker["loadavg"] is not None and len(worker["loadavg"]) == 3
    depths = {q["name"]: q["depth"] for q in body["queues"]}
    assert set(depths) == set(QUEUES)
    assert all(isinstance(depth, int) and depth >= 0 for depth in depths.values())


def test_a_workflow_graph_shows_activity_states_after_a_run(
    stack: Stack, client: FlaskClient
) -> None:
    stack.save(FLOW)
    stack.engine.command(None, "monitored", "start")
    stack.wait_state("monitored", "finished")

    body = get(client, "/monitoring/api/acme/workflows/monitored")

    states = {a["name"]: (a["state"], a["counts"]) for a in body["activities"]}
    assert states == {
        "start1": ("done", {"done": 1}),
        "effect1": ("done", {"done": 1}),
        "end1": ("done", {"done": 1}),
    }
    assert body["lastRun"]["state"] == "done" and body["lastRun"]["finishedAt"]
    tasks = get(client, "/monitoring/api/acme/workflows/monitored/tasks")
    effect = next(t for t in tasks["content"] if t["activity"] == "effect1")
    assert effect["durationMs"] >= 200 and effect["executions"] == 1
    summary = get(client, "/monitoring/api/acme/summary")
    assert summary["workflows"]["finished"] >= 1 and summary["tasks"]["done"] >= 3
    metrics = client.get("/metrics", headers=ADMIN)
    assert metrics.status_code == 200
    assert 'carillon_tasks{state="done",type="effect"}' in metrics.get_data(as_text=True)


def test_an_org_sees_its_own_workflows_only(stack: Stack, client: FlaskClient) -> None:
    with stack.sessions() as s, s.begin():
        creds = catalog.create_credentials(s, "acme")
    headers = {"Authorization": f"Bearer {creds['token']}", "X-Api-Key": creds["apiKey"]}
    assert client.get("/monitoring/api/acme/summary", headers=headers).status_code == 200
    assert client.get("/monitoring/api/technical", headers=headers).status_code == 404
