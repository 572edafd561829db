"""Unit tests of scheduler frequencies: each frequency, DST, expiry, limits, hostile input."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.errors import DefinitionError, ScheduleError
from worker.schedules import (
    ALLOWED_OPTIONS,
    COMMON_OPTIONS,
    FREQUENCIES,
    FREQUENCY_OPTIONS,
    MAX_TIMES,
    MIN_INTERVAL,
    Schedule,
    next_fire,
    parse_schedule,
    preview,
)


def utc(text: str) -> datetime:
    """An aware UTC datetime from a compact ISO string such as '2026-12-08T08:00'."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def fires(options: dict[str, Any], after: str, count: int = 10, fired: int = 0) -> list[datetime]:
    return preview(parse_schedule(options), utc(after), count, fired=fired)


def at(*texts: str) -> list[datetime]:
    return [utc(text) for text in texts]


def sound(got: list[datetime]) -> bool:
    """Whether fires are strictly increasing and at least MIN_INTERVAL apart."""
    return all(later - earlier >= MIN_INTERVAL for earlier, later in itertools.pairwise(got))


# Each frequency, with instants worked out by hand. 2026-01-01 is a Thursday; Paris is
# UTC+1 in winter and UTC+2 from 2026-03-29 to 2026-10-25.


def test_once_fires_at_its_local_time_and_then_never_again() -> None:
    schedule = parse_schedule(
        {"frequency": "once", "at": "2026-07-14T10:00", "timezone": "Europe/Paris"}
    )
    assert schedule.at == utc("2026-07-14T08:00")
    assert next_fire(schedule, utc("2026-07-01T00:00")) == utc("2026-07-14T08:00")
    assert preview(schedule, utc("2026-07-01T00:00")) == at("2026-07-14T08:00")
    assert next_fire(schedule, utc("2026-07-14T08:00")) is None


def test_once_with_an_offset_ignores_the_timezone_option() -> None:
    options = {"frequency": "once", "at": "2026-07-14T10:00+00:00", "timezone": "Asia/Tokyo"}
    assert fires(options, "2026-01-01T00:00") == at("2026-07-14T10:00")


def test_once_accepts_a_datetime_as_yaml_parses_an_unquoted_timestamp() -> None:
    options = {"frequency": "once", "at": datetime(2026, 7, 14, 10, 0)}
    assert fires(options, "2026-01-01T00:00") == at("2026-07-14T10:00")


def test_intraday_fires_at_each_listed_time_every_day() -> None:
    options = {"frequency": "intraday", "times": ["14:30", "08:00"]}
    assert fires(options, "2026-01-01T09:00", 3) == at(
        "2026-01-01T14:30", "2026-01-02T08:00", "2026-01-02T14:30"
    )


def test_every_6h_between_0100_and_2400_fires_at_01_07_13_and_19_like_mobile_app_opt_out() -> None:
    # Adobe's mobileAppOptOutMgt: "every 6 hours between 1:00 and midnight".
    options = {"frequency": "intraday", "every": "6h", "between": ["01:00", "24:00"]}
    assert fires(options, "2026-01-01T00:00", 10) == at(
        "2026-01-01T01:00",
        "2026-01-01T07:00",
        "2026-01-01T13:00",
        "2026-01-01T19:00",
        "2026-01-02T01:00",
        "2026-01-02T07:00",
        "2026-01-02T13:00",
        "2026-01-02T19:00",
        "2026-01-03T01:00",
        "2026-01-03T07:00",
    )


def test_every_2h_between_0800_and_2000_includes_both_ends_and_skips_the_weekend() -> None:
    options = {
        "frequency": "intraday",
        "every": "2h",
        "between": ["08:00", "20:00"],
        "days": ["mon", "tue", "wed", "thu", "fri"],
    }
    # Friday 2026-01-02 19:00 -> its 20:00, then Monday 2026-01-05.
    assert fires(options, "2026-01-02T19:00", 3) == at(
        "2026-01-02T20:00", "2026-01-05T08:00", "2026-01-05T10:00"
    )


def test_every_30mn_without_between_fires_48_times_a_day_from_midnight() -> None:
    got = fires({"frequency": "intraday", "every": "30mn"}, "2025-12-31T23:59", 49)
    assert got[0] == utc("2026-01-01T00:00")
    assert got[47] == utc("2026-01-01T23:30")
    assert got[48] == utc("2026-01-02T00:00")


def test_every_6h_between_0000_and_2400_fires_once_at_midnight_not_twice() -> None:
    options = {"frequency": "intraday", "every": "6h", "between": ["00:00", "24:00"]}
    assert fires(options, "2025-12-31T23:59", 5) == at(
        "2026-01-01T00:00",
        "2026-01-01T06:00",
        "2026-01-01T12:00",
        "2026-01-01T18:00",
        "2026-01-02T00:00",
    )


def test_daily_fires_at_midnight_by_default() -> None:
    assert fires({"frequency": "daily"}, "2026-01-01T00:00", 3) == at(
        "2026-01-02T00:00", "2026-01-03T00:00", "2026-01-04T00:00"
    )


