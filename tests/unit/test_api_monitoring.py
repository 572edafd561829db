"""The monitoring JSON API after real runs: shapes, figures, paging, filters, auth, hostility."""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update

from tests import api_conftest
from tests.api_conftest import PUBLIC_URL, SIGNAL_WORKFLOW, Rest, error_of
from worker.messaging import validation
from worker.models import Job, LogLine, Task, Workflow

make_rest_fixture = api_conftest.make_rest_fixture

ADMIN_TOKEN = "admin-token-for-the-tests-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
API = "/monitoring/api"

WAITER = {
    "id": "waiter",
    "label": "Waits an hour",
    "activities": [
        {"name": "start1", "type": "start", "transitions": {"done": "wait1"}},
        {"name": "wait1", "type": "wait", "duration": "1h", "transitions": {"done": "end1"}},
        {"name": "end1", "type": "end"},
    ],
}


def failing(flag: Path) -> dict[str, Any]:
    return {
        "id": "failing",
        "label": "Fails until a file exists",
        "activities": [
            {"name": "start1", "type": "start", "transitions": {"done": "effect1"}},
            {
                "name": "effect1",
                "type": "effect",
                "failUnlessFile": str(flag),
                "transitions": {"done": "end1"},
            },
            {"name": "end1", "type": "end"},
        ],
    }


APPROVAL = {
    "id": "approval",
    "activities": [
        {"name": "start1", "type": "start", "transitions": {"done": "validation1"}},
        {
            "name": "validation1",
            "type": "validation",
            "subject": "Send the newsletter?",
            "assignee": "alice",
            "transitions": {"approved": "sent", "rejected": "dropped", "timeout": "late"},
        },
        {"name": "sent", "type": "end"},
        {"name": "dropped", "type": "end"},
        {"name": "late", "type": "end"},
    ],
}


def seeded(home: Path) -> Rest:
    """acme runs: `sig` triggered three times, `waiter` waiting on its timer, `failing` in
    error, `approval` waiting for a validation; globex has one workflow of its own."""
    rest = Rest(home, admin_token=ADMIN_TOKEN)
    tmp_path = home
    rest.start(SIGNAL_WORKFLOW)
    path = rest.trigger_path("sig")
    for n in range(3):
        response = rest.post(path, {"source": "test", "parameters": {"n": n}})
        assert response.status_code == 202, response.json
        rest.stub.drain()
    rest.start(WAITER)
    rest.start(failing(tmp_path / "never"))
    rest.start(APPROVAL)
    rest.stub.drain()
    rest.save({**WAITER, "id": "globexOnly"}, org="globex")
    return rest


@pytest.fixture(name="rest", scope="module")
def rest_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rest]:
    """The seeded app, shared by the tests that only read (and check nothing changed)."""
    rest = seeded(tmp_path_factory.mktemp("monitoring"))
    yield rest
    rest.close()


@pytest.fixture(name="fresh")
def fresh_fixture(tmp_path: Path) -> Iterator[Rest]:
    """A seeded app of its own, for the tests that change something."""
    rest = seeded(tmp_path)
    yield rest
    rest.close()


