"""The `wait` activity's durations and instants, and the time options the scheduler shares."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from worker.errors import ScheduleError

#: Longest duration a `wait` (or a scheduler `every`) may express.
MAX_DURATION = dt.timedelta(days=3650)
#: Units in the only order they may appear, with their length.
UNITS: Mapping[str, dt.timedelta] = {
    "d": dt.timedelta(days=1),
    "h": dt.timedelta(hours=1),
    "mn": dt.timedelta(minutes=1),
    "s": dt.timedelta(seconds=1),
}
#: Years outside this range are refused in dates: nobody means them, and they keep
#: the arithmetic of the scheduler clear of `datetime`'s limits.
FIRST_YEAR, LAST_YEAR = 1970, 9000
#: Keys of the `wait` activity's options.
WAIT_OPTIONS = frozenset({"duration", "until", "timezone"})

_MAX_TEXT = 64
_EXAMPLE = "e.g. '1d 8h 30mn' (units d, h, mn, s, in that order)"
_PART = re.compile(r"\s*([0-9]+)([A-Za-z]+)")
_ZONE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_+-]*(?:/[A-Za-z0-9_+-]+)*")


def parse_duration(text: str, *, option: str = "duration") -> dt.timedelta:
    """Read a duration such as `1d 8h 30mn`, `45s`, `2h` or `10mn`.

    Each part is a whole number glued to its unit: `d` days, `h` hours, `mn` minutes,
    `s` seconds. Parts come in that order, each at most once, separated by optional
    whitespace (`1d8h` is fine). A part may exceed its natural range (`90mn`, `36h`).
    `m` is refused on purpose: in a campaign tool it reads as "month" as often as
    "minute", so minutes are always `mn`. The total must be more than zero and at most
    3650 days. Anything else raises ScheduleError whose message starts with `option`.
    """
    if not isinstance(text, str):
        raise option_error(option, f"expected a string {_EXAMPLE}, got {describe_value(text)}")
    if len(text) > _MAX_TEXT:
        raise option_error(option, f"too long ({len(text)} characters), expected {_EXAMPLE}")
    stripped = text.strip()
    if not stripped:
        raise option_error(option, f"empty duration, expected {_EXAMPLE}")
    total = dt.timedelta()
    position, last_rank = 0, -1
    order = list(UNITS)
    while position < len(stripped):
        match = _PART.match(stripped, position)
        if match is None:
            if re.match(r"\s*[0-9]+[.,][0-9]", stripped[position:]):
                raise option_error(option, f"{text!r}: whole numbers only, e.g. '1h 30mn' for 1.5h")
            raise option_error(
                option, f"cannot read {text!r} at {stripped[position:]!r}, {_EXAMPLE}"
            )
        digits, unit = match.groups()
        if unit == "m":
            raise option_error(option, f"unit 'm' in {text!r} is ambiguous, write minutes as 'mn'")
        if unit not in UNITS:
            raise option_error(option, f"unknown unit {unit!r} in {text!r}, {_EXAMPLE}")
        rank = order.index(unit)
        if rank == last_rank:
            raise option_error(option, f"unit {unit!r} appears twice in {text!r}")
        if rank < last_rank:
            raise option_error(option, f"unit {unit!r} is out of order in {text!r}, {_EXAMPLE}")
        if len(digits) > 7:
            raise option_error(option, f"{digits}{unit} is too large, at most 3650 days in all")
        total += int(digits) * UNITS[unit]
        position, last_rank = match.end(), rank
    if total <= dt.timedelta():
        raise option_error(option, f"{text!r} is zero, a duration must be positive")
    if total > MAX_DURATION:
        raise option_error(option, f"{text!r} is longer than the maximum of 3650 days")
    return total


def format_duration(delta: dt.timedelta) -> str:
    """Write `delta` in the syntax parse_duration reads, e.g. `1d 8h 30mn`.

    Fractions of a second are dropped and zero parts are left out; a zero duration is
    written `0s` (which parse_duration refuses, as a wait of nothing is not a wait).
    A negative duration raises ValueError.
    """
    if delta < dt.timedelta():
        raise ValueError(f"cannot format a negative duration: {delta!r}")
    seconds = int(delta.total_seconds())
    parts = []
    for unit, length in UNITS.items():
        count, seconds = divmod(seconds, int(length.total_seconds()))
        if count:
            parts.append(f"{count}{unit}")
    return " ".join(parts) or "0s"


def wait_until(options: Mapping[str, Any], now: dt.datetime) -> dt.datetime:
    """When a `wait` that starts at `now` (aware) is over, as an aware UTC datetime.

    `options` is either `{"duration": "1d 8h"}` or `{"until": <ISO datetime>}`, the latter
    optionally with `timezone` (IANA name, default UTC) to read a naive `until` in.
    An `until` already past is returned as is: the wait is over at once.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be a timezone-aware datetime")
    if not isinstance(options, Mapping):
        raise ScheduleError(f"wait options must be a mapping, got {describe_value(options)}")
    check_keys(options, WAIT_OPTIONS, what="wait")
    if ("duration" in options) == ("until" in options):
        raise ScheduleError("wait needs exactly one of 'duration' or 'until'")
    if "duration" in options:
        if "timezone" in options:
            raise option_error("timezone", "only applies to 'until', not to 'duration'")
        return now.astimezone(dt.UTC) + parse_duration(options["duration"])
    zone = parse_timezone(options.get("timezone", "UTC"))
    return parse_instant(options["until"], zone, option="until")