def test_daily_on_working_days_skips_from_friday_to_monday() -> None:
    options = {
        "frequency": "daily",
        "times": ["09:00"],
        "days": ["mon", "tue", "wed", "thu", "fri"],
        "timezone": "Europe/Paris",
    }
    # Friday 2026-01-02 09:00 Paris is 08:00 UTC; the next working day is Monday the 5th.
    assert fires(options, "2026-01-02T08:00", 2) == at("2026-01-05T08:00", "2026-01-06T08:00")


def test_weekly_fires_on_the_listed_weekdays() -> None:
    options = {"frequency": "weekly", "days": ["thu", "mon"], "times": ["07:30"]}
    assert fires(options, "2026-01-01T08:00", 3) == at(
        "2026-01-05T07:30", "2026-01-08T07:30", "2026-01-12T07:30"
    )


def test_every_two_weeks_counts_weeks_from_the_week_of_start() -> None:
    options = {
        "frequency": "weekly",
        "days": ["mon", "fri"],
        "everyNWeeks": 2,
        "start": "2026-01-07",
    }
    # Week of Monday 2026-01-05 is week 0 (its Monday is before start), then 19th, 2 Feb.
    assert fires(options, "2026-01-01T00:00", 4) == at(
        "2026-01-09T00:00", "2026-01-19T00:00", "2026-01-23T00:00", "2026-02-02T00:00"
    )
    # Asked from far later, the same weeks still fire: 2026-02-02 + 26 * 2 weeks.
    assert fires(options, "2027-01-31T12:00", 1) == at("2027-02-01T00:00")


def test_monthly_on_the_1st_the_15th_and_the_last_day() -> None:
    options = {"frequency": "monthly", "monthDays": [-1, 1, 15]}
    assert fires(options, "2026-02-01T00:00", 5) == at(
        "2026-02-15T00:00",
        "2026-02-28T00:00",
        "2026-03-01T00:00",
        "2026-03-15T00:00",
        "2026-03-31T00:00",
    )


def test_the_last_day_of_february_is_the_29th_in_a_leap_year() -> None:
    options = {"frequency": "monthly", "monthDays": [-1], "months": [2], "times": ["12:00"]}
    assert fires(options, "2026-03-01T00:00", 2) == at("2027-02-28T12:00", "2028-02-29T12:00")


def test_monthly_on_the_31st_skips_the_months_without_one() -> None:
    options = {"frequency": "monthly", "monthDays": [31]}
    assert fires(options, "2026-01-31T00:00", 3) == at(
        "2026-03-31T00:00", "2026-05-31T00:00", "2026-07-31T00:00"
    )


def test_second_tuesday_of_december_2026_at_0900_paris_is_2026_12_08_at_0800_utc() -> None:
    options = {
        "frequency": "monthly",
        "weekdayOfMonth": {"weekday": "tue", "nth": 2},
        "times": ["09:00"],
        "timezone": "Europe/Paris",
    }
    # December 2026 starts on a Tuesday; January 2027 on a Friday (Tuesdays 5, 12).
    assert fires(options, "2026-11-20T00:00", 2) == at("2026-12-08T08:00", "2027-01-12T08:00")


def test_last_friday_of_the_chosen_months() -> None:
    options = {
        "frequency": "monthly",
        "weekdayOfMonth": {"weekday": "fri", "nth": -1},
        "months": [7, 1],
        "times": ["18:00"],
    }
    assert fires(options, "2026-01-01T00:00", 3) == at(
        "2026-01-30T18:00", "2026-07-31T18:00", "2027-01-29T18:00"
    )


def test_yearly_on_a_date_at_a_local_time() -> None:
    options = {
        "frequency": "yearly",
        "month": 7,
        "monthDay": 14,
        "times": ["10:00"],
        "timezone": "Europe/Paris",
    }
    assert fires(options, "2026-01-01T00:00", 2) == at("2026-07-14T08:00", "2027-07-14T08:00")


def test_yearly_on_the_29th_of_february_fires_in_leap_years_only() -> None:
    options = {"frequency": "yearly", "month": 2, "monthDay": 29}
    assert fires(options, "2026-01-01T00:00", 2) == at("2028-02-29T00:00", "2032-02-29T00:00")


def test_yearly_on_the_fourth_thursday_of_november_in_new_york() -> None:
    options = {
        "frequency": "yearly",
        "month": 11,
        "weekdayOfMonth": {"weekday": "thu", "nth": 4},
        "times": ["12:00"],
        "timezone": "America/New_York",
    }
    # Thanksgiving: 2026-11-26 and 2027-11-25, noon EST is 17:00 UTC.
    assert fires(options, "2026-01-01T00:00", 2) == at("2026-11-26T17:00", "2027-11-25T17:00")


# Daylight saving time in Paris: clocks jump 02:00 -> 03:00 on 2026-03-29 and fall back
# 03:00 -> 02:00 on 2026-10-25.

PARIS = {"timezone": "Europe/Paris"}


