"""The API under faults and floods: requeue, Idempotency-Key, rate limiting, 503 (SQLite)."""

from __future__ import annotations

import datetime as dt
import logging
import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update

from api.idempotency import ABANDONED_AFTER
from api.ratelimit import Limit, Limiter, LocalStore, RedisStore
from tests import api_conftest
from tests.api_conftest import SIGNAL_WORKFLOW, Rest, error_of
from worker.config import Settings
from worker.errors import ConfigError
from worker.models import Command, IdempotencyKey, Job, Task, Trigger, Workflow

make_rest_fixture = api_conftest.make_rest_fixture
rest_fixture = api_conftest.rest_fixture

BASE = "/acme/campaign/workflow/execution"
LIST = "/acme/campaign/workflow/definitions"
TRIGGER = {"source": "API", "parameters": {"n": 1}}


def chain(name: str = "chain") -> dict[str, Any]:
    return {
        "id": name,
        "activities": [
            {"name": "start1", "type": "start", "transitions": {"done": "a1"}},
            {"name": "a1", "type": "effect", "transitions": {"done": "end1"}},
            {"name": "end1", "type": "end"},
        ],
    }


def dead_task(rest: Rest) -> str:
    """A started chain whose a1 lost its worker CARILLON_MAX_ATTEMPTS times: dead."""
    rest.save(chain())
    rest.post(f"{BASE}/chain/commands", {"method": "start"})
    rest.engine.apply_commands(rest.workflow("chain").id)
    rest.stub.queue.clear()
    with rest.services.sessions() as s:
        start1 = s.execute(select(Task.id).where(Task.activity == "start1")).scalar_one()
    rest.engine.run(start1)
    rest.stub.queue.clear()
    with rest.services.sessions() as s:
        a1 = str(s.execute(select(Task.id).where(Task.activity == "a1")).scalar_one())
    stale = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=120)
    for _ in range(rest.services.settings.max_attempts):
        with rest.services.sessions() as s, s.begin():
            s.execute(
                update(Task)
                .where(Task.id == a1)
                .values(state="running", attempt=Task.attempt + 1, heartbeat_at=stale)
            )
        rest.engine.tick()
        rest.stub.queue.clear()
    assert task_state(rest, a1) == "dead"
    return a1


def task_state(rest: Rest, task_id: str) -> str:
    with rest.services.sessions() as s:
        return str(s.execute(select(Task.state).where(Task.id == task_id)).scalar_one())


def started_signal(rest: Rest) -> str:
    rest.start(SIGNAL_WORKFLOW)
    return rest.trigger_path("sig")


# ------------------------------------------------------------------ requeue


def test_requeue_runs_a_dead_task_and_the_workflow_leaves_error(rest: Rest) -> None:
    a1 = dead_task(rest)
    assert rest.workflow("chain").state == "error"
    listed = rest.get(f"{BASE}/chain/tasks").json
    assert listed is not None
    assert {t["state"] for t in listed["content"] if t["id"] == a1} == {"dead"}

    response = rest.post(f"{BASE}/chain/tasks/{a1}/requeue")

    assert response.status_code == 202, response.json
    assert response.json is not None and response.json["state"] == "pending"
    assert rest.workflow("chain").state == "started"
    rest.stub.drain()
    assert task_state(rest, a1) == "done"
    assert rest.workflow("chain").state == "finished"


def test_requeue_refuses_a_task_that_is_not_dead(rest: Rest) -> None:
    a1 = dead_task(rest)
    rest.post(f"{BASE}/chain/tasks/{a1}/requeue")
    before = rest.rows()

    error_of(rest.post(f"{BASE}/chain/tasks/{a1}/requeue"), 409, "commandRefused")
    assert rest.rows() == before


@pytest.mark.parametrize(
    "task_ref", ["nope", "x" * 5000, "%00", "..%2F..%2Fetc", "' OR 1=1 --", "\u202e"]
)
def test_requeue_of_an_unknown_or_hostile_task_id_is_a_404(rest: Rest, task_ref: str) -> None:
    dead_task(rest)
    before = rest.rows()
    response = rest.post(f"{BASE}/chain/tasks/{task_ref}/requeue")
    assert response.status_code in (404, 414), response.json
    assert rest.rows() == before


