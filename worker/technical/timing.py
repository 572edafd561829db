"""When a technical workflow is due: its schedule (default or admin's), its slots, its next fire.

A slot is the scheduled instant a fire belongs to (cleanup's 04:00), computed from the schedule
alone, so every beat process that sends that fire names the same slot whatever its own clock
drift or restart history; the database keeps one fire per slot.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import beat_schedule
from worker import schedules

#: How far back the previous fire is looked for, widest last (a yearly schedule needs a year).
_LOOKBACKS = (dt.timedelta(days=1), dt.timedelta(days=8), dt.timedelta(days=32))
_YEAR = dt.timedelta(days=367)
#: Fires read per preview call while walking forward to `now`.
_PAGE = 200


def names() -> tuple[str, ...]:
    return tuple(beat_schedule.TECHNICAL_WORKFLOWS)


def default_options(name: str) -> Mapping[str, Any]:
    try:
        return beat_schedule.TECHNICAL_WORKFLOWS[name]
    except KeyError:
        raise KeyError(f"unknown technical workflow '{name}'") from None


def on_demand(options: Mapping[str, Any]) -> bool:
    return options.get("frequency") == "onDemand"


def parse(options: Mapping[str, Any]) -> schedules.Schedule | None:
    """The Schedule of these options; None for an on-demand workflow (never fired by beat)."""
    if on_demand(options):
        if set(options) != {"frequency"}:
            raise schedules.ScheduleError("an onDemand schedule takes no other option")
        return None
    return schedules.parse_schedule(options)


def previous_fire(schedule: schedules.Schedule, at: dt.datetime) -> dt.datetime | None:
    """The last fire at or before `at`, or None when the schedule never fired by then."""
    moment = at + dt.timedelta(microseconds=1)
    for lookback in (*_LOOKBACKS, _YEAR):
        cursor, last = moment - lookback, None
        while True:
            page = schedules.preview(schedule, cursor, _PAGE)
            earlier = [fire for fire in page if fire < moment]
            if earlier:
                last = earlier[-1]
            if len(earlier) < len(page) or len(page) < _PAGE:
                break
            cursor = page[-1]
        if last is not None:
            return last
    return None


def slot(options: Mapping[str, Any], now: dt.datetime, every_seconds: int = 0) -> dt.datetime:
    """The slot a fire sent at `now` belongs to (UTC).

    With `every_seconds` (CARILLON_TECHNICAL_EVERY, for tests and demos) every workflow fires
    every that many seconds and the slot is `now` floored to that period.
    """
    now = now.astimezone(dt.UTC)
    if every_seconds > 0:
        epoch = int(now.timestamp()) // every_seconds * every_seconds
        return dt.datetime.fromtimestamp(epoch, dt.UTC)
    schedule = parse(options)
    found = previous_fire(schedule, now) if schedule is not None else None
    # Sent by hand or by a schedule that never fired: the slot is the moment itself.
    return found if found is not None else now.replace(microsecond=0)


def due(
    options: Mapping[str, Any],
    last_run_at: dt.datetime,
    now: dt.datetime,
    every_seconds: int = 0,
) -> tuple[bool, float | None]:
    """Whether a fire fell in (last_run_at, now], and the seconds to the next one (None: never)."""
    if on_demand(options):
        return False, None
    if every_seconds > 0:
        last_slot = slot(options, last_run_at, every_seconds)
        current = slot(options, now, every_seconds)
        following = current + dt.timedelta(seconds=every_seconds)
        return current > last_slot, (following - now).total_seconds()
    schedule = parse(options)
    if schedule is None:
        return False, None
    first = schedules.next_fire(schedule, last_run_at)
    if first is None:
        return False, None
    if first > now:
        return False, (first - now).total_seconds()
    upcoming = schedules.next_fire(schedule, now)
    return True, None if upcoming is None else (upcoming - now).total_seconds()