def test_a_local_time_keeps_its_wall_clock_across_spring_forward() -> None:
    options = {"frequency": "daily", "times": ["09:00"], **PARIS}
    assert fires(options, "2026-03-28T00:00", 2) == at("2026-03-28T08:00", "2026-03-29T07:00")


def test_a_time_skipped_by_spring_forward_fires_once_at_the_shifted_instant() -> None:
    options = {"frequency": "daily", "times": ["02:30"], **PARIS}
    # 2026-03-29 02:30 does not exist: it fires at 03:30 CEST, 01:30 UTC.
    assert fires(options, "2026-03-27T12:00", 3) == at(
        "2026-03-28T01:30", "2026-03-29T01:30", "2026-03-30T00:30"
    )


def test_a_skipped_time_shifted_onto_another_listed_time_fires_once() -> None:
    options = {"frequency": "daily", "times": ["02:30", "03:30"], **PARIS}
    assert fires(options, "2026-03-28T12:00", 3) == at(
        "2026-03-29T01:30", "2026-03-30T00:30", "2026-03-30T01:30"
    )


def test_a_skipped_time_shifted_within_ten_minutes_of_another_fire_merges_into_it() -> None:
    options = {"frequency": "daily", "times": ["02:30", "03:35"], **PARIS}
    # 02:30 -> 01:30 UTC and 03:35 CEST is 01:35 UTC: one fire, the earlier.
    assert fires(options, "2026-03-28T12:00", 2) == at("2026-03-29T01:30", "2026-03-30T00:30")


def test_a_time_repeated_by_fall_back_fires_once_at_its_first_occurrence() -> None:
    options = {"frequency": "daily", "times": ["02:30"], **PARIS}
    # 02:30 happens at 00:30 UTC (CEST) and again at 01:30 UTC (CET); only the first fires.
    assert fires(options, "2026-10-24T00:00", 3) == at(
        "2026-10-24T00:30", "2026-10-25T00:30", "2026-10-26T01:30"
    )


def test_every_30mn_across_fall_back_follows_the_wall_clock() -> None:
    options = {"frequency": "intraday", "every": "30mn", "between": ["02:00", "03:00"], **PARIS}
    assert fires(options, "2026-10-24T23:00", 4) == at(
        "2026-10-25T00:00",  # 02:00 CEST
        "2026-10-25T00:30",  # 02:30 CEST (not again at 02:30 CET)
        "2026-10-25T02:00",  # 03:00 CET
        "2026-10-26T01:00",  # 02:00 CET the next day
    )


def test_a_once_in_the_spring_forward_gap_fires_at_the_shifted_instant() -> None:
    options = {"frequency": "once", "at": "2026-03-29T02:15", **PARIS}
    assert fires(options, "2026-01-01T00:00") == at("2026-03-29T01:15")


# Start and expiry.


def test_nothing_fires_before_start_and_a_fire_at_start_counts() -> None:
    options = {"frequency": "daily", "times": ["06:00"], "start": "2026-03-10T06:00Z"}
    assert fires(options, "2026-01-01T00:00", 2) == at("2026-03-10T06:00", "2026-03-11T06:00")


def test_a_naive_start_is_wall_clock_time_in_the_zone() -> None:
    options = {"frequency": "daily", "times": ["06:00"], "start": "2026-03-10T07:00", **PARIS}
    # 2026-03-10 06:00 Paris (05:00 UTC) is before the start, 07:00 Paris.
    assert fires(options, "2026-01-01T00:00", 1) == at("2026-03-11T05:00")


def test_an_expiry_of_never_keeps_firing() -> None:
    options = {"frequency": "daily", "expiry": {"never": True}}
    assert len(fires(options, "2026-01-01T00:00", 500)) == 500


def test_after_count_stops_once_that_many_fires_happened() -> None:
    schedule = parse_schedule({"frequency": "daily", "expiry": {"afterCount": 3}})
    after = utc("2026-01-01T00:00")
    assert preview(schedule, after) == at(
        "2026-01-02T00:00", "2026-01-03T00:00", "2026-01-04T00:00"
    )
    assert preview(schedule, after, fired=2) == at("2026-01-02T00:00")
    assert next_fire(schedule, after, fired=2) == utc("2026-01-02T00:00")
    assert next_fire(schedule, after, fired=3) is None
    assert preview(schedule, after, fired=7) == []


def test_until_is_the_last_instant_that_may_fire() -> None:
    options = {"frequency": "daily", "expiry": {"until": "2026-01-04T00:00Z"}}
    schedule = parse_schedule(options)
    assert preview(schedule, utc("2026-01-01T00:00")) == at(
        "2026-01-02T00:00", "2026-01-03T00:00", "2026-01-04T00:00"
    )
    assert next_fire(schedule, utc("2026-01-04T00:00")) is None