def parse_timezone(value: object, *, option: str = "timezone") -> ZoneInfo:
    """The IANA time zone named `value` (e.g. `Europe/Paris`), or ScheduleError."""
    if not isinstance(value, str):
        raise option_error(option, f"expected an IANA time zone name, got {describe_value(value)}")
    if len(value) > _MAX_TEXT or not _ZONE_NAME.fullmatch(value):
        raise option_error(option, f"{_shorten(value)} is not an IANA time zone name")
    try:
        return ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise option_error(option, f"unknown time zone {value!r}") from None


def parse_instant(value: object, zone: ZoneInfo, *, option: str) -> dt.datetime:
    """An ISO datetime (or a YAML-parsed datetime or date) as an aware UTC datetime.

    A naive value is wall-clock time in `zone`. A wall-clock time skipped by a
    spring-forward change reads as the instant the clock shows that time shifted by
    the change; one repeated by a fall-back change reads as its first occurrence.
    """
    if isinstance(value, str):
        if len(value) > _MAX_TEXT:
            raise option_error(option, f"{_shorten(value)} is not an ISO datetime")
        try:
            parsed = dt.datetime.fromisoformat(value.strip())
        except ValueError:
            raise option_error(option, f"{value!r} is not an ISO datetime") from None
    elif isinstance(value, dt.datetime):
        parsed = value
    elif isinstance(value, dt.date):
        parsed = dt.datetime.combine(value, dt.time())
    else:
        raise option_error(option, f"expected an ISO datetime string, got {describe_value(value)}")
    if not FIRST_YEAR <= parsed.year <= LAST_YEAR:
        raise option_error(option, f"year {parsed.year} is outside {FIRST_YEAR}..{LAST_YEAR}")
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        parsed = parsed.replace(tzinfo=zone, fold=0)
    return parsed.astimezone(dt.UTC)


def option_error(option: str, message: str) -> ScheduleError:
    """A ScheduleError about `option`, whose message starts with the option's name."""
    return ScheduleError(f"{option}: {message}", details={"option": option})


def describe_value(value: object) -> str:
    """A short description of a wrong value for an error message, safe on any input."""
    if value is None:
        return "null"
    name = type(value).__name__
    if isinstance(value, str):
        return f"{name} {_shorten(value)}"
    if isinstance(value, bool | float) or (isinstance(value, int) and abs(value) < 10**18):
        return f"{name} {value!r}"
    # Containers are not shown: their repr may be huge or nested too deep to print.
    return name


def check_keys(options: Mapping[Any, Any], known: frozenset[str], *, what: str) -> None:
    """Refuse a key that is not a string or not in `known`, listing the known ones."""
    for key in options:
        if not isinstance(key, str):
            raise ScheduleError(f"{what} option names must be strings, got {describe_value(key)}")
        if key not in known:
            listing = ", ".join(sorted(known))
            raise ScheduleError(
                f"unknown {what} option {_shorten(key)}; known options: {listing}",
                details={"option": key[:_MAX_TEXT]},
            )


def _shorten(text: str) -> str:
    return repr(text) if len(text) <= 40 else repr(text[:37]) + "..."
