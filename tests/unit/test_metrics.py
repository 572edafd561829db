"""/metrics: the Prometheus text parses, its figures are the database's, every process agrees."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, insert, select

from api import create_app
from tests import api_conftest
from tests.api_conftest import SIGNAL_WORKFLOW, Rest, error_of
from worker.config import Settings
from worker.db import utcnow
from worker.messaging import delivery, delivery_log
from worker.metrics import DURATION_BUCKETS
from worker.models import Organization, Task, Trigger

make_rest_fixture = api_conftest.make_rest_fixture

ADMIN_TOKEN = "metrics-admin-token-0123456789abcdef"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(client: Any, headers: dict[str, str] | None = None) -> Samples:
    response = client.get("/metrics", headers=ADMIN if headers is None else headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "text/plain"
    samples: Samples = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def named(samples: Samples, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {labels: value for (found, labels), value in samples.items() if found == name}


def seed_deliveries(rest: Rest) -> None:
    """Two deliveries' messages, as the channel activities leave them."""
    with rest.services.sessions() as s, s.begin():
        org_id = s.execute(select(Organization.id).where(Organization.name == "acme")).scalar_one()
        for channel, statuses in (("email", ["sent", "sent", "failed"]), ("sms", ["sent"])):
            delivery_id = s.execute(
                insert(delivery)
                .values(org_id=org_id, channel=channel, name=f"{channel}1", state="sent")
                .returning(delivery.c.id)
            ).scalar_one()
            for n, status in enumerate(statuses):
                s.execute(
                    insert(delivery_log).values(
                        deliveryId=delivery_id,
                        org_id=org_id,
                        profileId=n,
                        status=status,
                        messageId=f"{channel}-{n}",
                    )
                )


@pytest.fixture(name="rest")
def rest_fixture(make_rest: Any) -> Rest:
    """Triggers: two accepted, then one refused with 429 (interval), one 400, one 404."""
    rest: Rest = make_rest(admin_token=ADMIN_TOKEN, signal_min_interval=3600)
    rest.start(SIGNAL_WORKFLOW)
    path = rest.trigger_path("sig")
    assert rest.post(path, {"source": "t", "parameters": {"n": 1}}).status_code == 202
    rest.stub.drain()
    assert rest.post(path, {"source": "t", "parameters": {"n": 2}}).status_code == 429
    assert rest.post(path, {"source": "t", "parameters": {"n": "x"}}).status_code == 400
    assert rest.post(path.replace("@signal1", "@nosuch"), {"source": "t"}).status_code == 404
    seed_deliveries(rest)
    return rest


def test_the_scrape_parses_and_matches_the_database(rest: Rest) -> None:
    samples = scrape(rest.client)

    with rest.services.sessions() as s:
        tasks = {
            (("state", state), ("type", kind)): n
            for state, kind, n in s.execute(
                select(Task.state, Task.activity_type, func.count()).group_by(
                    Task.state, Task.activity_type
                )
            )
        }
        triggers = {
            state: n
            for state, n in s.execute(select(Trigger.state, func.count()).group_by(Trigger.state))
        }
        finished = list(
            s.execute(
                select(Task.activity_type, Task.started_at, Task.finished_at).where(
                    Task.finished_at.is_not(None), Task.started_at.is_not(None)
                )
            )
        )
    assert named(samples, "carillon_tasks") == tasks
    assert named(samples, "carillon_triggers_total") == {
        (("state", state),): n for state, n in triggers.items()
    }
    assert triggers == {"accepted": 1}
    assert named(samples, "carillon_triggers_refused_total") == {
        (("status", "400"),): 1,
        (("status", "404"),): 1,
        (("status", "429"),): 1,
    }
    assert named(samples, "carillon_deliveries_messages_total") == {
        (("channel", "email"), ("status", "failed")): 1,
        (("channel", "email"), ("status", "sent")): 2,
        (("channel", "sms"), ("status", "sent")): 1,
    }
    workflows = named(samples, "carillon_workflows")
    assert workflows[(("org", "acme"), ("state", "started"))] == 1
    # durations: every finished task of the last hour, by type, in cumulative buckets
    by_type: dict[str, list[float]] = {}
    for kind, started, ended in finished:
        by_type.setdefault(kind, []).append((ended - started).total_seconds())
    counts = named(samples, "carillon_activity_duration_seconds_gcount")
    assert counts == {(("type", kind),): len(found) for kind, found in by_type.items()}
    for kind, found in by_type.items():
        top = samples[
            ("carillon_activity_duration_seconds_bucket", (("le", "+Inf"), ("type", kind)))
        ]
        assert top == len(found)
        first = samples[
            (
                "carillon_activity_duration_seconds_bucket",
                (("le", str(DURATION_BUCKETS[0])), ("type", kind)),
            )
        ]
        assert first == sum(1 for d in found if d <= DURATION_BUCKETS[0])