def test_a_naive_until_is_wall_clock_time_in_the_zone() -> None:
    options = {"frequency": "daily", "times": ["23:30"], "expiry": {"until": "2026-01-02T23:59"}}
    options |= PARIS
    # 23:30 Paris is 22:30 UTC; the 2nd's fire is inside, the 3rd's is not.
    assert fires(options, "2026-01-01T00:00") == at("2026-01-01T22:30", "2026-01-02T22:30")


def test_a_once_already_past_never_fires() -> None:
    schedule = parse_schedule({"frequency": "once", "at": "2026-01-01T00:00Z"})
    assert next_fire(schedule, utc("2026-06-01T00:00")) is None
    assert preview(schedule, utc("2026-06-01T00:00")) == []


def test_the_preview_shows_the_next_ten_fires() -> None:
    options = {"frequency": "weekly", "days": ["wed"], "times": ["10:00", "16:00"]}
    got = fires(options, "2026-01-01T00:00")
    assert len(got) == 10
    assert got[:3] == at("2026-01-07T10:00", "2026-01-07T16:00", "2026-01-14T10:00")
    assert got[-1] == utc("2026-02-04T16:00")


def test_next_fire_needs_an_aware_datetime() -> None:
    schedule = parse_schedule({"frequency": "daily"})
    with pytest.raises(ValueError, match="aware"):
        next_fire(schedule, datetime(2026, 1, 1))


def test_next_fire_accepts_any_zone_and_answers_in_utc() -> None:
    schedule = parse_schedule({"frequency": "daily", "times": ["12:00"]})
    after = datetime.fromisoformat("2026-01-01T14:30:00+02:00")  # 12:30 UTC
    got = next_fire(schedule, after)
    assert got == utc("2026-01-02T12:00")
    assert got is not None and got.tzinfo is UTC


def test_a_parsed_schedule_is_a_frozen_value() -> None:
    schedule = parse_schedule({"frequency": "daily", "times": ["09:00"]})
    assert schedule == parse_schedule({"frequency": "daily", "times": ["09:00"]})
    with pytest.raises(AttributeError):
        schedule.frequency = "weekly"  # type: ignore[misc]


def test_the_allowed_options_are_the_documented_keys() -> None:
    assert {
        "frequency",
        "at",
        "times",
        "every",
        "between",
        "days",
        "everyNWeeks",
        "monthDays",
        "weekdayOfMonth",
        "months",
        "month",
        "monthDay",
        "timezone",
        "start",
        "expiry",
    } == ALLOWED_OPTIONS


# The ten-minute minimum interval.


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"frequency": "daily", "times": ["08:00", "08:05"]},
            "times: 08:00 and 08:05 fire 5 minutes apart, minimum interval is 10 minutes",
        ),
        (
            {"frequency": "intraday", "times": ["12:00", "11:51"]},
            "times: 11:51 and 12:00 fire 9 minutes apart",
        ),
        (
            {"frequency": "daily", "times": ["23:55", "00:00"]},
            "times: 23:55 and 00:00 (next day) fire 5 minutes apart",
        ),
        (
            {"frequency": "weekly", "days": ["sun", "mon"], "times": ["00:00", "23:58"]},
            "times: 23:58 and 00:00 (next day) fire 2 minutes apart",
        ),
        (
            {"frequency": "monthly", "monthDays": [1, -1], "times": ["00:00", "23:55"]},
            "next day",
        ),
        (
            {"frequency": "monthly", "monthDays": [30, -1], "times": ["00:00", "23:55"]},
            "next day",
        ),
        ({"frequency": "intraday", "every": "5mn"}, "every: '5mn' is shorter than"),
        ({"frequency": "intraday", "every": "9mn 59s"}, "every: must be whole minutes"),
        (
            {"frequency": "intraday", "every": "41mn"},
            "every: 23:55 and 00:00 (next day) fire 5 minutes apart",
        ),
        ({"frequency": "daily", "times": ["08:00", "08:00"]}, "08:00 is listed twice"),
    ],
)
def test_rules_that_could_fire_within_ten_minutes_are_refused(
    options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ScheduleError) as caught:
        parse_schedule(options)
    assert message in caught.value.message


@pytest.mark.parametrize(
    "options",
    [
        {"frequency": "daily", "times": ["08:00", "08:10"]},
        {"frequency": "daily", "times": ["23:50", "00:00"]},
        {"frequency": "intraday", "every": "10mn"},
        {"frequency": "intraday", "every": "41mn", "between": ["00:00", "23:00"], "days": ["mon"]},
        {"frequency": "daily", "days": ["mon", "wed"], "times": ["00:00", "23:55"]},
        {"frequency": "weekly", "days": ["mon"], "times": ["00:00", "23:55"]},
        {
            "frequency": "weekly",
            "days": ["sun", "mon"],
            "everyNWeeks": 2,
            "start": "2026-01-05",
            "times": ["23:55", "00:00"],
        },
        {"frequency": "monthly", "monthDays": [1, 15], "times": ["00:00", "23:55"]},
        {"frequency": "yearly", "month": 1, "monthDay": 1, "times": ["00:00", "23:55"]},
        {
            "frequency": "intraday",
            "times": [f"{m // 60:02d}:{m % 60:02d}" for m in range(0, 1400, 14)],
        },
    ],
)
def test_rules_whose_fires_stay_ten_minutes_apart_are_accepted(options: dict[str, Any]) -> None:
    schedule = parse_schedule(options)
    got = preview(schedule, utc("2026-01-01T00:00"), 300)
    assert sound(got)


