"""Technical workflows: the seed's default schedules, single fire per slot, admins' settings."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import select, update

from tests.conftest import Harness
from worker.errors import CarillonError
from worker.models import Command, Workflow
from worker.technical import admin, beat, fire, install, timing
from worker.technical.tables import technical_fire, technical_setting

UTC = dt.UTC
DAY = dt.datetime(2026, 11, 23, tzinfo=UTC)


def _hours(*values: str) -> list[str]:
    return list(values)


def _every(minutes: int, first: int = 0, last: int = 24 * 60) -> list[str]:
    return [f"{m // 60:02d}:{m % 60:02d}" for m in range(first, last, minutes)]


#: Seed 001's table, read by a human: the fires of one UTC day of each technical workflow.
#: Where the seed gives a frequency without a time (abTesting "tous les jours",
#: updateEventsStatus "periodic"), the chosen time is in beat_schedule.py and the README.
SEED_FIRES: dict[str, list[str] | None] = {
    "abTesting": _hours("00:00"),
    "billing": _hours("01:00"),
    "cleanup": _hours("04:00"),
    "forecasting": _hours("01:00"),
    "importSharedAudience": _every(60),
    "reportSendingNow": None,  # on demand: beat never fires it
    "kpiReconciliation": _hours("04:20"),
    # "toutes les 6H00 entre 1H00 et minuit"
    "mobileAppOptOutMgt": _hours("01:00", "07:00", "13:00", "19:00"),
    "mcSynch_local": _every(60),
    "reportingAggregates": _hours("02:00"),
    "kpiSharing": _every(15),
    "updateDeliveryExecInfo": _every(10),
    "updateDeliveryIndicators": _every(60),
    "updateEventsStatus": _every(10),
    "deliverabilityUpdate": _hours("02:00"),
}


def _fires_of_one_day(options: Any) -> list[str] | None:
    schedule = timing.parse(options)
    if schedule is None:
        return None
    found, cursor = [], DAY - dt.timedelta(microseconds=1)
    while True:
        upcoming = timing.schedules.next_fire(schedule, cursor)
        if upcoming is None or upcoming >= DAY + dt.timedelta(days=1):
            return found
        found.append(upcoming.strftime("%H:%M"))
        cursor = upcoming


def test_every_technical_workflow_of_the_seed_is_scheduled_with_its_default() -> None:
    assert set(timing.names()) == set(SEED_FIRES)
    for name, expected in SEED_FIRES.items():
        assert _fires_of_one_day(timing.default_options(name)) == expected, name


def test_beat_has_one_entry_per_technical_workflow_firing_the_fire_task() -> None:
    entries = beat.beat_entries(refresh=5)
    assert set(entries) == {f"technical:{name}" for name in SEED_FIRES}
    for name in SEED_FIRES:
        entry = entries[f"technical:{name}"]
        assert entry["task"] == beat.FIRE_TASK and entry["args"] == (name,)
        assert isinstance(entry["schedule"], beat.TechnicalSchedule)


def test_the_slot_is_the_schedules_last_fire_whatever_the_senders_clock() -> None:
    options = timing.default_options("kpiSharing")
    for late in (0, 1, 7, 14 * 60 + 59):
        now = dt.datetime(2026, 11, 23, 12, 30, tzinfo=UTC) + dt.timedelta(seconds=late)
        assert timing.slot(options, now) == dt.datetime(2026, 11, 23, 12, 30, tzinfo=UTC)
    cleanup = timing.default_options("cleanup")
    assert timing.slot(cleanup, dt.datetime(2026, 11, 23, 3, 59, tzinfo=UTC)) == dt.datetime(
        2026, 11, 22, 4, 0, tzinfo=UTC
    )
    assert timing.slot({}, dt.datetime(2026, 1, 1, 0, 0, 7, tzinfo=UTC), 5) == dt.datetime(
        2026, 1, 1, 0, 0, 5, tzinfo=UTC
    )


def test_due_only_when_a_fire_fell_since_the_last_run() -> None:
    options = timing.default_options("updateEventsStatus")
    now = dt.datetime(2026, 11, 23, 12, 41, tzinfo=UTC)
    assert timing.due(options, now - dt.timedelta(minutes=2), now) == (True, 540.0)
    assert timing.due(options, now - dt.timedelta(seconds=30), now) == (False, 540.0)
    assert timing.due(timing.default_options("reportSendingNow"), DAY, now) == (False, None)


def _installed(harness: Harness) -> None:
    with harness.sessions() as s, s.begin():
        install.ensure_installed(s)


def _fire_rows(harness: Harness, name: str) -> list[Any]:
    return harness.query(
        select(technical_fire.c.slot, technical_fire.c.outcome).where(technical_fire.c.name == name)
    )


def test_a_slot_fires_once_even_when_two_beats_send_it(harness: Harness) -> None:
    slot = dt.datetime(2026, 11, 23, 4, 0, tzinfo=UTC)
    first = fire.fire(harness.engine, "cleanup", slot)
    second = fire.fire(harness.engine, "cleanup", slot + dt.timedelta(seconds=0.4))
    assert (first.status, second.status) == ("started", "duplicate")
    assert harness.query(select(technical_fire.c.sends)) == [(2,)]
    starts = harness.query(select(Command.method, Command.state))
    assert starts == [("start", "applied")]


def test_a_run_still_going_is_not_started_again_on_top_of_itself(harness: Harness) -> None:
    first = fire.fire(harness.engine, "cleanup", dt.datetime(2026, 11, 22, 4, tzinfo=UTC))
    assert first.status == "started"  # the stub dispatcher has not run its tasks yet
    later = fire.fire(harness.engine, "cleanup", dt.datetime(2026, 11, 23, 4, tzinfo=UTC))
    assert (later.status, later.detail) == ("skipped", "the previous run is still going")
    harness.stub.drain()
    with harness.sessions() as s:
        state = s.scalars(select(Workflow.state).where(Workflow.name == "cleanup")).one()
    assert state == "finished"
    again = fire.fire(harness.engine, "cleanup", dt.datetime(2026, 11, 23, 5, tzinfo=UTC))
    assert again.status == "started"


def test_a_paused_technical_workflow_is_skipped_but_runs_when_asked(harness: Harness) -> None:
    _installed(harness)
    with harness.sessions() as s, s.begin():
        s.execute(
            update(technical_setting)
            .where(technical_setting.c.name == "cleanup")
            .values(enabled=False)
        )
    slot = dt.datetime(2026, 11, 23, 4, tzinfo=UTC)
    skipped = fire.fire(harness.engine, "cleanup", slot)
    assert (skipped.status, skipped.detail) == ("skipped", "paused by an admin")
    manual = fire.fire(harness.engine, "cleanup", slot + dt.timedelta(hours=1), manual=True)
    assert manual.status == "started"
    outcome = harness.query(
        select(technical_setting.c.lastOutcome).where(technical_setting.c.name == "cleanup")
    )
    assert outcome == [("started",)]


def test_every_technical_workflow_is_installed_as_a_real_workflow(harness: Harness) -> None:
    _installed(harness)
    with harness.sessions() as s:
        org_id = install.ensure_installed(s)
        names = set(s.scalars(select(Workflow.name).where(Workflow.org_id == org_id)))
        for name in SEED_FIRES:
            definition = harness.engine.definition(
                *s.execute(
                    select(Workflow.id, Workflow.latest_version).where(
                        Workflow.org_id == org_id, Workflow.name == name
                    )
                ).one(),
                s,
            )
            assert next(a.type for a in definition.activities.values()) == "start", name
    assert names == set(SEED_FIRES)


@pytest.mark.parametrize(
    ("name", "slot", "message"),
    [
        ("rmRf", dt.datetime(2026, 1, 1, tzinfo=UTC), "unknown technical workflow"),
        ("cleanup", dt.datetime(2026, 1, 1), "aware"),
        ("cleanup", dt.datetime(2999, 1, 1, tzinfo=UTC), "in the future"),
    ],
)
def test_hostile_fire_messages_are_refused_and_change_nothing(
    harness: Harness, name: str, slot: dt.datetime, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        fire.fire(harness.engine, name, slot)
    assert harness.query(select(technical_fire.c.name)) == []


def test_admins_schedule_edit_is_seen_by_beat_without_restart(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    _installed(harness)
    settings = beat._Settings(sessions=harness.sessions)
    monkeypatch.setattr(beat, "SETTINGS", settings)
    schedule = beat.TechnicalSchedule("cleanup", refresh=0)
    an_hour_ago = dt.datetime.now(UTC) - dt.timedelta(hours=1)
    every_ten = {"frequency": "intraday", "every": "10mn"}
    before = schedule.is_due(an_hour_ago)
    with harness.sessions() as s, s.begin():
        s.execute(
            update(technical_setting)
            .where(technical_setting.c.name == "cleanup")
            .values(schedule=every_ten)
        )
    after = schedule.is_due(an_hour_ago)
    assert after.is_due and after.next <= 600
    # Daily at 04:00 can only be due if 04:00 fell within the last hour.
    assert before.is_due == (
        timing.slot(timing.default_options("cleanup"), an_hour_ago)
        < timing.slot(timing.default_options("cleanup"), dt.datetime.now(UTC))
    )
    with harness.sessions() as s, s.begin():
        s.execute(
            update(technical_setting)
            .where(technical_setting.c.name == "cleanup")
            .values(enabled=False)
        )
    assert not schedule.is_due(an_hour_ago).is_due


def test_admins_list_reschedule_pause_and_run_now(harness: Harness) -> None:
    with harness.sessions() as s, s.begin():
        listing = admin.list_all(s, now=DAY)
        assert [item["id"] for item in listing] == list(SEED_FIRES)
        cleanup = admin.describe(s, "cleanup", now=DAY)
        assert cleanup["defaultSchedule"] and cleanup["installed"] and cleanup["enabled"]
        assert cleanup["nextFires"][0] == "2026-11-23T04:00:00+00:00"
        assert all(item["installed"] for item in listing)
        admin.set_schedule(s, "cleanup", {"frequency": "daily", "times": ["05:30"]})
        admin.set_enabled(s, "cleanup", False)
        admin.set_properties(s, "cleanup", {"eventDays": 10})
    with harness.sessions() as s, s.begin():
        cleanup = admin.describe(s, "cleanup", now=DAY)
        assert cleanup["schedule"] == {"frequency": "daily", "times": ["05:30"]}
        assert not cleanup["enabled"] and cleanup["nextFires"] == []
        assert cleanup["properties"] == {"eventDays": 10}
        admin.set_schedule(s, "cleanup", None)
        admin.set_enabled(s, "cleanup", True)
    result = admin.run_now(harness.engine, "cleanup")
    assert result.status == "started"
    harness.stub.drain()
    with harness.sessions() as s:
        cleanup = admin.describe(s, "cleanup", now=DAY)
    assert cleanup["defaultSchedule"] and cleanup["state"] == "finished"
    assert cleanup["lastOutcome"] == "started"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s: admin.set_schedule(s, "cleanup", {"frequency": "hourly"}), "frequency"),
        (
            lambda s: admin.set_schedule(s, "cleanup", {"frequency": "intraday", "every": "1mn"}),
            "10",
        ),
        (lambda s: admin.set_schedule(s, "cleanup", ["daily"]), "must be an object"),
        (lambda s: admin.set_schedule(s, "cleanup", {"frequency": "onDemand", "x": 1}), "onDemand"),
        (lambda s: admin.set_properties(s, "cleanup", {"x": "y" * 9000}), "exceed"),
        (lambda s: admin.set_properties(s, "cleanup", "x"), "must be an object"),
        (lambda s: admin.set_enabled(s, "../etc", False), "not found"),
        (lambda s: admin.describe(s, "cleanup" * 100), "not found"),
    ],
)
def test_hostile_admin_changes_are_refused_and_change_nothing(
    harness: Harness, call: Any, message: str
) -> None:
    with harness.sessions() as s, s.begin():
        before = admin.list_all(s, now=DAY)
    with pytest.raises(CarillonError, match=message), harness.sessions() as s, s.begin():
        call(s)
    with harness.sessions() as s, s.begin():
        assert admin.list_all(s, now=DAY) == before
