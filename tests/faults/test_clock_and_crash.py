"""Clock and crash faults of RELIABILITY.md 5.3 (soak tier): F9 beat killed at a fire
boundary and beat under daylight-saving changes, F10 clock skew between the workers, beat and
the API, F6 with the AOF off, F11(a) a visibility timeout shorter than an activity.

Fake clocks come from libfaketime (harness.faketime_env) and reach only the processes these
scenarios start; PostgreSQL and Redis keep the real time, which makes the database's clock the
one every process can agree on.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import random
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import pytest
from sqlalchemy import update

from tests.faults.conftest import require_restartable
from tests.faults.harness import ApiClient, FaultStack, faketime_env, offset_to
from tests.faults.oracle import technical_fires
from tests.faults.scenario import emails_to, finish, launch, mid_delivery, slow_smtp
from tests.faults.servers import free_port
from tests.faults.test_quick_tier import org_for
from tests.faults.workload import unique
from tests.integration.conftest import api_healthy, wait_for
from worker.stack import api_command, beat_command, worker_command
from worker.technical import install
from worker.technical.tables import technical_setting

pytestmark = [pytest.mark.faults, pytest.mark.soak, pytest.mark.timeout(300)]

PARIS = "Europe/Paris"


# ---------------------------------------------------------------------- helpers


@contextmanager
def technical_only(live: FaultStack, schedules: dict[str, Any]) -> Iterator[None]:
    """Only these technical workflows enabled, with these admin schedules (None: the
    default of beat_schedule.py); every workflow enabled on its default again on exit."""
    with live.sessions() as s, s.begin():
        install.ensure_installed(s)
        s.execute(update(technical_setting).values(enabled=False))
        for name, schedule in schedules.items():
            s.execute(
                update(technical_setting)
                .where(technical_setting.c.name == name)
                .values(enabled=True, schedule=schedule)
            )
    try:
        yield
    finally:
        with live.sessions() as s, s.begin():
            s.execute(update(technical_setting).values(enabled=True, schedule=None))


def fires_of(live: FaultStack, names: tuple[str, ...]) -> list[Any]:
    return [f for f in technical_fires(live) if f.name in names]


def cleanup_slots(live: FaultStack) -> set[dt.datetime]:
    return {f.slot for f in fires_of(live, ("cleanup",))}


def new_slots(live: FaultStack, name: str, seen: set[dt.datetime]) -> set[dt.datetime]:
    return {f.slot for f in fires_of(live, (name,))} - seen


def wait_until(instant: float, limit: float = 30) -> None:
    """Fault timing: block until the wall clock reads `instant` (at most `limit` seconds)."""
    deadline = time.monotonic() + min(max(instant - time.time(), 0), limit)
    while time.monotonic() < deadline:
        time.sleep(min(0.05, max(deadline - time.monotonic(), 0)))


def billing_emails(live: FaultStack, day: str | None = None) -> int:
    prefix = f"billing-{day}" if day else "billing-"
    return sum(1 for m in live.servers.smtp.messages if m.message_id.startswith(prefix))


def restart_worker(live: FaultStack, **env: str) -> None:
    """w1 again, as in the stack (two children), with `env` on top (a fake clock)."""
    if live.alive("w1"):
        live.kill("w1", 15)
    live.processes.pop("w1", None)
    live.start_worker("w1", **env)


def restart_beat(live: FaultStack, **env: str) -> None:
    """The stack's beat (the tick) again, with `env` on top."""
    if live.alive("beat"):
        live.kill("beat", 15)
    live.processes.pop("beat", None)
    live.spawn("beat", beat_command(live.settings), **env)


# ---------------------------------------------------------------------- F9