def test_every_10mn_fires_144_times_a_day() -> None:
    got = fires({"frequency": "intraday", "every": "10mn"}, "2025-12-31T23:59", 145)
    assert got[143] == utc("2026-01-01T23:50")
    assert got[144] == utc("2026-01-02T00:00")


# Hostile input: only ever a ScheduleError, naming the option.

HOSTILE: list[tuple[Any, str]] = [
    (None, "must be a mapping"),
    ("frequency: daily", "must be a mapping"),
    ([("frequency", "daily")], "must be a mapping"),
    ({}, "frequency: required"),
    ({"frequency": "hourly2"}, "frequency: unknown value 'hourly2'"),
    ({"frequency": "Daily"}, "frequency: unknown value 'Daily'"),
    ({"frequency": 1}, "frequency: unknown value int 1"),
    ({"frequency": ["daily"]}, "frequency: unknown value list"),
    ({"frequency": "daily", "hour": 9}, "unknown scheduler option 'hour'; known options: at,"),
    ({"frequency": "daily", 7: 9}, "option names must be strings"),
    ({"frequency": "daily", "monthDays": [1]}, "monthDays: not an option of a daily frequency"),
    ({"frequency": "once"}, "at: required"),
    ({"frequency": "once", "at": "tomorrow"}, "at: 'tomorrow' is not an ISO datetime"),
    ({"frequency": "once", "at": 1767225600}, "at: expected an ISO datetime"),
    ({"frequency": "once", "at": "2026-01-01", "start": "2026-02-01"}, "at: is before 'start'"),
    (
        {"frequency": "once", "at": "2026-03-01", "expiry": {"until": "2026-02-01"}},
        "at: is after the expiry",
    ),
    ({"frequency": "once", "at": "99999-01-01T00:00"}, "at: '99999-01-01T00:00' is not an ISO"),
    ({"frequency": "once", "at": "1900-01-01T00:00"}, "at: year 1900 is outside"),
    ({"frequency": "daily", "times": "08:00"}, "times: expected a list, got str '08:00'"),
    ({"frequency": "daily", "times": []}, "times: must not be empty"),
    ({"frequency": "daily", "times": [870]}, "times[0]: got int 870, quote times in YAML"),
    ({"frequency": "daily", "times": [8.5]}, "times[0]: expected a time 'HH:MM', got float"),
    ({"frequency": "daily", "times": ["8h"]}, "times[0]: '8h' is not a time"),
    ({"frequency": "daily", "times": ["24:00"]}, "times[0]: '24:00' is not a time"),
    ({"frequency": "daily", "times": ["12:60"]}, "times[0]: '12:60' is not a time"),
    ({"frequency": "daily", "times": ["08:00:00"]}, "is not a time"),
    ({"frequency": "daily", "times": ["\u0661\u0662:00"]}, "is not a time"),
    ({"frequency": "daily", "times": [None]}, "times[0]: expected a time 'HH:MM', got null"),
    (
        {"frequency": "daily", "times": ["12:00"] * (MAX_TIMES + 1)},
        f"times: at most {MAX_TIMES} entries, got {MAX_TIMES + 1}",
    ),
    ({"frequency": "daily", "times": ["00:00"] * 10**5}, "at most 100 entries"),
    ({"frequency": "daily", "days": ["monday"]}, "days[0]: 'monday' is not a weekday"),
    ({"frequency": "daily", "days": ["Mon"]}, "days[0]: 'Mon' is not a weekday"),
    ({"frequency": "daily", "days": [0]}, "days[0]: int 0 is not a weekday"),
    ({"frequency": "daily", "days": ["mon", "mon"]}, "days: 'mon' is listed twice"),
    ({"frequency": "daily", "days": ["mon"] * 8}, "days: at most 7 entries"),
    ({"frequency": "daily", "days": "mon"}, "days: expected a list"),
    ({"frequency": "intraday"}, "times: an intraday frequency needs 'times' or 'every'"),
    ({"frequency": "intraday", "times": ["08:00"], "every": "1h"}, "not both"),
    ({"frequency": "intraday", "times": ["08:00"], "between": ["08:00", "09:00"]}, "between:"),
    ({"frequency": "intraday", "every": 2}, "every: expected a string"),
    ({"frequency": "intraday", "every": "2 hours"}, "every: cannot read"),
    ({"frequency": "intraday", "every": "2d"}, "every: '2d' is longer than a day"),
    ({"frequency": "intraday", "every": "1h", "between": ["20:00", "08:00"]}, "end must be later"),
    ({"frequency": "intraday", "every": "1h", "between": ["08:00"]}, "between: expected two"),
    ({"frequency": "intraday", "every": "1h", "between": "08:00-20:00"}, "between: expected a"),
    ({"frequency": "intraday", "every": "1h", "between": ["24:00", "24:00"]}, "between[0]:"),
    ({"frequency": "weekly"}, "days: required"),
    ({"frequency": "weekly", "days": []}, "days: must not be empty"),
    ({"frequency": "weekly", "days": ["mon"], "everyNWeeks": 2}, "everyNWeeks: needs a 'start'"),
    ({"frequency": "weekly", "days": ["mon"], "everyNWeeks": 0}, "everyNWeeks: int 0 is outside"),
    ({"frequency": "weekly", "days": ["mon"], "everyNWeeks": 10**100}, "everyNWeeks: int is out"),
    ({"frequency": "weekly", "days": ["mon"], "everyNWeeks": "2"}, "expected a whole number"),
    ({"frequency": "weekly", "days": ["mon"], "everyNWeeks": True}, "expected a whole number"),
    ({"frequency": "weekly", "days": ["mon"], "everyNWeeks": 2.0}, "expected a whole number"),
    ({"frequency": "monthly"}, "monthDays: give exactly one of"),
    (
        {"frequency": "monthly", "monthDays": [1], "weekdayOfMonth": {"weekday": "mon", "nth": 1}},
        "monthDays: give exactly one of",
    ),
    ({"frequency": "monthly", "monthDays": [0]}, "monthDays[0]: 0 is not a day"),
    ({"frequency": "monthly", "monthDays": [32]}, "monthDays[0]: int 32 is outside -31..31"),
    ({"frequency": "monthly", "monthDays": [10**400]}, "monthDays[0]: int is outside"),
    ({"frequency": "monthly", "monthDays": ["1"]}, "monthDays[0]: expected a whole number"),
    ({"frequency": "monthly", "monthDays": [1, 1]}, "monthDays: 1 is listed twice"),
    ({"frequency": "monthly", "monthDays": list(range(1, 64))}, "monthDays: at most 62"),
    ({"frequency": "monthly", "monthDays": [30, 31], "months": [2]}, "never fire"),
    ({"frequency": "monthly", "monthDays": [1], "months": [13]}, "months[0]: int 13 is outside"),
    ({"frequency": "monthly", "monthDays": [1], "months": ["jan"]}, "months[0]: expected a"),
    ({"frequency": "monthly", "monthDays": [1], "months": [1, 1]}, "months: 1 is listed twice"),
    ({"frequency": "monthly", "weekdayOfMonth": "2nd tue"}, "weekdayOfMonth: expected {"),
    ({"frequency": "monthly", "weekdayOfMonth": {"weekday": "tue"}}, "weekdayOfMonth: expected"),
    (
        {"frequency": "monthly", "weekdayOfMonth": {"weekday": "tue", "nth": 2, "x": 1}},
        "weekdayOfMonth: expected",
    ),
    (
        {"frequency": "monthly", "weekdayOfMonth": {"weekday": "tue", "nth": 0}},
        "weekdayOfMonth.nth: expected 1..5",
    ),
    (
        {"frequency": "monthly", "weekdayOfMonth": {"weekday": "tue", "nth": 6}},
        "weekdayOfMonth.nth: int 6 is outside -5..5",
    ),
    (
        {"frequency": "monthly", "weekdayOfMonth": {"weekday": "mardi", "nth": 2}},
        "weekdayOfMonth.weekday: 'mardi' is not a weekday",
    ),
    ({"frequency": "yearly", "monthDay": 1}, "month: required"),
    ({"frequency": "yearly", "month": 0, "monthDay": 1}, "month: int 0 is outside 1..12"),
    ({"frequency": "yearly", "month": "feb", "monthDay": 1}, "month: expected a whole number"),
    ({"frequency": "yearly", "month": 2}, "monthDay: give exactly one of"),
    ({"frequency": "yearly", "month": 2, "monthDay": 30}, "monthDay: no such day"),
    ({"frequency": "yearly", "month": 4, "monthDay": 31}, "monthDay: no such day"),
    ({"frequency": "yearly", "month": 4, "monthDays": [1]}, "monthDays: not an option of a yearly"),
    ({"frequency": "daily", "timezone": "Mars/Olympus"}, "timezone: unknown time zone"),
    ({"frequency": "daily", "timezone": "europe/paris"}, "timezone: unknown time zone"),
    ({"frequency": "daily", "timezone": "../../../etc/passwd"}, "not an IANA time zone name"),
    ({"frequency": "daily", "timezone": "/etc/localtime"}, "not an IANA time zone name"),
    ({"frequency": "daily", "timezone": "Europe/Paris\x00"}, "not an IANA time zone name"),
    ({"frequency": "daily", "timezone": "Europe"}, "timezone: unknown time zone"),
    ({"frequency": "daily", "timezone": "A" * 10_000}, "not an IANA time zone name"),
    ({"frequency": "daily", "timezone": ""}, "not an IANA time zone name"),
    ({"frequency": "daily", "timezone": 1}, "timezone: expected an IANA time zone name"),
    ({"frequency": "daily", "start": "now"}, "start: 'now' is not an ISO datetime"),
    ({"frequency": "daily", "start": ["2026-01-01"]}, "start: expected an ISO datetime"),
    ({"frequency": "daily", "expiry": "never"}, "expiry: expected one of"),
    ({"frequency": "daily", "expiry": {}}, "expiry: expected one of"),
    ({"frequency": "daily", "expiry": {"never": True, "afterCount": 2}}, "expiry: expected one"),
    ({"frequency": "daily", "expiry": {"never": False}}, "expiry.never: expected true"),
    ({"frequency": "daily", "expiry": {"never": "yes"}}, "expiry.never: expected true"),
    ({"frequency": "daily", "expiry": {"afterCount": 0}}, "expiry.afterCount: int 0 is outside"),
    ({"frequency": "daily", "expiry": {"afterCount": -1}}, "expiry.afterCount: int -1 is outside"),
    ({"frequency": "daily", "expiry": {"afterCount": 10**30}}, "expiry.afterCount: int is out"),
    ({"frequency": "daily", "expiry": {"afterCount": "3"}}, "expiry.afterCount: expected a"),
    ({"frequency": "daily", "expiry": {"afterCount": 2.5}}, "expiry.afterCount: expected a"),
    ({"frequency": "daily", "expiry": {"until": "soon"}}, "expiry.until: 'soon' is not an ISO"),
    ({"frequency": "daily", "expiry": {"at": "2026-01-01"}}, "expiry: unknown kind 'at'"),
    (
        {"frequency": "daily", "start": "2026-02-01", "expiry": {"until": "2026-01-01"}},
        "expiry: 'until' is before 'start'",
    ),
]


