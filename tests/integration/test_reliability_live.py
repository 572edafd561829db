"""Reliability on real PostgreSQL + Redis + a real worker: poison tasks, database outages.

- A poison activity that `os._exit(137)`s its worker ends `dead` after CARILLON_MAX_ATTEMPTS
  executions, its workflow in `error`; a requeue after the fix runs it to the end.
- PostgreSQL refusing every connection for a while (ALLOW_CONNECTIONS false + terminated
  backends) neither fails an activity nor runs an effect twice: tasks back off and retry.
- The API answers 503 with Retry-After during that outage, changes nothing, and recovers.
- The rate limiter's buckets live in Redis, shared by API processes, and expire.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

import tests.integration.poison  # noqa: F401  (registers the `poison` type in this process)
from api import create_app
from api.ratelimit import KEY_PREFIX, Limit, Limiter, RedisStore
from tests.integration.conftest import (
    PG_ADMIN_URL,
    Stack,
    _redis,
    running_stack,
    wait_for,
)
from tests.plugins import effects
from tests.stub import StubDispatcher
from worker import catalog
from worker.config import Settings
from worker.models import Command, Job, LogLine, Task, Workflow

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

MAX_ATTEMPTS = 3
EXTRA_ENV = {
    "CARILLON_ACTIVITY_MODULES": "tests.plugins,tests.integration.poison",
    "CARILLON_MAX_ATTEMPTS": str(MAX_ATTEMPTS),
}


@pytest.fixture(scope="module")
def pg_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """PostgreSQL + Redis, one worker and beat, CARILLON_MAX_ATTEMPTS=3."""
    home = tmp_path_factory.mktemp("reliability")
    with running_stack(home, env=EXTRA_ENV, max_attempts=MAX_ATTEMPTS) as built:
        yield built


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def database_name(stack: Stack) -> str:
    return str(make_url(stack.settings.database_url).database)


class Outage:
    """PostgreSQL refuses every new connection to the test database and drops the open ones."""

    def __init__(self, database: str) -> None:
        self.database = database
        self.admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")

    def __enter__(self) -> Outage:
        with self.admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{self.database}" ALLOW_CONNECTIONS false'))
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": self.database},
            )
        return self

    def __exit__(self, *_: Any) -> None:
        with self.admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{self.database}" ALLOW_CONNECTIONS true'))
        self.admin.dispose()


def task_rows(stack: Stack, workflow: str) -> list[Any]:
    with stack.sessions() as s:
        return list(
            s.execute(
                select(Task.id, Task.activity, Task.state, Task.attempt, Task.error)
                .join(Workflow)
                .where(Workflow.name == workflow)
                .order_by(Task.created_at)
            ).all()
        )


def effects_of(stack: Stack, workflow: str) -> dict[str, int]:
    with stack.sessions() as s:
        rows = s.execute(
            select(effects.c.activity, func.count())
            .join(Task, Task.id == effects.c.task_id)
            .join(Workflow, Workflow.id == Task.workflow_id)
            .where(Workflow.name == workflow)
            .group_by(effects.c.activity)
        ).all()
    return {activity: count for activity, count in rows}


def log_text(stack: Stack, name: str) -> str:
    return (stack.home / f"{name}.log").read_text(errors="replace")


# ------------------------------------------------------------------ poison -> dead -> requeue


def test_a_poison_activity_ends_dead_and_runs_after_a_requeue(
    pg_stack: Stack, tmp_path: Path
) -> None:
    started, fixed = tmp_path / "started", tmp_path / "fixed"
    started.mkdir()
    name = pg_stack.save(
        {
            "id": unique("poison"),
            "activities": [
                {"name": "start1", "type": "start", "transitions": {"done": "p1"}},
                {
                    "name": "p1",
                    "type": "poison",
                    "startedDir": str(started),
                    "fixedFile": str(fixed),
                    "transitions": {"done": "after1"},
                },
                {"name": "after1", "type": "effect", "transitions": {"done": "end1"}},
                {"name": "end1", "type": "end"},
            ],
        }
    )
    pg_stack.engine.command(None, name, "start")

    pg_stack.wait_state(name, "error", timeout=120)

    (p1,) = [r for r in task_rows(pg_stack, name) if r.activity == "p1"]
    assert p1.state == "dead"
    assert p1.attempt == MAX_ATTEMPTS
    assert f"attempts {MAX_ATTEMPTS}/{MAX_ATTEMPTS}" in p1.error
    # Bounded: the activity ran exactly CARILLON_MAX_ATTEMPTS times, each killing its process.
    assert sorted(p.name for p in started.iterdir()) == [str(n) for n in range(1, MAX_ATTEMPTS + 1)]
    with pg_stack.sessions() as s:
        lines = s.scalars(
            select(LogLine.message).where(LogLine.task_id == p1.id, LogLine.level == "error")
        ).all()
    assert any("poison" in line for line in lines)
    assert any("workflow suspended in error" in line for line in lines)
    # Redeliveries of the dead task's message are acked and ignored: nothing more runs.
    assert pg_stack.state(name) == "error"
    assert len(list(started.iterdir())) == MAX_ATTEMPTS

    # When the activity is fixed and an operator requeues the task
    fixed.write_text("fixed")
    pg_stack.engine.requeue(p1.id)

    pg_stack.wait_state(name, "finished", timeout=60)
    assert effects_of(pg_stack, name) == {"p1": 1, "after1": 1}
    (p1,) = [r for r in task_rows(pg_stack, name) if r.activity == "p1"]
    assert (p1.state, p1.attempt) == ("done", MAX_ATTEMPTS + 1)
    wait_for(pg_stack.activity_queues_drained, 30, "the activity queues to drain")


# ------------------------------------------------------------------ database outage


def test_a_database_outage_mid_activity_is_retried_with_backoff_and_effects_happen_once(
    pg_stack: Stack,
) -> None:
    name = pg_stack.save(
        {
            "id": unique("outage"),
            "activities": [
                {"name": "start1", "type": "start", "transitions": {"done": "a1"}},
                {"name": "a1", "type": "effect", "seconds": 2, "transitions": {"done": "b1"}},
                {"name": "b1", "type": "effect", "transitions": {"done": "end1"}},
                {"name": "end1", "type": "end"},
            ],
        }
    )
    pg_stack.engine.command(None, name, "start")
    wait_for(
        lambda: any(r.activity == "a1" and r.state == "running" for r in task_rows(pg_stack, name)),
        30,
        "a1 running",
    )
    (a1,) = [r.id for r in task_rows(pg_stack, name) if r.activity == "a1"]
    log_start = pg_stack.log_size("w1")

    def a1_retries() -> list[str]:
        # a1's lines only: a late redelivery of an earlier test's message (its worker was
        # killed) can meet the outage too, and back off in the same log.
        return [
            line
            for line in log_text(pg_stack, "w1")[log_start:].splitlines()
            if f"task {a1}: database unavailable" in line
        ]

    with Outage(database_name(pg_stack)):
        # a1 finishes its work while PostgreSQL refuses connections: the worker retries.
        # Kept down until the task has backed off three times (a few seconds in all).
        wait_for(
            lambda: any("retry 3/" in line for line in a1_retries()),
            60,
            "a1's completion to meet the outage and back off three times",
        )

    pg_stack.wait_state(name, "finished", timeout=120)
    assert effects_of(pg_stack, name) == {"a1": 1, "b1": 1}
    assert {r.state for r in task_rows(pg_stack, name)} == {"done"}
    worker_log = log_text(pg_stack, "w1")[log_start:]
    countdowns = [
        float(line.rsplit(" in ", 1)[1].rstrip("s"))
        for line in worker_log.splitlines()
        if "; retry " in line
    ]
    assert countdowns and all(0 <= c <= 3.0 for c in countdowns)  # jittered, under VT / 10
    assert not pg_stack.task_errors("w1", log_start)  # no task failed with a traceback


# ------------------------------------------------------------------ 503 from the API


@pytest.fixture
def pg_api(pg_stack: Stack) -> Iterator[Any]:
    settings = Settings(
        home=pg_stack.home,
        database_url=pg_stack.settings.database_url,
        broker_url="memory://",
        result_backend="cache+memory://",
        public_url="https://campaign.example.com",
    ).resolved()
    app = create_app(settings, dispatcher=StubDispatcher())
    with app.extensions["carillon"].sessions() as s, s.begin():
        creds = catalog.create_credentials(s, unique("org"))
    yield app, creds
    app.extensions["carillon"].db.dispose()


def test_the_api_answers_503_with_retry_after_while_postgres_is_down(
    pg_stack: Stack, pg_api: Any
) -> None:
    app, creds = pg_api
    org = creds["org"]
    headers = {"Authorization": f"Bearer {creds['token']}", "X-Api-Key": creds["apiKey"]}
    client = app.test_client()
    listing = f"/{org}/campaign/workflow/definitions"
    workflow = {
        "id": unique("api"),
        "activities": [
            {"name": "start1", "type": "start", "transitions": {"done": "end1"}},
            {"name": "end1", "type": "end"},
        ],
    }
    assert client.get(listing, headers=headers).status_code == 200
    rows_before = _count_rows(pg_stack)

    with Outage(database_name(pg_stack)):
        for method, path, body in (
            ("get", listing, None),
            ("post", listing, workflow),
            ("post", f"/{org}/campaign/workflow/execution/x/commands", {"method": "start"}),
        ):
            response = getattr(client, method)(path, json=body, headers=headers)
            assert response.status_code == 503, response.get_data(as_text=True)
            assert response.headers["Retry-After"] == "5"
            payload = response.json
            assert payload["error"]["code"] == "unavailable"
            assert "Traceback" not in response.get_data(as_text=True)
            assert "psycopg2" not in response.get_data(as_text=True)
        assert client.get("/healthz").status_code == 200

    # Recovered at once (pool_pre_ping drops the dead connections), nothing half-done.
    assert client.get(listing, headers=headers).status_code == 200
    assert _count_rows(pg_stack) == rows_before
    assert client.post(listing, json=workflow, headers=headers).status_code == 201


def _count_rows(stack: Stack) -> dict[str, int]:
    with stack.sessions() as s:
        return {
            model.__name__: s.execute(select(func.count()).select_from(model)).scalar_one()
            for model in (Workflow, Command, Job, Task)
        }


# ------------------------------------------------------------------ rate limits in Redis


def test_buckets_in_redis_are_shared_by_api_processes_and_expire() -> None:
    url = _redis()
    limit = Limit(capacity=4, rate=1 / 60, description="1/minute, burst 4")
    # Two API processes: two limiters, two connection pools, one Redis.
    stores = [RedisStore(url), RedisStore(url)]
    first, second = Limiter(limit, stores[0]), Limiter(limit, stores[1])
    key = unique("key:")
    try:
        for limiter in (first, second, first, second):
            limiter.check(key)

        with pytest.raises(Exception) as refused:
            second.check(key)
    finally:
        # Left to the garbage collector, their sockets warned (an error here) in whatever
        # test was running when it came.
        for store in stores:
            store.close()

    assert getattr(refused.value, "status", None) == 429
    assert 1 <= int(refused.value.headers["Retry-After"]) <= 60  # type: ignore[attr-defined]
    client = redis.Redis.from_url(url)
    try:
        ttl = client.pttl(KEY_PREFIX + key)
        assert 0 < ttl <= limit.ttl_ms
    finally:
        client.close()