def test_f9a_beat_killed_around_a_fire_boundary_fires_each_slot_at_most_once(
    live: FaultStack, rng: random.Random, fault_seed: int
) -> None:
    """kill -9 beat 1 s before a slot's instant, then 1 s after the next one, restarting it
    on its (possibly unsynced) schedule file each time. Catch-up policy (worker/technical/
    timing.py): a restarted beat sends at most one fire, named after the latest slot; slots
    it was down for are skipped, and a slot it sends again is a duplicate (sends + 1)."""
    # Longer than beat takes to restart (3-5 s here): the kill before a slot's instant is
    # followed by a catch-up of that slot, the kill after it by a resend of the same slot.
    every = 10
    env = {
        "CARILLON_TECHNICAL_WORKFLOWS": "1",
        "CARILLON_TECHNICAL_EVERY": str(every),
        "CARILLON_TECHNICAL_REFRESH": "1",
    }
    names = ("billing", "cleanup")
    known = {(f.name, f.slot) for f in technical_fires(live)}
    emails_before = billing_emails(live)
    fault_at = time.monotonic()
    with technical_only(live, dict.fromkeys(names)):
        live.second_beat("beatK", **env)
        try:
            for offset in (-1.0, 1.0):
                wait_for(
                    partial(new_slots, live, "cleanup", cleanup_slots(live)),
                    60,
                    "a cleanup fire from the running beat",
                )
                # The next slot's instant at least 1.5 s away (slots are multiples of `every`)
                boundary = math.ceil((time.time() + 1.5) / every) * every
                # When beat is SIGKILLed just before (then just after) a slot's instant (F9)
                wait_until(boundary + offset)
                live.kill("beatK")
                live.second_beat("beatK", **env)
            restarted = cleanup_slots(live)
            wait_for(
                lambda: len(new_slots(live, "cleanup", restarted)) >= 2,
                60,
                "two more cleanup slots after the last restart",
            )
        finally:
            if live.alive("beatK"):
                live.kill("beatK")
    finish(live, "F9", fault_seed, list(names), fault_at, technical=True)
    fires = [f for f in fires_of(live, names) if (f.name, f.slot) not in known]
    # For the report (-rP): which slots fired, were skipped, or were sent again after a restart
    for f in fires:
        print(f"F9a {f.name} {f.slot:%H:%M:%S} sends={f.sends} {f.outcome}")
    # Then each (name, slot) is one row (the key) and, started or skipped, one outcome
    assert len({(f.name, f.slot) for f in fires}) == len(fires)
    assert all(f.outcome for f in fires), fires
    # And slots never went backwards or fired off the grid: no backlog replayed late
    for name in names:
        slots = sorted(f.slot for f in fires if f.name == name)
        assert all(int(s.replace(tzinfo=dt.UTC).timestamp()) % every == 0 for s in slots)
    # And the side effect happened once per started run: one billing report each
    started = sum(1 for f in fires if f.name == "billing" and f.outcome == "started")
    assert started >= 1
    assert billing_emails(live) - emails_before == started


#: A Paris schedule whose 02:00 falls in the spring-forward gap and whose 03:00 CEST is the
#: same instant: one fire (01:00 UTC), never two. And a fire every 10 minutes in Paris time.
PARIS_TWICE = {"frequency": "daily", "times": ["02:00", "03:00"], "timezone": PARIS}
PARIS_EVERY = {"frequency": "intraday", "every": "10mn", "timezone": PARIS}
#: (name, schedule): two Paris schedules, and an hourly one in UTC as the control.
DST_SCHEDULES = {
    "billing": PARIS_TWICE,
    "kpiSharing": PARIS_EVERY,
    "updateDeliveryIndicators": None,  # default: every hour, UTC
}


def _run_beat_and_worker_at(
    live: FaultStack, start: dt.datetime, span: float, label: str
) -> tuple[dt.datetime, dt.datetime]:
    """Beat (technical workflows) and w1 under TZ=Europe/Paris, their clocks at `start`
    (UTC), for `span` real seconds; returns the fake window they covered."""
    restart_worker(live, **faketime_env(offset_to(start), PARIS))
    # Beat's clock set as it starts (the worker's warm shutdown took a while): its first
    # schedule check sees `start`, seconds before the change.
    clock = faketime_env(offset_to(start), PARIS)
    env = {**clock, "CARILLON_TECHNICAL_WORKFLOWS": "1", "CARILLON_TECHNICAL_REFRESH": "1"}
    began = time.time()
    live.second_beat(label, **env)
    try:
        wait_until(began + span, limit=span + 5)
    finally:
        live.kill(label)
    lag = time.time() - began
    return start, start + dt.timedelta(seconds=lag + 5)


def last_sunday_one_am_utc(year: int, month: int) -> dt.datetime:
    """01:00 UTC on the last Sunday of `month` (March or October, 31 days): the instant the
    European Union changes its clocks."""
    last = dt.datetime(year, month, 31, 1, 0)
    return last - dt.timedelta(days=(last.weekday() - 6) % 7)


