"""The REST API under gunicorn driving a real worker, as an API caller would (seeds 003/004)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.conftest import Stack, start_api, wait_for
from worker import catalog

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

SEED_PARAMETERS = {
    "audience": "audience",
    "email": "anna.varney@mail.com",
    "template": "05",
    "contentURL": "http://www.adobe.com",
    "test": "true",
    "segmentCode": "my segment",
    "attribute": "2019-04-03 08:17:19.100Z",
}


class Client:
    """A tiny HTTP client with the organization's credentials."""

    def __init__(self, base: str, org: str, api_key: str, token: str) -> None:
        self.base, self.org = base, org
        self.headers = {"Authorization": f"Bearer {token}", "X-Api-Key": api_key}

    def call(self, method: str, url: str, body: Any = None) -> tuple[int, Any, dict[str, str]]:
        if not url.startswith("http"):
            url = f"{self.base}/{self.org}/campaign{url}"
        data = None if body is None else json.dumps(body).encode()
        headers = dict(self.headers)
        if data is not None:
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=15) as response:
                raw = response.read()
                return response.status, json.loads(raw) if raw else None, dict(response.headers)
        except urllib.error.HTTPError as error:
            raw = error.read()
            return error.code, json.loads(raw) if raw else None, dict(error.headers)


@pytest.fixture(scope="module")
def api(stack: Stack) -> Iterator[str]:
    yield start_api(stack)
    stack.kill("api")


def client_for(stack: Stack, base: str) -> Client:
    org = f"org{uuid.uuid4().hex[:8]}"
    with stack.sessions() as s, s.begin():
        created = catalog.create_credentials(s, org)
    return Client(base, org, created["apiKey"], created["token"])


def cms_definition(name: str) -> dict[str, Any]:
    return {
        "id": name,
        "activities": [
            {
                "name": "signal1",
                "type": "externalSignal",
                "parameters": {
                    "audience": "string",
                    "email": "string",
                    "template": "string",
                    "contentURL": "string",
                    "test": "boolean",
                    "segmentCode": "string",
                    "attribute": "datetime",
                },
                "transitions": {"done": "test1"},
            },
            {
                "name": "test1",
                "type": "test",
                "conditions": [
                    {"name": "isTest", "when": {"field": "vars.test", "op": "eq", "value": True}}
                ],
                "transitions": {"isTest": "endTest", "default": "endLive"},
            },
            {"name": "endTest", "type": "end"},
            {"name": "endLive", "type": "end"},
        ],
    }


def test_a_caller_drives_a_workflow_over_http_with_the_seeds_trigger(
    stack: Stack, api: str
) -> None:
    client = client_for(stack, api)
    name = f"cms{uuid.uuid4().hex[:8]}"
    # Given a definition created and started over HTTP
    status, created, _ = client.call("POST", "/workflow/definitions", cms_definition(name))
    assert status == 201, created
    status, body, _ = client.call(
        "POST", f"/workflow/execution/{name}/commands", {"method": "start"}
    )
    assert status == 202, body
    wait_for(
        lambda: client.call("GET", f"/workflow/execution/{name}")[1]["state"] == "started",
        30,
        "the workflow to be started",
    )
    # When the caller reads the trigger href and posts the seed's example to it
    _, execution, _ = client.call("GET", f"/workflow/execution/{name}")
    href = execution["activities"]["activity"]["signal1"]["trigger"]["href"]
    assert href.startswith(f"{api}/{client.org}/campaign/workflow/execution/@")
    status, accepted, _ = client.call(
        "POST", href, {"source": "API", "parameters": SEED_PARAMETERS}
    )
    assert status == 202, accepted
    job = accepted["job"]

    # Then the job reaches its end activity with the typed parameters in its vars
    def end_done() -> bool:
        _, tasks, _ = client.call("GET", f"/workflow/execution/{name}/tasks?_lineCount=500")
        return any(t["activity"] == "endTest" and t["state"] == "done" for t in tasks["content"])

    wait_for(end_done, 30, "endTest to be done")
    _, tasks, _ = client.call("GET", f"/workflow/execution/{name}/tasks?_lineCount=500")
    (end,) = [t for t in tasks["content"] if t["activity"] == "endTest"]
    assert end["vars"]["test"] is True
    assert end["vars"]["attribute"] == "2019-04-03T08:17:19.100000+00:00"
    assert end["vars"]["contentURL"] == "http://www.adobe.com"
    status, job_body, _ = client.call("GET", job["href"])
    assert status == 200, job_body

    # An undeclared parameter is refused, naming it
    status, error, _ = client.call("POST", href, {"source": "API", "parameters": {"x": "1"}})
    assert status == 400
    assert error["error"]["message"] == "'x' parameter isn't defined in signal activity"

    # Pause, resume, stop over HTTP, each applied by the worker
    for method, state in (("pause", "paused"), ("resume", "started"), ("stop", "stopped")):
        status, body, _ = client.call(
            "POST", f"/workflow/execution/{name}/commands", {"method": method}
        )
        assert status == 202, body
        wait_for(
            lambda state=state: (
                client.call("GET", f"/workflow/execution/{name}")[1]["state"] == state
            ),
            30,
            f"the workflow to be {state}",
        )
    status, refused, _ = client.call(
        "POST", f"/workflow/execution/{name}/commands", {"method": "pause"}
    )
    assert status == 409
    assert "it is stopped" in refused["error"]["message"]


def test_another_organization_sees_nothing_and_bad_credentials_get_401(
    stack: Stack, api: str
) -> None:
    owner, other = client_for(stack, api), client_for(stack, api)
    name = f"priv{uuid.uuid4().hex[:8]}"
    assert owner.call("POST", "/workflow/definitions", cms_definition(name))[0] == 201
    status, _, _ = other.call("GET", f"{api}/{owner.org}/campaign/workflow/execution/{name}")
    assert status == 404
    other.headers["X-Api-Key"] = "ck_0000_nope"
    assert other.call("GET", "/workflow/definitions")[0] == 401


def test_twenty_simultaneous_triggers_inside_the_interval_accept_exactly_one(
    stack: Stack, api: str
) -> None:
    import threading

    # Given an API process enforcing the platform's 600-second rule (F13)
    strict = start_api(stack, 2, name="api600", CARILLON_SIGNAL_MIN_INTERVAL="600")
    try:
        client = client_for(stack, strict)
        name = f"burst{uuid.uuid4().hex[:8]}"
        assert client.call("POST", "/workflow/definitions", cms_definition(name))[0] == 201
        client.call("POST", f"/workflow/execution/{name}/commands", {"method": "start"})
        wait_for(
            lambda: client.call("GET", f"/workflow/execution/{name}")[1]["state"] == "started",
            30,
            "the workflow to be started",
        )
        href = client.call("GET", f"/workflow/execution/{name}")[1]["activities"]["activity"][
            "signal1"
        ]["trigger"]["href"]
        # When 20 callers trigger the same signal at the same moment
        start = threading.Barrier(20)
        statuses: list[int] = []
        lock = threading.Lock()

        def fire() -> None:
            start.wait(10)
            status, _, headers = client.call("POST", href, {"source": "burst"})
            with lock:
                statuses.append(status)
            if status == 429:
                assert int(headers["Retry-After"]) > 0

        threads = [threading.Thread(target=fire) for _ in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        # Then exactly one is accepted, and only one job exists
        assert sorted(statuses) == [202] + [429] * 19
        _, jobs, _ = client.call("GET", f"/workflow/execution/{name}/jobs?_lineCount=500")
        assert [job["origin"] for job in jobs["content"]].count("signal") == 1
    finally:
        stack.kill("api600")
