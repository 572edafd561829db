"""Executions: commands, the execution resource with its trigger hrefs, signal triggers."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from tests import api_conftest
from tests.api_conftest import PUBLIC_URL, SIGNAL_WORKFLOW, Rest, error_of, sample
from worker.models import Command, Job

# The fixtures `make_rest` and `rest`, shared by the API tests.
make_rest_fixture = api_conftest.make_rest_fixture
rest_fixture = api_conftest.rest_fixture

BASE = "/acme/campaign/workflow/execution"

#: The trigger of the seed (Adobe's documentation), strings for a boolean and a date-time.
SEED_TRIGGER: dict[str, Any] = {
    "source": "API",
    "parameters": {
        "audience": "audience",
        "email": "anna.varney@mail.com",
        "template": "05",
        "contentURL": "http://www.adobe.com",
        "test": "true",
        "segmentCode": "my segment",
        "attribute": "2019-04-03 08:17:19.100Z",
    },
}


def without_content_url() -> str:
    """cmsSend whose signal does not declare contentURL (the seed's error case)."""
    return sample("cmsSend").replace("      contentURL: string\n", "")


# ------------------------------------------------------------------ commands


def test_a_start_command_is_accepted_then_applied_by_a_worker(rest: Rest) -> None:
    rest.save(SIGNAL_WORKFLOW)
    pkey = f"@{rest.workflow('sig').pkey}"

    response = rest.post(f"{BASE}/sig/commands", {"method": "start"})

    assert response.status_code == 202
    body = response.json
    assert body is not None
    assert body["method"] == "start" and body["state"] == "pending"
    assert isinstance(body["id"], int)
    assert body["workflow"] == {"href": f"{PUBLIC_URL}{BASE}/{pkey}"}
    assert response.headers["Location"] == body["workflow"]["href"]
    # Given the worker has not run yet, the workflow has not moved
    assert rest.workflow("sig").state == "edition"
    assert rest.stub.command_requests == [rest.workflow("sig").id]
    # When the worker applies it
    rest.stub.drain()
    # Then
    assert rest.workflow("sig").state == "started"
    with rest.services.sessions() as s:
        assert s.get(Command, body["id"]).state == "applied"  # type: ignore[union-attr]


def test_a_command_accepts_the_pkey_as_well_as_the_name(rest: Rest) -> None:
    rest.start(SIGNAL_WORKFLOW)
    pkey = f"@{rest.workflow('sig').pkey}"

    response = rest.command(pkey, "pause")

    assert response.status_code == 202
    assert rest.workflow("sig").state == "paused"
    assert rest.command(pkey, "resume").status_code == 202
    assert rest.command("sig", "stop").status_code == 202
    assert rest.workflow("sig").state == "stopped"


@pytest.mark.parametrize(
    "body",
    [
        {"method": "restart"},
        {"method": "START"},
        {"method": 1},
        {"method": None},
        {},
        {"method": "start", "force": True},
        ["start"],
        "start",
    ],
)
def test_a_bad_command_body_is_a_400_that_records_nothing(rest: Rest, body: Any) -> None:
    rest.save(SIGNAL_WORKFLOW)

    error_of(rest.post(f"{BASE}/sig/commands", body), 400, "badRequest")

    assert rest.rows()["Command"] == 0


def test_a_command_that_does_not_apply_is_a_409_saying_why(rest: Rest) -> None:
    rest.save(SIGNAL_WORKFLOW)

    error = error_of(rest.post(f"{BASE}/sig/commands", {"method": "pause"}), 409, "commandRefused")

    assert error["message"] == "only a started workflow can be paused; it is edition"
    assert rest.rows()["Command"] == 0


def test_a_command_is_checked_against_the_state_pending_commands_will_leave(rest: Rest) -> None:
    rest.save(SIGNAL_WORKFLOW)
    assert rest.post(f"{BASE}/sig/commands", {"method": "start"}).status_code == 202

    error = error_of(rest.post(f"{BASE}/sig/commands", {"method": "start"}), 409)

    assert error["message"] == "the workflow is already started"
    assert rest.post(f"{BASE}/sig/commands", {"method": "pause"}).status_code == 202
    rest.stub.drain()
    assert rest.workflow("sig").state == "paused"


def test_a_command_on_an_unknown_workflow_is_a_404(rest: Rest) -> None:
    error_of(rest.post(f"{BASE}/nope/commands", {"method": "start"}), 404, "notFound")


def test_a_command_stays_recorded_when_the_broker_is_unreachable(
    rest: Rest, monkeypatch: pytest.MonkeyPatch
) -> None:
    rest.save(SIGNAL_WORKFLOW)

    def down(workflow_id: int) -> None:
        raise ConnectionError("broker down")

    monkeypatch.setattr(rest.stub, "apply_commands", down)

    response = rest.post(f"{BASE}/sig/commands", {"method": "start"})

    assert response.status_code == 202
    # The tick sweeps pending commands: here we apply them as it would
    rest.engine.apply_commands(rest.workflow("sig").id)
    assert rest.workflow("sig").state == "started"


# ------------------------------------------------------------------ the execution resource


def test_the_execution_lists_every_activity_with_its_state_and_the_signal_trigger_href(
    rest: Rest,
) -> None:
    rest.save(sample("cmsSend"))
    workflow = rest.workflow("cmsSend")

    body = rest.execution("cmsSend")

    assert body["PKey"] == f"@{workflow.pkey}"
    assert (body["id"], body["label"], body["state"]) == ("cmsSend", "Send from the CMS", "edition")
    activities = body["activities"]["activity"]
    assert list(activities) == ["signal1", "test1", "wait1", "endTest", "endLive"]
    assert activities["test1"] == {
        "PKey": "@test1",
        "type": "test",
        "state": "idle",
        "tasks": {},
        "lastRun": None,
        "vars": {},
    }
    assert activities["signal1"]["trigger"] == {
        "href": f"{PUBLIC_URL}{BASE}/@{workflow.pkey}/activities/activity/@signal1/trigger"
    }
    assert all("trigger" not in a for name, a in activities.items() if name != "signal1")


def test_the_execution_shows_task_counts_last_run_and_vars_after_a_trigger(rest: Rest) -> None:
    rest.start(SIGNAL_WORKFLOW)
    path = rest.trigger_path("sig")
    assert rest.post(path, {"source": "t", "parameters": {"n": "3"}}).status_code == 202
    rest.stub.drain()

    activities = rest.execution("sig")["activities"]["activity"]

    assert activities["signal1"]["state"] == "done"  # its latest task: the trigger's
    assert activities["signal1"]["tasks"] == {"waiting": 1, "done": 1}
    assert activities["end1"]["state"] == "done"
    assert activities["end1"]["tasks"] == {"done": 1}
    assert activities["end1"]["vars"] == {"n": 3}
    assert activities["end1"]["lastRun"].endswith("+00:00")


def test_an_unknown_execution_is_a_404(rest: Rest) -> None:
    error_of(rest.get(f"{BASE}/nope"), 404, "notFound")
    error_of(rest.get(f"{BASE}/@00000000-0000-0000-0000-000000000000"), 404, "notFound")


# ------------------------------------------------------------------ triggers


def test_the_seed_trigger_reaches_the_jobs_vars_typed(rest: Rest) -> None:
    # Given cmsSend started, and its trigger href read from the execution resource
    rest.start(sample("cmsSend"))
    path = rest.trigger_path("cmsSend")

    # When the seed's request is posted to it
    response = rest.post(path, SEED_TRIGGER)
    rest.stub.drain()

    # Then a job started with typed vars: "true" is a boolean, the date a UTC date-time
    assert response.status_code == 202
    body = response.json
    assert body is not None and body["state"] == "accepted"
    job = rest.get(body["job"]["href"][len(PUBLIC_URL) :]).json
    assert job is not None
    expected = {
        **SEED_TRIGGER["parameters"],
        "test": True,
        "attribute": "2019-04-03T08:17:19.100000+00:00",
    }
    assert job["vars"] == expected
    assert job["source"] == "API" and job["origin"] == "signal"
    # and the test activity took the isTest branch, with those vars
    activities = rest.execution("cmsSend")["activities"]["activity"]
    assert activities["endTest"]["state"] == "done"
    assert activities["endTest"]["vars"] == expected
    assert activities["wait1"]["state"] == "idle"


def test_adobes_trigger_href_with_a_trailing_slash_works_too(rest: Rest) -> None:
    rest.start(SIGNAL_WORKFLOW)
    path = rest.trigger_path("sig")

    response = rest.post(f"{path}/", {"source": "cms"})

    assert response.status_code == 202
    assert response.json is not None and response.json["state"] == "accepted"


def test_a_trigger_accepts_the_workflow_name_and_the_activity_name(rest: Rest) -> None:
    rest.start(SIGNAL_WORKFLOW)

    response = rest.post(f"{BASE}/sig/activities/activity/signal1/trigger", {"source": "cms"})

    assert response.status_code == 202


def test_an_undeclared_parameter_is_refused_with_the_platforms_message(rest: Rest) -> None:
    rest.start(without_content_url())
    before = rest.rows()

    response = rest.post(rest.trigger_path("cmsSend"), SEED_TRIGGER)

    error = error_of(response, 400, "triggerRefused")
    assert error["message"] == "'contentURL' parameter isn't defined in signal activity"
    assert error["details"] == {"parameter": "contentURL"}
    assert rest.rows() == before


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "'source' is mandatory and must be a non-empty string"),
        ({"parameters": {"n": 1}}, "'source' is mandatory and must be a non-empty string"),
        ({"source": ""}, "'source' is mandatory and must be a non-empty string"),
        ({"source": 7}, "'source' is mandatory and must be a non-empty string"),
        ({"source": "x" * 256}, "'source' is longer than 255 characters"),
        ({"source": "t", "parameters": {"n": "many"}}, "'n' parameter must be a number: "),
        ({"source": "t", "parameters": {"flag": "yes"}}, "'flag' parameter must be a boolean: "),
        ({"source": "t", "parameters": {"when": "tomorrow"}}, "'when' parameter must be a dat"),
        ({"source": "t", "parameters": ["n"]}, "'parameters' must be an object"),
        ({"source": "t", "extra": 1}, "unknown key(s) 'extra'; allowed: parameters, source"),
    ],
)
def test_a_malformed_trigger_is_a_400_that_changes_nothing(
    rest: Rest, body: dict[str, Any], message: str
) -> None:
    rest.start(SIGNAL_WORKFLOW)
    before = rest.rows()

    error = error_of(rest.post(rest.trigger_path("sig"), body), 400)

    assert error["message"].startswith(message)
    assert rest.rows() == before


