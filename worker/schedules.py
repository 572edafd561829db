"""The `scheduler` activity's frequencies: options parsed strictly, next fires computed."""

from __future__ import annotations

import datetime as dt
import heapq
import itertools
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from dateutil import rrule

from worker.durations import (
    LAST_YEAR,
    check_keys,
    describe_value,
    option_error,
    parse_duration,
    parse_instant,
    parse_timezone,
)
from worker.errors import ScheduleError

#: No rule may fire twice within this interval (the platform's limit).
MIN_INTERVAL = dt.timedelta(minutes=10)
FREQUENCIES = ("once", "intraday", "daily", "weekly", "monthly", "yearly")
#: Weekday names as written in `days` and `weekdayOfMonth`, Monday first (0).
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
#: Most entries a `times` list may hold.
MAX_TIMES = 100
MAX_EVERY_N_WEEKS = 52
MAX_AFTER_COUNT = 1_000_000
#: Options every frequency takes, then the ones each frequency adds.
COMMON_OPTIONS = frozenset({"frequency", "timezone", "start", "expiry"})
FREQUENCY_OPTIONS: Mapping[str, frozenset[str]] = {
    "once": frozenset({"at"}),
    "intraday": frozenset({"times", "every", "between", "days"}),
    "daily": frozenset({"times", "days"}),
    "weekly": frozenset({"days", "times", "everyNWeeks"}),
    "monthly": frozenset({"times", "monthDays", "weekdayOfMonth", "months"}),
    "yearly": frozenset({"month", "monthDay", "weekdayOfMonth", "times"}),
}
ALLOWED_OPTIONS = COMMON_OPTIONS.union(*FREQUENCY_OPTIONS.values())

_DAY_MINUTES = 24 * 60
_MIN_GAP = int(MIN_INTERVAL.total_seconds()) // 60
_MONTH_LENGTHS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_CLOCK = re.compile(r"([0-9]{1,2}):([0-9]{2})")
# Local days after day D name no instant before D+1 00:00 (read as UTC) minus this:
# Python keeps every UTC offset strictly within a day.
_OFFSET_BOUND = dt.timedelta(days=1)


@dataclass(frozen=True)
class Schedule:
    """A parsed frequency: times are wall-clock in `timezone`, datetimes are aware UTC."""

    frequency: str
    timezone: str = "UTC"
    #: Times of day of each fire day, sorted and distinct (empty for `once`).
    times: tuple[dt.time, ...] = ()
    #: The single fire of `once`.
    at: dt.datetime | None = None
    #: Weekdays a fire day may fall on, 0 = Monday; None for any.
    weekdays: tuple[int, ...] | None = None
    every_n_weeks: int = 1
    #: Days of the month, 1..31, or -1 for the last day (-2 the one before...).
    month_days: tuple[int, ...] = ()
    #: (weekday, nth): nth weekday of the month, nth -1 for the last one.
    weekday_of_month: tuple[int, int] | None = None
    #: Months a fire day may fall in, 1..12; None for any.
    months: tuple[int, ...] | None = None
    start: dt.datetime | None = None
    until: dt.datetime | None = None
    after_count: int | None = None

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