def test_another_organizations_dead_task_cannot_be_requeued(rest: Rest) -> None:
    a1 = dead_task(rest)
    rest.save(chain("mine"), org="globex")
    response = rest.client.post(
        f"/globex/campaign/workflow/execution/mine/tasks/{a1}/requeue", headers=rest.globex
    )
    error_of(response, 404)
    assert task_state(rest, a1) == "dead"


# ------------------------------------------------------------------ Idempotency-Key


def test_a_replayed_trigger_returns_the_first_response_and_does_nothing(rest: Rest) -> None:
    path = started_signal(rest)
    headers = {**rest.headers, "Idempotency-Key": "order-42"}

    first = rest.post(path, TRIGGER, headers=headers)
    again = rest.post(path, {"parameters": {"n": 1}, "source": "API"}, headers=headers)

    assert first.status_code == 202, first.json
    assert (again.status_code, again.json) == (202, first.json)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.headers.get("Location") == first.headers.get("Location")
    with rest.services.sessions() as s:
        assert s.execute(select(func.count()).select_from(Trigger)).scalar_one() == 1


def test_twenty_concurrent_identical_triggers_start_one_job(rest: Rest) -> None:
    path = started_signal(rest)
    headers = {**rest.headers, "Idempotency-Key": "burst-1"}
    jobs_before = rest.rows()["Job"]
    results: list[tuple[int, Any]] = []
    barrier = threading.Barrier(20)

    def send() -> None:
        client = rest.app.test_client()
        barrier.wait(timeout=30)
        response = client.post(path, json=TRIGGER, headers=headers)
        results.append((response.status_code, response.json))

    threads = [threading.Thread(target=send) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert len(results) == 20
    assert {status for status, _ in results} == {202}
    assert len({str(body) for _, body in results}) == 1
    with rest.services.sessions() as s:
        assert s.execute(select(func.count()).select_from(Trigger)).scalar_one() == 1
    assert rest.rows()["Job"] == jobs_before + 1


def test_twenty_concurrent_identical_commands_record_one(rest: Rest) -> None:
    rest.save(SIGNAL_WORKFLOW)
    headers = {**rest.headers, "Idempotency-Key": "start-once"}
    statuses: list[int] = []

    def send() -> None:
        response = rest.app.test_client().post(
            f"{BASE}/sig/commands", json={"method": "start"}, headers=headers
        )
        statuses.append(response.status_code)

    threads = [threading.Thread(target=send) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert statuses == [202] * 20
    with rest.services.sessions() as s:
        assert s.execute(select(func.count()).select_from(Command)).scalar_one() == 1


def test_the_same_key_with_another_body_is_refused(rest: Rest) -> None:
    path = started_signal(rest)
    headers = {**rest.headers, "Idempotency-Key": "k1"}
    assert rest.post(path, TRIGGER, headers=headers).status_code == 202
    before = rest.rows()

    error = error_of(
        rest.post(path, {"source": "API", "parameters": {"n": 2}}, headers=headers),
        422,
        "idempotencyKeyReused",
    )

    assert error["details"] == {"header": "Idempotency-Key"}
    assert rest.rows() == before


def test_keys_belong_to_one_organization(rest: Rest) -> None:
    path = started_signal(rest)
    assert rest.post(path, TRIGGER, headers={**rest.headers, "Idempotency-Key": "k"}).json
    rest.save(SIGNAL_WORKFLOW, org="globex")
    response = rest.client.post(
        "/globex/campaign/workflow/execution/sig/commands",
        json={"method": "start"},
        headers={**rest.globex, "Idempotency-Key": "k"},
    )
    assert response.status_code == 202 and "Idempotent-Replayed" not in response.headers


@pytest.mark.parametrize("key", ["", "x" * 256, "tab\there", "new\x7fline", "caf\u00e9", " " * 0])
def test_a_bad_key_is_a_400_and_changes_nothing(rest: Rest, key: str) -> None:
    path = started_signal(rest)
    before = rest.rows()
    response = rest.client.post(
        path,
        json=TRIGGER,
        headers={**rest.headers, "Idempotency-Key": key.encode("utf-8").decode("latin-1")},
    )
    error_of(response, 400)
    assert rest.rows() == before


def test_a_key_of_255_characters_is_fine(rest: Rest) -> None:
    path = started_signal(rest)
    response = rest.post(path, TRIGGER, headers={**rest.headers, "Idempotency-Key": "k" * 255})
    assert response.status_code == 202


def test_an_error_releases_the_key_so_a_retry_runs_again(rest: Rest) -> None:
    rest.save(SIGNAL_WORKFLOW)  # not started: a trigger is refused
    headers = {**rest.headers, "Idempotency-Key": "early"}
    path = f"{BASE}/sig/activities/activity/@signal1/trigger"
    refused = rest.post(path, TRIGGER, headers=headers)
    assert refused.status_code >= 400
    rest.command("sig", "start")

    accepted = rest.post(path, TRIGGER, headers=headers)

    assert accepted.status_code == 202, accepted.json
    assert "Idempotent-Replayed" not in accepted.headers


def test_an_abandoned_key_is_taken_over(rest: Rest) -> None:
    path = started_signal(rest)
    with rest.services.sessions() as s, s.begin():
        org_id = rest.workflow("sig").org_id
        long_ago = dt.datetime.now(dt.UTC) - ABANDONED_AFTER - dt.timedelta(seconds=5)
        s.add(
            IdempotencyKey(
                org_id=org_id,
                key="crashed",
                fingerprint="0" * 64,
                state="processing",
                created_at=long_ago,
                expires_at=long_ago + dt.timedelta(hours=24),
            )
        )
    # A fingerprint mismatch still wins: the key was another request's.
    error_of(rest.post(path, TRIGGER, headers={**rest.headers, "Idempotency-Key": "crashed"}), 422)


def test_the_tick_deletes_expired_keys(rest: Rest) -> None:
    path = started_signal(rest)
    rest.post(path, TRIGGER, headers={**rest.headers, "Idempotency-Key": "old"})
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=25)

    assert rest.engine.expire_idempotency_keys(later) == 1

    with rest.services.sessions() as s:
        assert s.execute(select(func.count()).select_from(IdempotencyKey)).scalar_one() == 0
    # And the key can be used again, for anything.
    response = rest.post(path, TRIGGER, headers={**rest.headers, "Idempotency-Key": "old"})
    assert response.status_code == 202 and "Idempotent-Replayed" not in response.headers


# ------------------------------------------------------------------ rate limiting


def test_a_key_over_its_rate_gets_429_with_retry_after(make_rest: Any) -> None:
    rest = make_rest(rate_limit=(5, 60.0), rate_limit_burst=5)
    for _ in range(5):
        assert rest.get(LIST).status_code == 200

    response = rest.get(LIST)

    error = error_of(response, 429, "rateLimited")
    assert 1 <= int(response.headers["Retry-After"]) <= 12
    assert error["details"]["retryAfter"] == int(response.headers["Retry-After"])
    # Another key has its own bucket; the liveness probe is never limited.
    assert rest.get("/globex/campaign/workflow/definitions", headers=rest.globex).status_code == 200
    assert rest.client.get("/healthz").status_code == 200


def test_requests_without_a_key_are_limited_by_address(make_rest: Any) -> None:
    rest = make_rest(rate_limit=(3, 60.0), rate_limit_burst=3)
    for _ in range(3):
        assert rest.client.get(LIST).status_code == 401
    error_of(rest.client.get(LIST), 429, "rateLimited")
    error_of(rest.client.get("/openapi.json"), 429, "rateLimited")


def test_rate_limiting_is_off_by_default_in_code(rest: Rest) -> None:
    assert rest.app.extensions["carillon_limiter"] is None
    assert all(rest.get(LIST).status_code == 200 for _ in range(50))


def test_a_bucket_refills_at_the_rate() -> None:
    now = [100.0]
    store = LocalStore(clock=lambda: now[0])
    limit = Limit(capacity=2, rate=1.0, description="1/second, burst 2")
    assert [store.take("k", limit)[0] for _ in range(3)] == [True, True, False]
    allowed, wait = store.take("k", limit)
    assert not allowed and wait == pytest.approx(1.0)
    now[0] += 1.0
    assert store.take("k", limit)[0] is True
    assert store.take("k", limit)[0] is False


def test_the_local_store_is_bounded() -> None:
    store = LocalStore(max_buckets=100)
    limit = Limit(capacity=1, rate=1.0, description="")
    for index in range(1000):
        store.take(f"k{index}", limit)
    assert len(store) == 100


def test_a_limiter_backend_that_is_down_lets_requests_through(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Port 9 on loopback: nothing listens, the connection is refused at once.
    store = RedisStore("redis://127.0.0.1:9/0")
    limiter = Limiter(Limit(1, 1.0, "1/second"), store)
    with caplog.at_level(logging.WARNING, logger="api.ratelimit"):
        for _ in range(5):
            limiter.check("k")  # no 429, no exception
    store.close()
    assert [r for r in caplog.records if "rate limiter unavailable" in r.getMessage()]
    assert len(caplog.records) == 1  # one line per outage, not one per request


# ------------------------------------------------------------------ 503


def test_the_api_answers_503_while_the_database_is_away(rest: Rest, tmp_path: Path) -> None:
    rest.save(SIGNAL_WORKFLOW)
    database = Path(rest.services.settings.database_url.removeprefix("sqlite:///"))
    rest.services.db.dispose()
    away = database.parent.with_name(database.parent.name + "-away")
    database.parent.rename(away)  # the file cannot be opened any more: an outage
    try:
        for method, path, body in (
            ("get", LIST, None),
            ("post", f"{BASE}/sig/commands", {"method": "start"}),
        ):
            response = getattr(rest.client, method)(path, json=body, headers=rest.headers)
            error = error_of(response, 503, "unavailable")
            assert response.headers["Retry-After"] == "5"
            assert "Traceback" not in response.get_data(as_text=True)
            assert "sqlite" not in error["message"].lower()
        assert rest.client.get("/healthz").status_code == 200  # liveness is not readiness
        not_ready = rest.client.get("/readyz")
        assert error_of(not_ready, 503, "unavailable") and not_ready.headers["Retry-After"]
    finally:
        away.rename(database.parent)
    assert rest.get(LIST).status_code == 200
    assert rest.client.get("/readyz").json == {"status": "ready"}
    assert rest.rows()["Command"] == 0
    with rest.services.sessions() as s:
        assert s.execute(select(Workflow.state)).scalar_one() == "edition"
        assert s.execute(select(func.count()).select_from(Job)).scalar_one() == 0


# ------------------------------------------------------------------ configuration


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("50/second", (50, 1.0)),
        ("600/minute", (600, 60.0)),
        ("10/h", (10, 3600.0)),
        (" 7/S ", (7, 1.0)),
        ("off", None),
        ("0", None),
        ("", None),
    ],
)
def test_the_rate_limit_setting_is_parsed(raw: str, expected: Any) -> None:
    assert Settings.from_env({"CARILLON_RATE_LIMIT": raw}).rate_limit == expected


@pytest.mark.parametrize(
    "raw", ["50", "50/day", "-1/second", "0/second", "1e3/second", "x/second", "99999999/s"]
)
def test_a_bad_rate_limit_setting_is_refused_at_start(raw: str) -> None:
    with pytest.raises(ConfigError, match="CARILLON_RATE_LIMIT must be"):
        Settings.from_env({"CARILLON_RATE_LIMIT": raw})


def test_the_burst_defaults_to_twice_the_rate() -> None:
    settings = Settings.from_env({"CARILLON_RATE_LIMIT": "50/second"})
    limit = Limit.from_settings(settings)
    assert limit is not None and (limit.capacity, limit.rate) == (100, 50.0)
    burst = Settings.from_env(
        {"CARILLON_RATE_LIMIT": "50/second", "CARILLON_RATE_LIMIT_BURST": "5"}
    )
    assert Limit.from_settings(burst) == Limit(5, 50.0, "50/second, burst 5")
