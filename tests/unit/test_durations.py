"""Unit tests of wait durations: parsing, formatting, wait_until and hostile input."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.durations import MAX_DURATION, format_duration, parse_duration, wait_until
from worker.errors import DefinitionError, ScheduleError

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1d 8h 30mn", timedelta(days=1, hours=8, minutes=30)),
        ("45s", timedelta(seconds=45)),
        ("2h", timedelta(hours=2)),
        ("10mn", timedelta(minutes=10)),
        ("1d", timedelta(days=1)),
        ("1d8h30mn15s", timedelta(days=1, hours=8, minutes=30, seconds=15)),
        ("  2h   5s ", timedelta(hours=2, seconds=5)),
        ("90mn", timedelta(minutes=90)),
        ("36h", timedelta(hours=36)),
        ("007mn", timedelta(minutes=7)),
        ("3650d", timedelta(days=3650)),
    ],
)
def test_durations_in_the_platform_syntax_are_read(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    ("text", "hint"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("0s", "zero"),
        ("0d 0h", "zero"),
        ("5m", "'mn'"),
        ("1x", "unknown unit 'x'"),
        ("1H", "unknown unit 'H'"),
        ("1h 2h", "twice"),
        ("30mn 1h", "out of order"),
        ("1.5h", "whole numbers"),
        ("1,5h", "whole numbers"),
        ("-1h", "cannot read"),
        ("+1h", "cannot read"),
        ("1 h", "cannot read"),
        ("h", "cannot read"),
        ("12", "cannot read"),
        ("3651d", "3650 days"),
        ("3650d 1s", "3650 days"),
        ("99999999999h", "too large"),
        ("\u0661h", "cannot read"),
        ("1h; drop table", "cannot read"),
        ("1h" * 40, "too long"),
    ],
)
def test_malformed_durations_raise_a_schedule_error_that_says_why(text: str, hint: str) -> None:
    with pytest.raises(ScheduleError, match=r"^duration: ") as caught:
        parse_duration(text)
    assert hint in caught.value.message
    assert caught.value.details == {"option": "duration"}


@pytest.mark.parametrize("value", [None, 10, 1.5, True, ["1h"], {"h": 1}, b"1h"])
def test_a_duration_that_is_not_a_string_is_refused(value: Any) -> None:
    with pytest.raises(ScheduleError, match="expected a string"):
        parse_duration(value)


def test_the_error_names_the_option_the_duration_came_from() -> None:
    with pytest.raises(ScheduleError, match=r"^every: "):
        parse_duration("1y", option="every")


def test_schedule_errors_are_definition_errors_so_a_bad_workflow_is_refused_on_save() -> None:
    with pytest.raises(DefinitionError):
        parse_duration("soon")


@pytest.mark.parametrize(
    ("delta", "text"),
    [
        (timedelta(days=1, hours=8, minutes=30), "1d 8h 30mn"),
        (timedelta(seconds=45), "45s"),
        (timedelta(hours=2), "2h"),
        (timedelta(minutes=90), "1h 30mn"),
        (timedelta(days=2, seconds=1), "2d 1s"),
        (timedelta(seconds=59, microseconds=999_999), "59s"),
        (timedelta(), "0s"),
    ],
)
def test_durations_are_written_in_the_same_syntax(delta: timedelta, text: str) -> None:
    assert format_duration(delta) == text


def test_a_negative_duration_cannot_be_written() -> None:
    with pytest.raises(ValueError, match="negative"):
        format_duration(timedelta(seconds=-1))


@given(st.integers(min_value=1, max_value=int(MAX_DURATION.total_seconds())))
def test_every_duration_written_reads_back_as_itself(seconds: int) -> None:
    delta = timedelta(seconds=seconds)
    assert parse_duration(format_duration(delta)) == delta


@given(st.text(max_size=80))
def test_any_text_either_reads_as_a_positive_duration_or_raises_a_schedule_error(
    text: str,
) -> None:
    try:
        delta = parse_duration(text)
    except ScheduleError:
        return
    assert timedelta() < delta <= MAX_DURATION


@given(st.from_regex(r"\A\s*([0-9]{1,4}d)?\s*([0-9]{1,3}h)?\s*([0-9]{1,3}mn)?\s*([0-9]{1,3}s)?\Z"))
def test_text_shaped_like_a_duration_never_raises_anything_but_a_schedule_error(
    text: str,
) -> None:
    with contextlib.suppress(ScheduleError):
        parse_duration(text)


def test_a_wait_for_a_duration_ends_that_long_after_now() -> None:
    assert wait_until({"duration": "1d 8h"}, NOW) == datetime(2026, 6, 2, 20, 0, tzinfo=UTC)


def test_a_wait_started_in_another_zone_ends_at_the_same_instant_in_utc() -> None:
    paris_noon = datetime.fromisoformat("2026-06-01T14:00:00+02:00")
    assert wait_until({"duration": "30mn"}, paris_noon) == datetime(2026, 6, 1, 12, 30, tzinfo=UTC)


def test_a_wait_until_an_aware_datetime_ends_then() -> None:
    ends = wait_until({"until": "2026-06-03T09:00:00+02:00"}, NOW)
    assert ends == datetime(2026, 6, 3, 7, 0, tzinfo=UTC)


def test_a_naive_until_is_wall_clock_time_in_the_given_zone() -> None:
    ends = wait_until({"until": "2026-12-24T18:00", "timezone": "Europe/Paris"}, NOW)
    assert ends == datetime(2026, 12, 24, 17, 0, tzinfo=UTC)


def test_a_naive_until_without_a_zone_is_utc() -> None:
    assert wait_until({"until": "2026-12-24T18:00"}, NOW) == datetime(2026, 12, 24, 18, tzinfo=UTC)


def test_a_until_parsed_by_yaml_as_a_datetime_is_accepted() -> None:
    ends = wait_until({"until": datetime(2026, 7, 1, 8, 0), "timezone": "Europe/Paris"}, NOW)
    assert ends == datetime(2026, 7, 1, 6, 0, tzinfo=UTC)


def test_a_until_already_past_ends_the_wait_at_once() -> None:
    assert wait_until({"until": "2026-01-01T00:00:00Z"}, NOW) < NOW


def test_a_until_in_the_spring_forward_gap_reads_as_the_shifted_instant() -> None:
    # 02:30 does not exist in Paris on 2026-03-29; it reads as 03:30 CEST, 01:30 UTC.
    ends = wait_until({"until": "2026-03-29T02:30", "timezone": "Europe/Paris"}, NOW)
    assert ends == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("options", "hint"),
    [
        ({}, "exactly one of"),
        ({"duration": "1h", "until": "2026-06-02T00:00"}, "exactly one of"),
        ({"duration": "1h", "timezone": "Europe/Paris"}, "timezone: only applies"),
        ({"duration": "1h", "delay": "2h"}, "unknown wait option 'delay'; known options:"),
        ({1: "1h"}, "must be strings"),
        ({"duration": 3600}, "duration: expected a string"),
        ({"until": "next tuesday"}, "until: 'next tuesday' is not an ISO datetime"),
        ({"until": 1767225600}, "until: expected an ISO datetime"),
        ({"until": "0001-01-01T00:00"}, "until: year 1 is outside"),
        ({"until": "9999-12-31T23:59"}, "until: year 9999 is outside"),
        ({"until": "2026-06-02T00:00", "timezone": "Mars/Olympus"}, "unknown time zone"),
        ({"until": "2026-06-02T00:00", "timezone": "../../etc/passwd"}, "not an IANA"),
        ({"until": "2026-06-02T00:00", "timezone": "leapseconds"}, "unknown time zone"),
        ({"until": "2026-06-02T00:00", "timezone": None}, "timezone: expected an IANA"),
        ({"until": "2" * 100}, "not an ISO datetime"),
    ],
)
def test_malformed_wait_options_raise_a_schedule_error(options: Any, hint: str) -> None:
    with pytest.raises(ScheduleError) as caught:
        wait_until(options, NOW)
    assert hint in caught.value.message


def test_wait_options_that_are_not_a_mapping_are_refused() -> None:
    with pytest.raises(ScheduleError, match="must be a mapping"):
        wait_until(["1h"], NOW)  # type: ignore[arg-type]


def test_a_naive_now_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="aware"):
        wait_until({"duration": "1h"}, datetime(2026, 6, 1, 12, 0))