def test_f9b_beat_under_paris_dst_fires_each_slot_once(
    live: FaultStack, rng: random.Random, fault_seed: int
) -> None:
    names = tuple(DST_SCHEDULES)
    # Each seed takes its own year: the stack (and its fires, keyed by (name, slot)) is
    # shared by the module, so a second seed on the same dates would be absorbed as a repeat
    year = 2026 + fault_seed % 20
    one_am = {
        "spring": last_sunday_one_am_utc(year, 3),
        "autumn": last_sunday_one_am_utc(year, 10),
    }
    billing_day = (one_am["spring"] - dt.timedelta(days=1)).date().isoformat()
    known = {(f.name, f.slot) for f in technical_fires(live)}
    emails_before = billing_emails(live, billing_day)
    ten_s_before = {
        phase: (instant - dt.timedelta(seconds=10)).replace(tzinfo=dt.UTC)
        for phase, instant in one_am.items()
    }
    fault_at = time.monotonic()
    with technical_only(live, DST_SCHEDULES):
        try:
            # When beat and the worker run under TZ=Europe/Paris with their clocks at
            # 01:59:50 CET on the last Sunday of March, 10 s before the clocks jump to
            # 03:00 CEST (F9)
            spring = _run_beat_and_worker_at(live, ten_s_before["spring"], 45, "beatSpring")
            # And on the last Sunday of October at 02:59:50 CEST, 10 s before 03:00 CEST
            # becomes 02:00 CET
            autumn = _run_beat_and_worker_at(live, ten_s_before["autumn"], 45, "beatAutumn")
            finish(live, "F9", fault_seed, list(names), fault_at, technical=True)
        finally:
            restart_worker(live)
    fires = [f for f in fires_of(live, names) if (f.name, f.slot) not in known]

    def slots(window: tuple[dt.datetime, dt.datetime]) -> dict[str, list[dt.datetime]]:
        low, high = (w.replace(tzinfo=None) for w in window)
        return {
            n: sorted(f.slot for f in fires if f.name == n and low <= f.slot <= high) for n in names
        }

    # Then across the spring gap each schedule fired once, at 01:00 UTC: Paris 02:00 (which
    # does not exist) and 03:00 CEST are one fire; the every-10-minutes one did not skip it
    assert slots(spring) == {n: [one_am["spring"]] for n in names}, fires
    # And across the autumn fold the repeated 02:00-02:59 fired nothing again in Paris time,
    # while the UTC control fired at 01:00 UTC
    assert slots(autumn) == {
        "billing": [],
        "kpiSharing": [],
        "updateDeliveryIndicators": [one_am["autumn"]],
    }, fires
    # And the billing report of the spring fire was sent once (its day is the fake clock's)
    assert billing_emails(live, billing_day) - emails_before == 1


# ---------------------------------------------------------------------- F10


def test_f10a_a_worker_clock_ahead_steals_no_running_task(
    live: FaultStack, rng: random.Random, fault_seed: int
) -> None:
    client = live.client(org_for(rng))
    # w1 with a single child: every copy the skewed worker restores goes to w2
    if live.alive("w1"):
        live.kill("w1", 15)
    live.spawn("w1", worker_command(1, name="w1"))
    try:
        with slow_smtp(live, 0.4):
            target = launch(live, client, "linear", rng)
            mid_delivery(live, target, 3)
            # When worker B starts 60 s ahead (> the visibility timeout): its kombu
            # restore_visible sees w1's in-flight message as 60 s old and requeues it (F10)
            fault_at = time.monotonic()
            live.start_worker("w2", **faketime_env("+60s"))
            finish(live, "F10", fault_seed, [target.name], fault_at)
    finally:
        live.kill("w2", 15)
        restart_worker(live)
    # Then the copy was refused: w1's attempt, alive and beating, ran to its end
    attempts = [r.attempt for r in live.tasks(target.name) if r.activity == "email1"]
    assert emails_to(live, target.segment) == 30
    # (leases are judged by the database's clock: worker/dbclock.py)
    assert attempts == [1], f"email1 taken over by the skewed worker: attempts {attempts}"


def _wait_workflow(name: str) -> dict[str, Any]:
    return {
        "id": name,
        "activities": [
            {"name": "start1", "type": "start", "transitions": {"done": "wait1"}},
            {"name": "wait1", "type": "wait", "duration": "2s", "transitions": {"done": "end1"}},
            {"name": "end1", "type": "end"},
        ],
    }


def test_f10b_a_beat_clock_behind_still_drives_the_tick(
    live: FaultStack, rng: random.Random, fault_seed: int
) -> None:
    client = live.client(org_for(rng))
    name = unique(rng, "wait")
    live.save(_wait_workflow(name), org=client.org)
    # When beat runs 30 s behind the workers (F10)
    fault_at = time.monotonic()
    restart_beat(live, **faketime_env("-30s"))
    try:
        # And a workflow waits 2 s on a timer only the tick can fire
        assert client.command(name, "start").status == 202
        finish(live, "F10", fault_seed, [name], fault_at, timeout=60)
    finally:
        restart_beat(live)
    assert [r.state for r in live.tasks(name) if r.activity == "end1"] == ["done"]


def _api_with_clock(live: FaultStack, name: str, clock: str) -> str:
    port = free_port()
    live.spawn(name, api_command("127.0.0.1", port, 1), **faketime_env(clock))
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: api_healthy(base), 60, f"{name} to answer /healthz", interval=0.2)
    return base