def parse_schedule(options: Mapping[str, Any]) -> Schedule:
    """Check a scheduler's options and return its Schedule, or raise ScheduleError.

    Each frequency takes the common options (`timezone`, `start`, `expiry`) and its own;
    any other key is refused. Every rule whose fires could come closer than MIN_INTERVAL
    is refused too, except on a spring-forward day (see next_fire).
    """
    if not isinstance(options, Mapping):
        raise ScheduleError(f"scheduler options must be a mapping, got {describe_value(options)}")
    check_keys(options, ALLOWED_OPTIONS, what="scheduler")
    frequency = options.get("frequency")
    choices = ", ".join(FREQUENCIES)
    if frequency is None:
        raise option_error("frequency", f"required, one of {choices}")
    if frequency not in FREQUENCIES:
        shown = repr(frequency) if isinstance(frequency, str) else describe_value(frequency)
        raise option_error("frequency", f"unknown value {shown[:60]} (one of {choices})")
    allowed = COMMON_OPTIONS | FREQUENCY_OPTIONS[frequency]
    for key in options:
        if key not in allowed:
            listing = ", ".join(sorted(allowed))
            raise option_error(key, f"not an option of a {frequency} frequency ({listing})")
    timezone = options.get("timezone", "UTC")
    zone = parse_timezone(timezone)
    start = parse_instant(options["start"], zone, option="start") if "start" in options else None
    after_count, until = _parse_expiry(options.get("expiry"), zone)
    if start is not None and until is not None and until < start:
        raise option_error("expiry", "'until' is before 'start', nothing would ever fire")
    fields = _PARSERS[frequency](options, zone)
    schedule = Schedule(
        frequency=frequency,
        timezone=timezone,
        start=start,
        until=until,
        after_count=after_count,
        **fields,
    )
    if schedule.at is not None:
        if start is not None and schedule.at < start:
            raise option_error("at", "is before 'start', it would never fire")
        if until is not None and schedule.at > until:
            raise option_error("at", "is after the expiry's 'until', it would never fire")
    return schedule


def next_fire(schedule: Schedule, after: dt.datetime, fired: int = 0) -> dt.datetime | None:
    """The first fire strictly after `after` (aware), in UTC; None once expired.

    `fired` is how many times the schedule has fired so far, for `afterCount`.
    Times are wall-clock in the schedule's zone: a time skipped by a spring-forward
    change fires once, at the instant the clock would show it shifted by the change
    (02:30 in Paris on 2026-03-29 fires at 03:30 CEST); a time repeated by a fall-back
    change fires once, at its first occurrence. Where a shifted time lands within
    MIN_INTERVAL after another fire, it is merged into that earlier fire.
    """
    return next(iter(preview(schedule, after, 1, fired=fired)), None)


def preview(
    schedule: Schedule, after: dt.datetime, count: int = 10, *, fired: int = 0
) -> list[dt.datetime]:
    """The next `count` fires strictly after `after` (at most what the expiry leaves)."""
    if after.tzinfo is None or after.utcoffset() is None:
        raise ValueError("after must be a timezone-aware datetime")
    if schedule.after_count is not None:
        count = min(count, schedule.after_count - fired)
    return list(itertools.islice(_fires(schedule, after.astimezone(dt.UTC)), max(count, 0)))


def _fires(schedule: Schedule, after: dt.datetime) -> Iterator[dt.datetime]:
    if schedule.at is not None:
        if schedule.at > after and (schedule.start is None or schedule.at >= schedule.start):
            yield schedule.at
        return
    floor = max(after, schedule.start) if schedule.start is not None else after
    if floor.year > LAST_YEAR:
        return
    # Two days early, so that the first fire we may yield has its predecessor in view.
    since = floor.astimezone(schedule.zone).date() - dt.timedelta(days=2)
    previous: dt.datetime | None = None
    for instant in _instants(schedule, since):
        # Decided on the rule alone (not on what was yielded), so that every caller,
        # whatever its `after`, sees the same fires.
        merged = previous is not None and instant - previous < MIN_INTERVAL
        previous = instant
        if merged or instant <= after or instant < floor:
            continue
        if schedule.until is not None and instant > schedule.until:
            return
        yield instant


def _instants(schedule: Schedule, since: dt.date) -> Iterator[dt.datetime]:
    """Every instant the rule names from local day `since` on, in order."""
    zone = schedule.zone
    pending: list[dt.datetime] = []
    for day in _days(schedule, since):
        for time in schedule.times:
            # fold=0: the first occurrence of a repeated time, the shifted one of a skipped time.
            local = dt.datetime.combine(day, time, tzinfo=zone)
            heapq.heappush(pending, local.astimezone(dt.UTC))
        bound = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
        while pending and pending[0] < bound - _OFFSET_BOUND:
            yield heapq.heappop(pending)
    while pending:
        yield heapq.heappop(pending)