@pytest.mark.parametrize(("options", "message"), HOSTILE)
def test_malformed_options_raise_a_schedule_error_that_names_the_option(
    options: Any, message: str
) -> None:
    with pytest.raises(ScheduleError) as caught:
        parse_schedule(options)
    assert message in caught.value.message


def test_schedule_errors_are_definition_errors_and_carry_the_option_name() -> None:
    with pytest.raises(DefinitionError) as caught:
        parse_schedule({"frequency": "weekly", "days": ["mon"], "times": ["8"]})
    assert isinstance(caught.value, ScheduleError)
    assert caught.value.code == "invalidSchedule"
    assert caught.value.details == {"option": "times[0]"}


def test_a_deeply_nested_value_is_refused_without_blowing_the_stack() -> None:
    nested: list[Any] = ["08:00"]
    for _ in range(100_000):
        nested = [nested]
    with pytest.raises(ScheduleError, match="times\\[0\\]: expected a time 'HH:MM', got list"):
        parse_schedule({"frequency": "daily", "times": nested})


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(["08:00", "24:00", "mon", "tue", "2h", "10mn", "2026-03-29T02:30"])
    | st.sampled_from(["Europe/Paris", "UTC", "-1", "never", "afterCount", "until"]),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["weekday", "nth", "never", "afterCount", "until"])
            | st.text(max_size=5),
            children,
            max_size=3,
        )
    ),
    max_leaves=12,
)