def test_a_trigger_of_a_workflow_not_started_is_a_409(rest: Rest) -> None:
    rest.save(SIGNAL_WORKFLOW)

    error = error_of(rest.post(rest.trigger_path("sig"), {"source": "t"}), 409, "triggerRefused")

    assert error["message"] == "the workflow is not started (it is edition)"


def test_a_second_trigger_inside_the_interval_is_a_429_with_retry_after(
    make_rest: Any,
) -> None:

    rest: Rest = make_rest(signal_min_interval=600)
    rest.start(SIGNAL_WORKFLOW)
    path = rest.trigger_path("sig")
    assert rest.post(path, {"source": "t"}).status_code == 202
    before = rest.rows()

    response = rest.post(path, {"source": "t"})

    error = error_of(response, 429, "tooManyTriggers")
    assert 590 <= int(response.headers["Retry-After"]) <= 600
    assert error["details"]["retryAfter"] == int(response.headers["Retry-After"])
    assert rest.rows() == before


def test_a_trigger_while_paused_is_queued_without_a_job_until_resume(rest: Rest) -> None:
    rest.start(SIGNAL_WORKFLOW)
    rest.command("sig", "pause")

    response = rest.post(rest.trigger_path("sig"), {"source": "t", "parameters": {"n": 11}})

    assert response.status_code == 202
    assert response.json is not None
    assert response.json["state"] == "queued" and response.json["job"] is None
    rest.command("sig", "resume")
    with rest.services.sessions() as s:
        vars = s.scalars(select(Job.vars).where(Job.origin == "signal")).all()
    assert vars == [{"n": 11}]


def test_a_trigger_of_an_unknown_or_non_signal_activity_is_refused(rest: Rest) -> None:
    rest.start(SIGNAL_WORKFLOW)

    error_of(rest.post(f"{BASE}/sig/activities/activity/@nope/trigger", {"source": "t"}), 404)
    error = error_of(
        rest.post(f"{BASE}/sig/activities/activity/end1/trigger", {"source": "t"}), 400
    )

    assert error["message"] == "activity 'end1' is not an external signal"