def _days(schedule: Schedule, since: dt.date) -> Iterator[dt.date]:
    """The local days the rule fires on, from `since` on."""
    first = dt.datetime.combine(since, dt.time())
    by_weekday: Any = schedule.weekdays
    if schedule.weekday_of_month is not None:
        by_weekday = rrule.weekday(*schedule.weekday_of_month)
    by_month_day = schedule.month_days or None
    if schedule.frequency in ("intraday", "daily"):
        rule = rrule.rrule(rrule.DAILY, dtstart=first, byweekday=by_weekday)
    elif schedule.frequency == "weekly":
        rule = rrule.rrule(
            rrule.WEEKLY,
            dtstart=_week_anchor(schedule, since),
            interval=schedule.every_n_weeks,
            byweekday=by_weekday,
            wkst=rrule.MO,
        )
    elif schedule.frequency == "monthly":
        rule = rrule.rrule(
            rrule.MONTHLY,
            dtstart=first.replace(day=1),
            bymonth=schedule.months,
            bymonthday=by_month_day,
            byweekday=by_weekday,
        )
    else:
        rule = rrule.rrule(
            rrule.YEARLY,
            dtstart=first.replace(month=1, day=1),
            bymonth=schedule.months,
            bymonthday=by_month_day,
            byweekday=by_weekday,
        )
    for moment in rule.xafter(first, inc=True):
        if moment.year > LAST_YEAR:
            return
        yield moment.date()