@st.composite
def json_options(draw: st.DrawFn) -> dict[str, Any]:
    frequency = draw(st.sampled_from(FREQUENCIES) | st.text(max_size=8))
    keys = sorted((COMMON_OPTIONS | FREQUENCY_OPTIONS.get(frequency, frozenset())) - {"frequency"})
    options: dict[str, Any] = draw(
        st.dictionaries(st.sampled_from(keys) | st.text(max_size=6), JSON, max_size=4)
    )
    options["frequency"] = frequency
    return options


@given(json_options())
def test_any_json_like_options_either_parse_or_raise_a_schedule_error(options: Any) -> None:
    try:
        schedule = parse_schedule(options)
    except ScheduleError:
        return
    got = preview(schedule, utc("2026-01-01T00:00"), 5)
    assert got == sorted(got)


@given(st.dictionaries(st.text(max_size=12), JSON, max_size=5) | JSON)
def test_any_json_like_value_at_all_only_ever_raises_a_schedule_error(options: Any) -> None:
    with contextlib.suppress(ScheduleError):
        parse_schedule(options)


@given(st.text(max_size=70))
def test_any_timezone_name_is_either_a_zone_or_a_schedule_error(name: str) -> None:
    try:
        schedule = parse_schedule({"frequency": "daily", "timezone": name})
    except ScheduleError:
        return
    assert schedule.timezone == name


# Property: whatever the rule and the zone, fires are increasing and ten minutes apart.

ZONES = [
    "UTC",
    "Europe/Paris",
    "America/New_York",
    "Australia/Lord_Howe",  # half-hour DST
    "America/Santiago",  # DST changes at midnight
    "Pacific/Chatham",
    "Asia/Kolkata",
]
WEEKDAY_NAMES = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