def test_every_process_reports_the_same_figures(rest: Rest, tmp_path: Path) -> None:
    """A second app on the same database (another gunicorn process, another host) reads the
    refusals the first one counted: nothing lives in one process's memory."""
    other = create_app(rest.services.settings, dispatcher=rest.stub)
    try:
        path = rest.trigger_path("sig")
        refused = other.test_client().post(
            path, json={"source": "t", "parameters": {"n": 3}}, headers=rest.headers
        )
        assert refused.status_code == 429
        first, second = scrape(rest.client), scrape(other.test_client())
        assert first == second
        assert first[("carillon_triggers_refused_total", (("status", "429"),))] == 2
    finally:
        other.extensions["carillon"].db.dispose()


def test_queue_depths_of_the_filesystem_broker(make_rest: Any) -> None:
    rest: Rest = make_rest(admin_token=ADMIN_TOKEN, broker_url="filesystem://")
    folder = rest.services.settings.broker_folder / "queue"
    folder.mkdir(parents=True, exist_ok=True)
    for n in range(2):
        (folder / f"{n}_x.carillon.human.msg").write_text("{}")
    depths = named(scrape(rest.client), "carillon_queue_depth")
    assert depths[(("queue", "carillon.human"),)] == 2
    assert depths[(("queue", "carillon.flow"),)] == 0


def test_unknown_depths_give_no_sample(rest: Rest) -> None:
    # memory:// is neither Redis nor the filesystem broker: depths unknown, no sample
    assert named(scrape(rest.client), "carillon_queue_depth") == {}


def test_access_needs_the_admin_token_when_one_is_set(rest: Rest) -> None:
    error_of(rest.client.get("/metrics"), 401, "unauthorized")
    error_of(rest.client.get("/metrics", headers={"Authorization": "Bearer wrong"}), 401)
    error_of(rest.client.get("/metrics", headers=rest.headers), 401)  # an org's credentials
    assert rest.client.get("/metrics", headers=ADMIN).status_code == 200


def test_without_an_admin_token_only_loopback_callers_scrape(make_rest: Any) -> None:
    rest: Rest = make_rest()
    local = rest.client.get("/metrics", environ_base={"REMOTE_ADDR": "127.0.0.1"})
    assert local.status_code == 200
    assert rest.client.get("/metrics", environ_base={"REMOTE_ADDR": "::1"}).status_code == 200
    error_of(rest.client.get("/metrics", environ_base={"REMOTE_ADDR": "10.1.2.3"}), 403)


def test_an_admin_token_shorter_than_16_characters_is_refused() -> None:
    from worker.errors import ConfigError

    with pytest.raises(ConfigError, match="CARILLON_ADMIN_TOKEN"):
        Settings.from_env({"CARILLON_ADMIN_TOKEN": "short"})
    assert Settings.from_env({"CARILLON_ADMIN_TOKEN": " " + "k" * 16}).admin_token == "k" * 16


def test_durations_cover_the_last_hour_only(rest: Rest) -> None:
    with rest.services.sessions() as s, s.begin():
        old = utcnow() - dt.timedelta(hours=2)
        for task in s.scalars(select(Task).where(Task.finished_at.is_not(None))):
            task.started_at, task.finished_at = old, old
    assert named(scrape(rest.client), "carillon_activity_duration_seconds_gcount") == {}