def get(rest: Rest, path: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    response = rest.get(path, headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    body: dict[str, Any] = response.json  # type: ignore[assignment]
    return body


def counted(rest: Rest, stmt: Any) -> dict[str, int]:
    with rest.services.sessions() as s:
        return {state: n for state, n in s.execute(stmt)}


# ------------------------------------------------------------------------------ content


def test_whoami_tells_an_organization_from_the_admin(rest: Rest) -> None:
    assert get(rest, f"{API}/whoami") == {"org": "acme", "admin": False, "orgs": ["acme"]}
    admin = get(rest, f"{API}/whoami", ADMIN)
    assert admin["admin"] is True and admin["org"] is None
    assert {"acme", "globex"} <= set(admin["orgs"])


def test_summary_counts_match_the_database(rest: Rest) -> None:
    body = get(rest, f"{API}/acme/summary")

    assert set(body) == {"workflows", "tasks", "pendingValidations", "generatedAt"}
    acme = rest.workflow("sig").org_id
    workflows = counted(
        rest,
        select(Workflow.state, func.count())
        .where(Workflow.org_id == acme)
        .group_by(Workflow.state),
    )
    tasks = counted(
        rest,
        select(Task.state, func.count())
        .join(Workflow, Workflow.id == Task.workflow_id)
        .where(Workflow.org_id == acme)
        .group_by(Task.state),
    )
    assert {k: v for k, v in body["workflows"].items() if v} == workflows
    assert {k: v for k, v in body["tasks"].items() if v} == tasks
    assert body["workflows"]["started"] >= 3 and body["workflows"]["error"] == 1
    assert body["tasks"]["waiting"] >= 2 and body["tasks"]["failed"] == 1
    assert body["pendingValidations"] == 1
    assert dt.datetime.fromisoformat(body["generatedAt"]).tzinfo is not None
    # globex's own summary knows nothing of acme's runs
    globex = get(rest, f"{API}/globex/summary", rest.globex)
    assert sum(globex["tasks"].values()) == 0 and globex["workflows"]["edition"] == 1


def test_workflow_list_has_last_run_next_run_and_current_job_counts(rest: Rest) -> None:
    body = get(rest, f"{API}/acme/workflows")

    assert body["count"] == 4 and body["next"] is None
    items = {item["id"]: item for item in body["content"]}
    assert list(items) == sorted(items)  # ordered by id
    sig = items["sig"]
    assert set(sig) >= {"id", "label", "state", "lastRun", "nextRun", "tasks"}
    assert sig["label"] == "Signal test" and sig["state"] == "started"
    with rest.services.sessions() as s:
        newest = s.scalars(
            select(Job)
            .where(Job.workflow_id == rest.workflow("sig").id)
            .order_by(Job.created_at.desc())
        ).first()
        assert newest is not None
    assert sig["lastRun"]["jobId"] == newest.id
    assert sig["lastRun"]["state"] == "done"
    assert sig["lastRun"]["finishedAt"] is not None
    assert sig["tasks"] == {"done": 2}  # signal1 and end1 of the newest job
    waiter = items["waiter"]
    assert waiter["lastRun"]["state"] == "running" and waiter["lastRun"]["finishedAt"] is None
    due = dt.datetime.fromisoformat(waiter["nextRun"])
    assert dt.timedelta(minutes=59) < due - dt.datetime.now(dt.UTC) <= dt.timedelta(hours=1)
    assert items["failing"]["state"] == "error"
    assert items["failing"]["lastRun"]["state"] == "failed"
    assert items["failing"]["tasks"] == {"done": 1, "failed": 1}


def test_workflow_list_pages_and_filters(rest: Rest) -> None:
    first = get(rest, f"{API}/acme/workflows?_lineCount=3")
    assert [i["id"] for i in first["content"]] == ["approval", "failing", "sig"]
    assert first["count"] == 4
    assert first["next"]["href"].startswith(f"{PUBLIC_URL}{API}/acme/workflows?")
    second = get(rest, first["next"]["href"][len(PUBLIC_URL) :])
    assert [i["id"] for i in second["content"]] == ["waiter"] and second["next"] is None

    assert [i["id"] for i in get(rest, f"{API}/acme/workflows?state=error")["content"]] == [
        "failing"
    ]
    # q: case-insensitive substring of the id or the label; % and _ are literal
    assert [i["id"] for i in get(rest, f"{API}/acme/workflows?q=AN%20HOUR")["content"]] == [
        "waiter"
    ]
    assert [i["id"] for i in get(rest, f"{API}/acme/workflows?q=SIG")["content"]] == ["sig"]
    assert get(rest, f"{API}/acme/workflows?q=%25")["count"] == 0
    assert get(rest, f"{API}/acme/workflows?q=_")["count"] == 0


def test_workflow_graph_has_states_counts_and_transitions(rest: Rest) -> None:
    body = get(rest, f"{API}/acme/workflows/sig")

    assert body["id"] == "sig" and body["state"] == "started"
    activities = {a["name"]: a for a in body["activities"]}
    assert activities["signal1"] == {
        "name": "signal1",
        "type": "externalSignal",
        "label": "",
        "state": "done",
        "counts": {"done": 3, "waiting": 1},  # the entry signal keeps listening
        "executions": 4,
    }
    assert activities["end1"]["counts"] == {"done": 3}
    assert body["transitions"] == [{"from": "signal1", "outlet": "done", "to": "end1"}]

    waiter = get(rest, f"{API}/acme/workflows/@{rest.workflow('waiter').pkey}")
    states = {a["name"]: a["state"] for a in waiter["activities"]}
    assert states == {"start1": "done", "wait1": "waiting", "end1": None}
    failing = {a["name"]: a for a in get(rest, f"{API}/acme/workflows/failing")["activities"]}
    assert failing["effect1"]["state"] == "failed" and failing["effect1"]["counts"] == {"failed": 1}


def test_jobs_newest_first_with_derived_state_and_filter(rest: Rest) -> None:
    body = get(rest, f"{API}/acme/workflows/sig/jobs?_lineCount=2")

    # the start's job (its entry signal still listening) and one job per trigger
    assert body["count"] == 4 and len(body["content"]) == 2 and body["next"] is not None
    with rest.services.sessions() as s:
        ids = list(
            s.scalars(
                select(Job.id)
                .where(Job.workflow_id == rest.workflow("sig").id)
                .order_by(Job.created_at.desc(), Job.id.desc())
            )
        )
    assert [job["id"] for job in body["content"]] == ids[:2]
    job = body["content"][0]
    assert job["state"] == "done" and job["tasks"] == 2 and job["startedAt"] and job["finishedAt"]
    assert get(rest, f"{API}/acme/workflows/sig/jobs?state=done")["count"] == 3
    assert get(rest, f"{API}/acme/workflows/sig/jobs?state=running")["count"] == 1
    assert get(rest, f"{API}/acme/workflows/sig/jobs?state=aborted")["count"] == 0
    assert get(rest, f"{API}/acme/workflows/failing/jobs?state=failed")["count"] == 1
    assert get(rest, f"{API}/acme/workflows/waiter/jobs?state=running")["count"] == 1


def test_tasks_newest_first_with_why_filters_and_paging(rest: Rest) -> None:
    body = get(rest, f"{API}/acme/workflows/sig/tasks")
    assert body["count"] == 7  # 3 jobs of signal1 + end1, and the listening signal1
    created = [t["createdAt"] for t in body["content"]]
    assert created == sorted(created, reverse=True)
    task = body["content"][0]
    assert set(task) >= {
        "id", "jobId", "activity", "type", "state", "startedAt", "finishedAt", "durationMs",
        "executions", "abortReason", "error", "vars", "counts", "why",
    }  # fmt: skip
    assert task["executions"] == 1 and task["durationMs"] >= 0 and task["why"] is None

    waiting = get(rest, f"{API}/acme/workflows/waiter/tasks?state=waiting")["content"]
    assert len(waiting) == 1 and "timer is due at" in waiting[0]["why"]
    failed = get(rest, f"{API}/acme/workflows/failing/tasks?state=failed")["content"]
    assert failed[0]["error"] and "never" in failed[0]["error"]
    # the same "why" texts as the history API (one set of explained states)
    assert failed[0]["why"].startswith("failed: ") and "resume or retry" in failed[0]["why"]

    only_end = get(rest, f"{API}/acme/workflows/sig/tasks?activity=end1")
    assert only_end["count"] == 3 and {t["activity"] for t in only_end["content"]} == {"end1"}
    job_id = task["jobId"]
    in_job = get(rest, f"{API}/acme/workflows/sig/tasks?jobId={job_id}")
    assert in_job["count"] == 2 and {t["jobId"] for t in in_job["content"]} == {job_id}
    triggered = [t for t in body["content"] if t["activity"] == "signal1" and t["vars"]]
    assert sorted(t["vars"]["n"] for t in triggered) == [0, 1, 2]

    pages = [get(rest, f"{API}/acme/workflows/sig/tasks?_lineCount=4&_lineStart={start}")
             for start in (0, 4)]  # fmt: skip
    assert [len(p["content"]) for p in pages] == [4, 3] and pages[1]["next"] is None
    seen = [t["id"] for p in pages for t in p["content"]]
    assert seen == [t["id"] for t in body["content"]]


def test_logs_newest_first_and_filtered(rest: Rest) -> None:
    with rest.services.sessions() as s, s.begin():
        workflow_id = rest.workflow("failing").id
        total = s.execute(
            select(func.count()).select_from(LogLine).where(LogLine.workflow_id == workflow_id)
        ).scalar_one()
        errors = s.execute(
            select(func.count())
            .select_from(LogLine)
            .where(LogLine.workflow_id == workflow_id, LogLine.level == "error")
        ).scalar_one()
    body = get(rest, f"{API}/acme/workflows/failing/logs")

    assert body["count"] == total > 0
    ids = [line["id"] for line in body["content"]]
    assert ids == sorted(ids, reverse=True)
    assert set(body["content"][0]) == {
        "id", "at", "level", "activity", "taskId", "jobId", "message"
    }  # fmt: skip
    assert get(rest, f"{API}/acme/workflows/failing/logs?level=error")["count"] == errors >= 1
    failed_task = get(rest, f"{API}/acme/workflows/failing/tasks?state=failed")["content"][0]
    by_task = get(rest, f"{API}/acme/workflows/failing/logs?taskId={failed_task['id']}")
    assert by_task["count"] >= 1
    assert {line["taskId"] for line in by_task["content"]} == {failed_task["id"]}
    found = get(rest, f"{API}/acme/workflows/failing/logs?q=FLAG%20FILE")["content"]
    assert found and all("flag file" in line["message"].lower() for line in found)


def test_validations_lists_the_pending_one(fresh: Rest) -> None:
    rest = fresh
    body = get(rest, f"{API}/acme/validations?state=pending")

    assert body["count"] == 1
    item = body["content"][0]
    assert item["workflowId"] == "approval" and item["activity"] == "validation1"
    assert item["subject"] == "Send the newsletter?" and item["assignee"] == "alice"
    assert item["state"] == "pending" and item["createdAt"]
    assert get(rest, f"{API}/acme/validations?state=approved")["count"] == 0
    # decided through the existing endpoint with the id given here
    decided = rest.post(
        f"/acme/campaign/workflow/validation/{item['id']}/decision",
        {"decision": "approve", "user": "alice"},
    )
    assert decided.status_code == 200, decided.json
    assert get(rest, f"{API}/acme/validations?state=approved")["count"] == 1


def test_throughput_buckets_count_done_failed_and_triggers(rest: Rest) -> None:
    body = get(rest, f"{API}/acme/throughput?minutes=10")

    assert body["bucketSeconds"] == 60 and len(body["buckets"]) == 10
    assert sum(b["triggers"] for b in body["buckets"]) == 3
    assert sum(b["failed"] for b in body["buckets"]) == 1
    acme = rest.workflow("sig").org_id
    with rest.services.sessions() as s:
        done = s.execute(
            select(func.count())
            .select_from(Task)
            .join(Workflow, Workflow.id == Task.workflow_id)
            .where(Workflow.org_id == acme, Task.state == "done")
        ).scalar_one()
    assert sum(b["done"] for b in body["buckets"]) == done
    times = [dt.datetime.fromisoformat(b["t"]) for b in body["buckets"]]
    assert times == sorted(times) and all(
        (b - a).total_seconds() == 60 for a, b in itertools.pairwise(times)
    )
    day = get(rest, f"{API}/acme/throughput?minutes=1440")
    assert day["bucketSeconds"] == 720 and len(day["buckets"]) == 120
    assert sum(b["triggers"] for b in day["buckets"]) == 3
    assert get(rest, f"{API}/acme/throughput")["bucketSeconds"] == 60  # default 60 minutes


def test_technical_is_for_the_admin_only(rest: Rest) -> None:
    error_of(rest.get(f"{API}/technical"), 404)
    body = get(rest, f"{API}/technical", ADMIN)

    names = {item["name"] for item in body["content"]}
    assert {"cleanup", "billing", "forecasting"} <= names and len(names) == 15
    cleanup = next(item for item in body["content"] if item["name"] == "cleanup")
    assert set(cleanup) == {
        "name", "label", "enabled", "schedule", "state", "lastTick", "lastOutcome", "nextRun"
    }  # fmt: skip
    assert cleanup["label"] == "Database cleanup" and cleanup["enabled"] is True
    assert dt.datetime.fromisoformat(cleanup["nextRun"]) > dt.datetime.now(dt.UTC)


def test_workers_without_a_reachable_broker_is_empty_not_an_error(rest: Rest) -> None:
    # The test app's broker is memory://: no worker, depths unknown, and no 5xx.
    body = get(rest, f"{API}/workers")

    assert body["workers"] == []
    assert {q["name"] for q in body["queues"]} >= {"carillon.flow", "carillon.control"}
    assert all(q["depth"] is None for q in body["queues"])


def test_workers_with_a_redis_broker_that_is_down(make_rest: Any) -> None:
    rest: Rest = make_rest(broker_url="redis://127.0.0.1:1/0")
    body = get(rest, f"{API}/workers")
    assert body["workers"] == [] and all(q["depth"] is None for q in body["queues"])


def test_filesystem_broker_depths_count_message_files(make_rest: Any) -> None:
    rest: Rest = make_rest(broker_url="filesystem://")
    folder = rest.services.settings.broker_folder / "queue"
    folder.mkdir(parents=True, exist_ok=True)
    for n in range(3):
        (folder / f"{n}_x.carillon.flow.msg").write_text("{}")
    (folder / "9_y.carillon.data.msg").write_text("{}")
    depths = {q["name"]: q["depth"] for q in get(rest, f"{API}/workers")["queues"]}
    assert depths["carillon.flow"] == 3 and depths["carillon.data"] == 1
    assert depths["carillon.channel"] == 0


# ------------------------------------------------------------------------------ auth


ORG_PATHS = [
    "summary",
    "workflows",
    "workflows/sig",
    "workflows/sig/jobs",
    "workflows/sig/tasks",
    "workflows/sig/logs",
    "validations",
    "throughput",
]


@pytest.mark.parametrize(
    "path", ["whoami", "technical", "workers"] + [f"acme/{p}" for p in ORG_PATHS]
)
def test_no_or_bad_credentials_get_401(rest: Rest, path: str) -> None:
    error_of(rest.client.get(f"{API}/{path}"), 401, "unauthorized")
    error_of(rest.client.get(f"{API}/{path}", headers={"Authorization": "Bearer nope"}), 401)
    # the admin token with an API key is an organization login, and a wrong one
    mixed = {**ADMIN, "X-Api-Key": rest.headers["X-Api-Key"]}
    error_of(rest.client.get(f"{API}/{path}", headers=mixed), 401)


@pytest.mark.parametrize("path", ORG_PATHS)
def test_another_organization_gets_404_and_the_admin_sees_all(rest: Rest, path: str) -> None:
    error_of(rest.get(f"{API}/acme/{path}", rest.globex), 404)
    mine = rest.get(f"{API}/acme/{path}")
    admin = rest.get(f"{API}/acme/{path}", ADMIN)
    assert admin.status_code == mine.status_code == 200
    strip = ("generatedAt", "inspectedAt")
    assert {k: v for k, v in admin.json.items() if k not in strip} == {  # type: ignore[union-attr]
        k: v
        for k, v in mine.json.items()
        if k not in strip  # type: ignore[union-attr]
    }
    error_of(rest.get(f"{API}/nosuchorg/{path}", ADMIN), 404)


def test_the_admin_token_is_off_when_unset(make_rest: Any) -> None:
    rest: Rest = make_rest()
    error_of(rest.client.get(f"{API}/whoami", headers={"Authorization": "Bearer "}), 401)
    error_of(rest.client.get(f"{API}/whoami", headers={"Authorization": "Bearer x" * 3}), 401)


def test_the_admin_acts_through_the_existing_endpoints(fresh: Rest) -> None:
    rest = fresh
    # execution commands
    response = rest.post(
        "/acme/campaign/workflow/execution/waiter/commands", {"method": "pause"}, ADMIN
    )
    assert response.status_code == 202, response.json
    rest.stub.drain()
    assert rest.workflow("waiter").state == "paused"
    # validation decision
    pending = get(rest, f"{API}/acme/validations?state=pending", ADMIN)["content"][0]
    decided = rest.post(
        f"/acme/campaign/workflow/validation/{pending['id']}/decision",
        {"decision": "reject", "comment": "not now", "user": "admin"},
        ADMIN,
    )
    assert decided.status_code == 200 and decided.json["state"] == "rejected"  # type: ignore[index]
    # technical workflows of the system organization: PATCH and run
    base = "/system/campaign/workflow/technical/cleanup"
    changed = rest.client.patch(base, json={"enabled": False}, headers=ADMIN)
    assert changed.status_code == 200, changed.json
    listed = get(rest, f"{API}/technical", ADMIN)["content"]
    assert next(item for item in listed if item["name"] == "cleanup")["enabled"] is False
    ran = rest.post(f"{base}/run", {}, ADMIN)
    assert ran.status_code in (200, 202), ran.json
    # an organization cannot reach the system organization
    error_of(rest.get(base), 404)


# ------------------------------------------------------------------------------ hostile input


HOSTILE = [
    "workflows?_lineStart=-1",
    "workflows?_lineStart=99999999999999",
    "workflows?_lineCount=0",
    "workflows?_lineCount=501",
    "workflows?_lineCount=abc",
    "workflows?_lineStart=1e3",
    "workflows?state=bogus",
    "workflows?state=started%27%3B%20DROP%20TABLE%20task%3B--",
    f"workflows?q={'x' * 10_000}",
    "workflows?q=a%00b",
    "workflows/sig/jobs?state=weird",
    "workflows/sig/tasks?state=exploded",
    f"workflows/sig/tasks?activity={'a' * 10_000}",
    f"workflows/sig/tasks?jobId={'j' * 100}",
    "workflows/sig/logs?level=%27%20OR%201%3D1--",
    f"workflows/sig/logs?q={'q' * 10_000}",
    "workflows/sig/logs?taskId=%00",
    "validations?state=all",
    "throughput?minutes=0",
    "throughput?minutes=1441",
    "throughput?minutes=-5",
    "throughput?minutes=ten",
    "throughput?minutes=99999999999999999999",
]


@pytest.mark.parametrize("query", HOSTILE)
def test_hostile_query_strings_get_400_and_change_nothing(rest: Rest, query: str) -> None:
    before = rest.rows()
    error = error_of(rest.get(f"{API}/acme/{query}"), 400, "badRequest")
    assert len(error["message"]) < 300
    assert rest.rows() == before


@pytest.mark.parametrize(
    "query",
    [
        "workflows?q=%27%20OR%20%271%27%3D%271",
        "workflows?q=sig%27%3B%20DELETE%20FROM%20task%3B--",
        "workflows/sig/logs?q=%25%27%20OR%201%3D1--",
        "workflows/sig/tasks?activity=%27%20OR%201%3D1--",
        "workflows/sig/tasks?jobId=1%27%20OR%20%271",
    ],
)
def test_sql_looking_filters_are_plain_text(rest: Rest, query: str) -> None:
    before = rest.rows()
    body = get(rest, f"{API}/acme/{query}")
    assert body["count"] == 0 and body["content"] == []
    assert rest.rows() == before


@pytest.mark.parametrize(
    "path", [f"workflows/{'w' * 10_000}", "workflows/%00", "workflows/nosuch/tasks"]
)
def test_unknown_or_hostile_workflow_refs_get_404(rest: Rest, path: str) -> None:
    error_of(rest.get(f"{API}/acme/{path}"), 404)


def test_a_deep_page_is_empty_not_an_error(rest: Rest) -> None:
    body = get(rest, f"{API}/acme/workflows/sig/tasks?_lineStart=1000000")
    assert body["content"] == [] and body["count"] == 7 and body["next"] is None


def test_validations_of_a_purged_workflow_still_list(fresh: Rest) -> None:
    rest = fresh
    with rest.services.sessions() as s, s.begin():
        s.execute(update(validation).values(workflow_id=999_999))
    item = get(rest, f"{API}/acme/validations")["content"][0]
    assert item["workflowId"] is None


def test_counts_stop_past_the_window_and_say_so(
    rest: Rest, monkeypatch: pytest.MonkeyPatch
) -> None:
    import api.monitoring

    monkeypatch.setattr(api.monitoring, "COUNT_AHEAD", 2)
    body = get(rest, f"{API}/acme/workflows/sig/tasks?_lineCount=2")
    assert body["count"] == 4 and body["countExact"] is False and body["next"] is not None
    last = get(rest, f"{API}/acme/workflows/sig/tasks?_lineCount=2&_lineStart=5")
    assert last["count"] == 7 and last["countExact"] is True and last["next"] is None