def spaced(minutes: Sequence[int]) -> list[str]:
    """Times of day kept only when ten minutes after the previous kept, and before midnight."""
    kept: list[int] = []
    for minute in sorted(set(minutes)):
        if not kept or minute - kept[-1] >= 10:
            kept.append(minute)
    while len(kept) > 1 and kept[0] + 1440 - kept[-1] < 10:
        kept.pop()
    return [f"{m // 60:02d}:{m % 60:02d}" for m in kept]


@st.composite
def valid_options(draw: st.DrawFn) -> dict[str, Any]:
    times = spaced(draw(st.lists(st.integers(0, 1439), min_size=1, max_size=30)))
    days = draw(st.lists(st.sampled_from(WEEKDAY_NAMES), min_size=1, max_size=7, unique=True))
    frequency = draw(st.sampled_from(FREQUENCIES))
    options: dict[str, Any] = {"frequency": frequency, "timezone": draw(st.sampled_from(ZONES))}
    weekday, nth = draw(st.sampled_from(WEEKDAY_NAMES)), draw(st.sampled_from([1, 2, 5, -1]))
    weekday_of_month = {"weekday": weekday, "nth": nth}
    if frequency == "once":
        options["at"] = draw(st.datetimes(datetime(2026, 1, 1), datetime(2027, 1, 1))).isoformat()
    elif frequency == "intraday" and draw(st.booleans()):
        # A first fire at 00:10 or later keeps the next day's first fire ten minutes away.
        first = draw(st.sampled_from(["00:10", "01:30", "02:15", "23:00"]))
        last = draw(st.sampled_from(["23:30", "23:59", "24:00"]))
        options |= {"every": f"{draw(st.integers(10, 600))}mn", "between": [first, last]}
    elif frequency in ("intraday", "daily"):
        options["times"] = times
        if draw(st.booleans()):
            options["days"] = days
    elif frequency == "weekly":
        options |= {"times": times, "days": days, "everyNWeeks": draw(st.integers(1, 3))}
        options["start"] = "2025-12-17T05:00"
    elif frequency == "monthly":
        options["times"] = times
        if draw(st.booleans()):
            month_days = st.sampled_from([1, 2, 15, 29, 31, -1, -2])
            options["monthDays"] = draw(st.lists(month_days, min_size=1, unique=True))
        else:
            options["weekdayOfMonth"] = weekday_of_month
    else:
        options |= {
            "month": draw(st.integers(1, 12)),
            "times": times,
            "weekdayOfMonth": weekday_of_month,
        }
    expiries = [{"never": True}, {"afterCount": 4}]
    if frequency != "once":
        expiries.append({"until": "2026-06-01T00:00"})
    if draw(st.booleans()):
        options["expiry"] = draw(st.sampled_from(expiries))
    return options


@given(
    valid_options(),
    st.datetimes(datetime(2025, 6, 1), datetime(2027, 6, 1), timezones=st.just(UTC)),
)
def test_preview_fires_are_strictly_increasing_and_at_least_ten_minutes_apart(
    options: dict[str, Any], after: datetime
) -> None:
    schedule = parse_schedule(options)
    got = preview(schedule, after, 20)
    assert all(fire > after and fire.tzinfo is UTC for fire in got)
    assert sound(got)
    # Asked again from any fire, the schedule carries on with the same next fire.
    for earlier, later in itertools.pairwise(got):
        assert next_fire(schedule, earlier) == later


@pytest.mark.parametrize("zone", ZONES)
def test_every_ten_minutes_stays_ten_minutes_apart_through_a_year_of_dst_changes(
    zone: str,
) -> None:
    schedule = parse_schedule({"frequency": "intraday", "every": "10mn", "timezone": zone})
    assert sound(preview(schedule, utc("2026-01-01T00:00"), 144 * 366))


def test_every_10mn_on_the_23_hour_spring_forward_day_fires_138_times() -> None:
    options = {"frequency": "intraday", "every": "10mn", **PARIS}
    # Local 2026-03-29 runs from 23:00 UTC the day before to 22:00 UTC.
    got = fires(options, "2026-03-28T22:59", 200)
    assert len([fire for fire in got if fire < utc("2026-03-29T22:00")]) == 138


def test_every_10mn_on_the_25_hour_fall_back_day_fires_144_times_and_pauses_an_hour() -> None:
    options = {"frequency": "intraday", "every": "10mn", **PARIS}
    # Local 2026-10-25 runs from 22:00 UTC the day before to 23:00 UTC.
    got = fires(options, "2026-10-24T21:59", 200)
    assert len([fire for fire in got if fire < utc("2026-10-25T23:00")]) == 144
    # 02:50 CEST (00:50 UTC) is followed by 03:00 CET (02:00 UTC).
    assert utc("2026-10-25T02:00") == got[got.index(utc("2026-10-25T00:50")) + 1]


def test_a_directly_built_schedule_works_like_a_parsed_one() -> None:
    schedule = Schedule(frequency="daily", times=(datetime(2026, 1, 1, 6).time(),))
    assert next_fire(schedule, utc("2026-01-01T00:00")) == utc("2026-01-01T06:00")