def test_f10c_the_signal_interval_rule_holds_on_an_api_clock_ahead(
    live: FaultStack, rng: random.Random, fault_seed: int
) -> None:
    client = live.client(org_for(rng))
    target = launch(live, client, "signal_wait", rng, trigger=False)
    # Given a second API host whose clock is 700 s ahead (more than the 600 s rule) (F10)
    base = _api_with_clock(live, "apiAhead", "+700s")
    ahead = ApiClient(base, client.org, client.api_key, client.token, live.history)
    fault_at = time.monotonic()
    try:
        first = client.trigger(target.name, "signal1", {"segmentCode": target.segment})
        assert first.status == 202, first
        # When the same signal comes again at once through the skewed host
        again = ahead.trigger(target.name, "signal1", {"segmentCode": target.segment})
        finish(live, "F10", fault_seed, [target.name], fault_at)
    finally:
        live.kill("apiAhead", 15)
    # Then refused: the rule reads the database's clock, not the API host's
    assert again.status == 429, f"second trigger within 600 s accepted: {again.body}"


# ---------------------------------------------------------------------- F6 without AOF


def test_f6b_a_redis_crash_without_aof_loses_messages_the_db_republishes(
    live: FaultStack, rng: random.Random, fault_seed: int
) -> None:
    require_restartable(live)
    redis_server = live.servers.redis
    client = live.client(org_for(rng))
    admin = redis_server.client()
    try:
        admin.config_set("appendonly", "no")
        redis_server.appendonly = False
        with slow_smtp(live, 0.05):
            target = launch(live, client, "fork_join", rng)
            waiting = launch(live, client, "signal_wait", rng)
            row = live.wait_running(target.name, "email1")
            wait_for(lambda: _unacked_of(live, row.id), 30, "email1's message in unacked")
            # When Redis is SIGKILLed with no AOF and no RDB: it comes back empty, every
            # queued and unacked message gone (F6)
            fault_at = time.monotonic()
            live.restart_redis(crash=True, downtime=2.0)
            # Nothing will redeliver email1's message: it went with the crash
            assert not _unacked_of(live, row.id)
            finish(live, "F6", fault_seed, [target.name, waiting.name], fault_at)
    finally:
        redis_server.appendonly = True
        admin.close()
        again = redis_server.client()
        try:
            again.config_set("appendonly", "yes")  # rewrites the AOF from what is there now
        finally:
            again.close()
    # Then both workflows ran to their end from the database's state
    for name in (target.name, waiting.name):
        assert [r.state for r in live.tasks(name) if r.activity == "end1"] == ["done"], name
    assert emails_to(live, target.segment) == 30


def _unacked_of(live: FaultStack, task_id: str) -> list[Any]:
    """Delivery tags in Redis `unacked` whose message is the task `task_id`'s."""
    client = live.servers.redis.client()
    try:
        return [
            tag
            for tag, raw in client.hgetall("unacked").items()
            if json.loads(raw)[0].get("headers", {}).get("id") == task_id
        ]
    finally:
        client.close()


# ---------------------------------------------------------------------- F11 (a)


def test_f11a_redelivery_of_a_long_activity_past_the_visibility_timeout_is_refused(
    live: FaultStack, rng: random.Random, fault_seed: int
) -> None:
    client = live.client(org_for(rng))
    # Given w1 with a 10 s visibility timeout, logging every message it receives
    if live.alive("w1"):
        live.kill("w1", 15)
    command = worker_command(2, name="w1")
    command[command.index("--loglevel") + 1] = "INFO"
    log_from = live.log_size("w1")
    live.spawn("w1", command, CARILLON_VISIBILITY_TIMEOUT="10")
    try:
        with slow_smtp(live, 0.7):
            # And an email activity lasting about 21 s (30 messages, 0.7 s each)
            target = launch(live, client, "linear", rng)
            row = live.wait_running(target.name, "email1")
            fault_at = time.monotonic()
            # When Redis redelivers its message past 10 s while it still runs (F11 a)
            received = re.compile(rf"carillon\.run_activity\[{row.id}\] received")
            wait_for(
                lambda: len(received.findall(_log_since(live, "w1", log_from))) >= 2,
                40,
                "the redelivered copy of email1's message",
            )
            assert live.running(target.name, "email1") is not None, "redelivered too late"
            finish(live, "F11", fault_seed, [target.name], fault_at)
    finally:
        restart_worker(live)
    # Then the copy was refused by the claim: one attempt, 30 messages, each once
    assert [r.attempt for r in live.tasks(target.name) if r.activity == "email1"] == [1]
    assert emails_to(live, target.segment) == 30


def _log_since(live: FaultStack, name: str, offset: int) -> str:
    with open(live.home / f"{name}.log", "rb") as log:
        log.seek(offset)
        return log.read().decode("utf-8", "replace")
