"""History of an execution: jobs, tasks (with why) and logs, paginated the platform's way."""

from __future__ import annotations

from typing import Any

import pytest

from tests import api_conftest
from tests.api_conftest import PUBLIC_URL, SIGNAL_WORKFLOW, Rest, error_of

# The fixtures `make_rest` and `rest`, shared by the API tests.
make_rest_fixture = api_conftest.make_rest_fixture
rest_fixture = api_conftest.rest_fixture

BASE = "/acme/campaign/workflow/execution/sig"


@pytest.fixture
def triggered(rest: Rest) -> Rest:
    """sig started and triggered 30 times: 31 jobs, 61 tasks."""
    rest.start(SIGNAL_WORKFLOW)
    path = rest.trigger_path("sig")
    for index in range(30):
        assert rest.post(path, {"source": "t", "parameters": {"n": index}}).status_code == 202
    rest.stub.drain()
    return rest


def listing(rest: Rest, path: str) -> dict[str, Any]:
    response = rest.get(path)
    assert response.status_code == 200, response.json
    body: dict[str, Any] = response.json  # type: ignore[assignment]
    return body


def test_jobs_come_25_a_page_with_an_absolute_next_href(triggered: Rest) -> None:
    first = listing(triggered, f"{BASE}/jobs")

    assert first["count"] == {"value": 31}
    assert len(first["content"]) == 25
    assert first["content"][0]["origin"] == "start"
    assert first["content"][1]["vars"] == {"n": 0}
    assert first["next"] == {"href": f"{PUBLIC_URL}{BASE}/jobs?_lineStart=25"}
    second = listing(triggered, first["next"]["href"][len(PUBLIC_URL) :])
    assert [job["vars"] for job in second["content"]] == [{"n": n} for n in range(24, 30)]
    assert "next" not in second


def test_a_job_has_its_own_resource_with_task_counts(triggered: Rest) -> None:
    job = listing(triggered, f"{BASE}/jobs?_lineStart=1&_lineCount=1")["content"][0]

    detail = listing(triggered, job["href"][len(PUBLIC_URL) :])

    assert detail["id"] == job["id"] and detail["tasks"] == {"done": 2}
    error_of(triggered.get(f"{BASE}/jobs/nope"), 404, "notFound")


def test_line_count_and_line_start_edges(triggered: Rest) -> None:
    exact = listing(triggered, f"{BASE}/jobs?_lineCount=31")
    last = listing(triggered, f"{BASE}/jobs?_lineStart=30&_lineCount=5")
    beyond = listing(triggered, f"{BASE}/jobs?_lineStart=1000")
    most = listing(triggered, f"{BASE}/tasks?_lineCount=500")

    assert len(exact["content"]) == 31 and "next" not in exact
    assert len(last["content"]) == 1 and "next" not in last
    assert beyond["content"] == [] and beyond["count"] == {"value": 31}
    assert len(most["content"]) == 61


def test_next_keeps_the_other_query_parameters(triggered: Rest) -> None:
    page = listing(triggered, f"{BASE}/tasks?state=done&_lineCount=10&_lineStart=10")

    assert page["count"] == {"value": 60}
    assert page["next"] == {
        "href": f"{PUBLIC_URL}{BASE}/tasks?state=done&_lineCount=10&_lineStart=20"
    }


@pytest.mark.parametrize(
    "query",
    [
        "_lineStart=-1",
        "_lineStart=abc",
        "_lineStart=1.5",
        "_lineStart=",
        "_lineCount=0",
        "_lineCount=501",
        "_lineCount=-5",
        "_lineCount=ten",
        "_lineStart=%EF%BC%91",  # a full-width digit
        "state=sleeping",
    ],
)
def test_bad_pagination_is_a_400(rest: Rest, query: str) -> None:
    rest.save(SIGNAL_WORKFLOW)

    error_of(rest.get(f"{BASE}/tasks?{query}"), 400, "badRequest")


def test_tasks_have_their_timings_and_why_the_waiting_one_waits(triggered: Rest) -> None:
    page = listing(triggered, f"{BASE}/tasks?activity=signal1&state=waiting")

    assert page["count"] == {"value": 1}
    task = page["content"][0]
    assert set(task) >= {
        "id", "activity", "type", "state", "executions", "createdAt", "startedAt",
        "finishedAt", "durationMs", "reason", "error", "vars", "why",
    }  # fmt: skip
    assert task["why"].startswith("waiting for signal 'signal1': POST a trigger to https://")
    done = listing(triggered, f"{BASE}/tasks?activity=end1&_lineCount=1")["content"][0]
    assert done["why"] is None
    assert done["executions"] == 1 and isinstance(done["durationMs"], int)
    assert done["vars"] == {"n": 0}


def test_tasks_of_one_job(triggered: Rest) -> None:
    job = listing(triggered, f"{BASE}/jobs?_lineStart=3&_lineCount=1")["content"][0]

    page = listing(triggered, f"{BASE}/tasks?job={job['id']}")

    assert [t["activity"] for t in page["content"]] == ["signal1", "end1"]


def test_logs_are_listed_oldest_first(triggered: Rest) -> None:
    page = listing(triggered, f"{BASE}/logs?_lineCount=1")

    assert page["content"][0]["message"] == "workflow started (version 1)"
    assert set(page["content"][0]) == {
        "id", "createdAt", "level", "message", "activity", "task", "job",
    }  # fmt: skip
    assert page["count"]["value"] >= 1
    assert listing(triggered, f"{BASE}/logs?level=nope")["content"] == []


def test_history_of_an_unknown_workflow_is_a_404(rest: Rest) -> None:
    for what in ("jobs", "tasks", "logs"):
        error_of(rest.get(f"/acme/campaign/workflow/execution/nope/{what}"), 404)