def _week_anchor(schedule: Schedule, since: dt.date) -> dt.datetime:
    """A Monday on or before `since` from which every `every_n_weeks`-th week fires."""
    monday = since - dt.timedelta(days=since.weekday())
    if schedule.every_n_weeks > 1 and schedule.start is not None:
        # Weeks are counted from the week of `start`, in the schedule's zone.
        first = schedule.start.astimezone(schedule.zone).date()
        first_monday = first - dt.timedelta(days=first.weekday())
        weeks = max((monday - first_monday).days // 7, 0)
        monday = first_monday + dt.timedelta(weeks=weeks - weeks % schedule.every_n_weeks)
    return dt.datetime.combine(monday, dt.time())


# Parsing, one function per frequency; each returns Schedule fields.

_Parser = Callable[[Mapping[str, Any], ZoneInfo], dict[str, Any]]


def _parse_once(options: Mapping[str, Any], zone: ZoneInfo) -> dict[str, Any]:
    if "at" not in options:
        raise option_error("at", "required for a once frequency (an ISO datetime)")
    return {"at": parse_instant(options["at"], zone, option="at")}


def _parse_intraday(options: Mapping[str, Any], zone: ZoneInfo) -> dict[str, Any]:
    weekdays = _parse_weekdays(options["days"], "days") if "days" in options else None
    wraps = _consecutive_weekdays(weekdays, every_week=True)
    if ("times" in options) == ("every" in options):
        raise option_error("times", "an intraday frequency needs 'times' or 'every', not both")
    if "times" in options:
        if "between" in options:
            raise option_error("between", "only applies with 'every'")
        minutes = _parse_times(options["times"], wraps=wraps)
    else:
        minutes = _expand_every(options["every"], options.get("between"), wraps=wraps)
    return {"times": _clock_times(minutes), "weekdays": weekdays}


def _parse_daily(options: Mapping[str, Any], zone: ZoneInfo) -> dict[str, Any]:
    weekdays = _parse_weekdays(options["days"], "days") if "days" in options else None
    wraps = _consecutive_weekdays(weekdays, every_week=True)
    minutes = _parse_times(options.get("times", ["00:00"]), wraps=wraps)
    return {"times": _clock_times(minutes), "weekdays": weekdays}


def _parse_weekly(options: Mapping[str, Any], zone: ZoneInfo) -> dict[str, Any]:
    if "days" not in options:
        raise option_error("days", "required for a weekly frequency, e.g. [mon, thu]")
    weekdays = _parse_weekdays(options["days"], "days")
    every_n_weeks = 1
    if "everyNWeeks" in options:
        every_n_weeks = _parse_int(options["everyNWeeks"], "everyNWeeks", 1, MAX_EVERY_N_WEEKS)
        if every_n_weeks > 1 and "start" not in options:
            raise option_error("everyNWeeks", "needs a 'start' to count the weeks from")
    wraps = _consecutive_weekdays(weekdays, every_week=every_n_weeks == 1)
    minutes = _parse_times(options.get("times", ["00:00"]), wraps=wraps)
    return {"times": _clock_times(minutes), "weekdays": weekdays, "every_n_weeks": every_n_weeks}


def _parse_monthly(options: Mapping[str, Any], zone: ZoneInfo) -> dict[str, Any]:
    months = _parse_months(options["months"]) if "months" in options else None
    if ("monthDays" in options) == ("weekdayOfMonth" in options):
        raise option_error("monthDays", "give exactly one of 'monthDays' or 'weekdayOfMonth'")
    fields: dict[str, Any] = {"months": months}
    wraps = False
    if "monthDays" in options:
        month_days = _parse_month_days(options["monthDays"])
        _check_some_month_has(month_days, months or range(1, 13), "monthDays")
        fields["month_days"] = month_days
        wraps = _consecutive_month_days(month_days)
    else:
        fields["weekday_of_month"] = _parse_weekday_of_month(options["weekdayOfMonth"])
    fields["times"] = _clock_times(_parse_times(options.get("times", ["00:00"]), wraps=wraps))
    return fields


def _parse_yearly(options: Mapping[str, Any], zone: ZoneInfo) -> dict[str, Any]:
    if "month" not in options:
        raise option_error("month", "required for a yearly frequency (1..12)")
    month = _parse_int(options["month"], "month", 1, 12)
    if ("monthDay" in options) == ("weekdayOfMonth" in options):
        raise option_error("monthDay", "give exactly one of 'monthDay' or 'weekdayOfMonth'")
    fields: dict[str, Any] = {"months": (month,)}
    if "monthDay" in options:
        month_day = _parse_month_day(options["monthDay"], "monthDay")
        _check_some_month_has((month_day,), (month,), "monthDay")
        fields["month_days"] = (month_day,)
    else:
        fields["weekday_of_month"] = _parse_weekday_of_month(options["weekdayOfMonth"])
    fields["times"] = _clock_times(_parse_times(options.get("times", ["00:00"]), wraps=False))
    return fields


_PARSERS: Mapping[str, _Parser] = {
    "once": _parse_once,
    "intraday": _parse_intraday,
    "daily": _parse_daily,
    "weekly": _parse_weekly,
    "monthly": _parse_monthly,
    "yearly": _parse_yearly,
}


def _parse_expiry(value: object, zone: ZoneInfo) -> tuple[int | None, dt.datetime | None]:
    """(afterCount, until) of `expiry`; both None for never."""
    if value is None:
        return None, None
    if not isinstance(value, Mapping) or len(value) != 1:
        raise option_error(
            "expiry", "expected one of {never: true}, {afterCount: N} or {until: <datetime>}"
        )
    ((key, inner),) = value.items()
    if key == "never":
        if inner is not True:
            raise option_error("expiry.never", f"expected true, got {describe_value(inner)}")
        return None, None
    if key == "afterCount":
        return _parse_int(inner, "expiry.afterCount", 1, MAX_AFTER_COUNT), None
    if key == "until":
        return None, parse_instant(inner, zone, option="expiry.until")
    shown = repr(key)[:60] if isinstance(key, str) else describe_value(key)
    raise option_error("expiry", f"unknown kind {shown} (never, afterCount or until)")


def _parse_times(value: object, *, wraps: bool) -> tuple[int, ...]:
    """Minutes past midnight of a `times` list, sorted, checked MIN_INTERVAL apart."""
    items = _parse_list(value, "times", MAX_TIMES)
    minutes: list[int] = []
    for index, item in enumerate(items):
        minute = _parse_clock(item, f"times[{index}]")
        if minute in minutes:
            raise option_error("times", f"{_hhmm(minute)} is listed twice")
        minutes.append(minute)
    minutes.sort()
    _check_spacing(minutes, "times", wraps=wraps)
    return tuple(minutes)


def _expand_every(every: Any, between: object, *, wraps: bool) -> tuple[int, ...]:
    """Minutes past midnight of `every` N between two times (both included)."""
    step = parse_duration(every, option="every")
    if step % dt.timedelta(minutes=1):
        raise option_error("every", "must be whole minutes, e.g. '30mn' or '2h'")
    if step < MIN_INTERVAL:
        raise option_error("every", f"{every!r} is shorter than the minimum interval of 10mn")
    if step > dt.timedelta(days=1):
        raise option_error("every", f"{every!r} is longer than a day, use another frequency")
    first, last = 0, _DAY_MINUTES
    if between is not None:
        bounds = _parse_list(between, "between", 2)
        if len(bounds) != 2:
            raise option_error("between", "expected two times, e.g. ['08:00', '20:00']")
        first = _parse_clock(bounds[0], "between[0]")
        last = _parse_clock(bounds[1], "between[1]", end_of_day=True)
        if last <= first:
            raise option_error("between", "the end must be later than the start")
    # A fire at 24:00 would be the next day's 00:00: days run from 00:00 to 23:59.
    last = min(last, _DAY_MINUTES - 1)
    minutes = tuple(range(first, last + 1, step // dt.timedelta(minutes=1)))
    _check_spacing(minutes, "every", wraps=wraps)
    return minutes


def _check_spacing(minutes: Sequence[int], option: str, *, wraps: bool) -> None:
    """Refuse times of day closer than MIN_INTERVAL; across midnight too if `wraps`."""
    pairs = list(itertools.pairwise(minutes))
    if wraps and len(minutes) > 1:
        pairs.append((minutes[-1], minutes[0] + _DAY_MINUTES))
    for earlier, later in pairs:
        if later - earlier < _MIN_GAP:
            then = f"{_hhmm(later % _DAY_MINUTES)}{' (next day)' if later >= _DAY_MINUTES else ''}"
            raise option_error(
                option,
                f"{_hhmm(earlier)} and {then} fire {later - earlier} minutes apart, "
                f"minimum interval is {_MIN_GAP} minutes",
            )


def _consecutive_weekdays(weekdays: tuple[int, ...] | None, *, every_week: bool) -> bool:
    """Whether the rule can fire on two consecutive days (Sunday to Monday if every week)."""
    if weekdays is None:
        return True
    chosen = set(weekdays)
    return any((day + 1) % 7 in chosen if every_week else day + 1 in chosen for day in weekdays)


def _consecutive_month_days(month_days: tuple[int, ...]) -> bool:
    """Whether two of these days of the month can be consecutive dates, in any months."""
    firsts = {1} | {-length for length in range(28, 32)}
    for length in range(28, 32):
        days = {day if day > 0 else length + 1 + day for day in month_days}
        days = {day for day in days if 1 <= day <= length}
        if any(day + 1 in days for day in days):
            return True
        if length in days and firsts & set(month_days):
            return True
    return False


def _check_some_month_has(month_days: Sequence[int], months: Sequence[int], option: str) -> None:
    longest = max(_MONTH_LENGTHS[month - 1] for month in months)
    if all(abs(day) > longest for day in month_days):
        raise option_error(option, "no such day in the chosen months, it would never fire")


def _parse_list(value: object, option: str, limit: int) -> list[Any]:
    if not isinstance(value, list | tuple):
        raise option_error(option, f"expected a list, got {describe_value(value)}")
    if not value:
        raise option_error(option, "must not be empty")
    if len(value) > limit:
        raise option_error(option, f"at most {limit} entries, got {len(value)}")
    return list(value)


def _parse_clock(value: object, option: str, *, end_of_day: bool = False) -> int:
    """Minutes past midnight of 'HH:MM' (also '24:00' if `end_of_day`)."""
    if isinstance(value, int) and not isinstance(value, bool):
        # YAML 1.1 reads an unquoted 14:30 as the base-60 integer 870.
        raise option_error(
            option, f"got {describe_value(value)}, quote times in YAML: '14:30', not 14:30"
        )
    if not isinstance(value, str):
        raise option_error(option, f"expected a time 'HH:MM', got {describe_value(value)}")
    match = _CLOCK.fullmatch(value)
    hour, minute = (int(match[1]), int(match[2])) if match else (99, 99)
    if end_of_day and (hour, minute) == (24, 0):
        return _DAY_MINUTES
    if hour > 23 or minute > 59:
        raise option_error(option, f"{value[:20]!r} is not a time 'HH:MM' (00:00 to 23:59)")
    return hour * 60 + minute


def _parse_weekdays(value: object, option: str) -> tuple[int, ...]:
    days: list[int] = []
    for index, item in enumerate(_parse_list(value, option, 7)):
        day = _parse_weekday(item, f"{option}[{index}]")
        if day in days:
            raise option_error(option, f"{WEEKDAYS[day]!r} is listed twice")
        days.append(day)
    return tuple(sorted(days))


def _parse_weekday(value: object, option: str) -> int:
    if isinstance(value, str) and value in WEEKDAYS:
        return WEEKDAYS.index(value)
    shown = repr(value[:20]) if isinstance(value, str) else describe_value(value)
    raise option_error(option, f"{shown} is not a weekday ({', '.join(WEEKDAYS)})")


def _parse_months(value: object) -> tuple[int, ...]:
    months: list[int] = []
    for index, item in enumerate(_parse_list(value, "months", 12)):
        month = _parse_int(item, f"months[{index}]", 1, 12)
        if month in months:
            raise option_error("months", f"{month} is listed twice")
        months.append(month)
    return tuple(sorted(months))


def _parse_month_days(value: object) -> tuple[int, ...]:
    days: list[int] = []
    for index, item in enumerate(_parse_list(value, "monthDays", 62)):
        day = _parse_month_day(item, f"monthDays[{index}]")
        if day in days:
            raise option_error("monthDays", f"{day} is listed twice")
        days.append(day)
    return tuple(sorted(days))


def _parse_month_day(value: object, option: str) -> int:
    day = _parse_int(value, option, -31, 31)
    if day == 0:
        raise option_error(option, "0 is not a day of the month (1..31, -1 for the last day)")
    return day


def _parse_weekday_of_month(value: object) -> tuple[int, int]:
    option = "weekdayOfMonth"
    if not isinstance(value, Mapping) or set(value) != {"weekday", "nth"}:
        raise option_error(option, "expected {weekday: tue, nth: 2} (nth -1 for the last)")
    weekday = _parse_weekday(value["weekday"], f"{option}.weekday")
    nth = _parse_int(value["nth"], f"{option}.nth", -5, 5)
    if nth == 0:
        raise option_error(f"{option}.nth", "expected 1..5, or -1..-5 counting from the end")
    return weekday, nth


def _parse_int(value: object, option: str, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise option_error(option, f"expected a whole number, got {describe_value(value)}")
    if not low <= value <= high:
        raise option_error(option, f"{describe_value(value)} is outside {low}..{high}")
    return value


def _clock_times(minutes: Sequence[int]) -> tuple[dt.time, ...]:
    return tuple(dt.time(minute // 60, minute % 60) for minute in minutes)


def _hhmm(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"
