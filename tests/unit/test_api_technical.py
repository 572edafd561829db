"""Admins steer the technical workflows through the API, with the system organization's keys."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from tests import api_conftest
from tests.api_conftest import Rest, error_of
from worker import catalog
from worker.technical.tables import technical_setting

make_rest_fixture = api_conftest.make_rest_fixture
rest_fixture = api_conftest.rest_fixture

BASE = "/system/campaign/workflow/technical"


def _system(rest: Rest) -> dict[str, str]:
    with rest.services.sessions() as s, s.begin():
        keys = catalog.create_credentials(s, "system")
    return {"Authorization": f"Bearer {keys['token']}", "X-Api-Key": keys["apiKey"]}


def _patch(rest: Rest, path: str, body: Any, headers: dict[str, str]) -> Any:
    return rest.client.patch(path, json=body, headers=headers)


def test_admins_list_change_and_run_technical_workflows(rest: Rest) -> None:
    admin = _system(rest)
    listing = rest.get(BASE, headers=admin)
    assert listing.status_code == 200, listing.get_data(as_text=True)
    assert listing.json["count"]["value"] == 15
    names = [item["id"] for item in listing.json["content"]]
    assert "cleanup" in names and "kpiSharing" in names
    changed = _patch(
        rest,
        f"{BASE}/cleanup",
        {"enabled": False, "schedule": {"frequency": "daily", "times": ["05:30"]}},
        admin,
    )
    assert changed.status_code == 200, changed.get_data(as_text=True)
    assert changed.json["enabled"] is False
    assert changed.json["schedule"] == {"frequency": "daily", "times": ["05:30"]}
    run = rest.post(f"{BASE}/cleanup/run", headers=admin)
    assert run.status_code == 202 and run.json["status"] == "started"
    rest.stub.drain()
    assert rest.get(f"{BASE}/cleanup", headers=admin).json["state"] == "finished"
    restored = _patch(rest, f"{BASE}/cleanup", {"schedule": None, "enabled": True}, admin)
    assert restored.json["defaultSchedule"] is True and restored.json["enabled"] is True


def test_other_organizations_see_nothing(rest: Rest) -> None:
    _system(rest)
    error_of(rest.get(BASE), 404)
    error_of(rest.post(f"{BASE}/cleanup/run"), 404)
    error_of(
        rest.client.patch(f"{BASE}/cleanup", json={"enabled": False}, headers=rest.headers), 404
    )
    error_of(rest.get("/acme/campaign/workflow/technical"), 404)


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({}, 400),
        ({"enabled": "no"}, 400),
        ({"enabled": False, "schedule": {"frequency": "every second"}}, 422),
        ({"enabled": False, "schedule": {"frequency": "intraday", "every": "1mn"}}, 422),
        ({"enabled": False, "properties": {"x": "y" * 9000}}, 422),
        ({"enabled": False, "rm": True}, 400),
        ({"schedule": [1, 2]}, 422),
    ],
)
def test_hostile_changes_are_refused_and_change_nothing(rest: Rest, body: Any, status: int) -> None:
    admin = _system(rest)
    before = rest.get(f"{BASE}/cleanup", headers=admin).json
    error_of(_patch(rest, f"{BASE}/cleanup", body, admin), status)
    assert rest.get(f"{BASE}/cleanup", headers=admin).json == before
    with rest.services.sessions() as s:
        enabled = s.scalars(
            select(technical_setting.c.enabled).where(technical_setting.c.name == "cleanup")
        ).one()
    assert enabled is True


@pytest.mark.parametrize("name", ["nope", "..%2F..%2Fetc", "cleanup" * 40, "%00"])
def test_unknown_technical_workflows_are_404(rest: Rest, name: str) -> None:
    admin = _system(rest)
    error_of(rest.get(f"{BASE}/{name}", headers=admin), 404)
    error_of(rest.post(f"{BASE}/{name}/run", headers=admin), 404)
