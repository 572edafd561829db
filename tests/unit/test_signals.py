"""Unit tests of signal parameters: declarations checked, trigger values coerced or refused."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import pytest

from worker.errors import TriggerRefused
from worker.signals import (
    MAX_PARAMETERS,
    MAX_STRING,
    PARAMETER_TYPES,
    check_declaration,
    coerce,
    parse_datetime,
)

# The declaration of the seed's CMS signal.
CMS = {
    "audience": "string",
    "email": "string",
    "template": "string",
    "contentURL": "string",
    "test": "boolean",
    "segmentCode": "string",
    "attribute": "datetime",
    "count": "number",
}


def refusal(declared: dict[str, str], given: Any) -> TriggerRefused:
    """The TriggerRefused coerce() raises (the test fails if it accepts the parameters)."""
    with pytest.raises(TriggerRefused) as info:
        coerce(declared, given)
    return info.value


def one(kind: str, raw: Any) -> Any:
    """The coerced value of one parameter `p` declared with `kind`."""
    return coerce({"p": kind}, {"p": raw})["p"]


def refused_one(kind: str, raw: Any) -> TriggerRefused:
    """The refusal of one parameter `p` declared with `kind`, checked to name it."""
    error = refusal({"p": kind}, {"p": raw})
    assert str(error).startswith(f"'p' parameter must be a {kind}: ")
    assert error.details == {"parameter": "p", "expected": kind}
    assert error.status == 400
    return error


# The seed example.


def test_the_seed_example_is_coerced_to_typed_values() -> None:
    given = {
        "audience": "all",
        "email": "a@example.com",
        "template": "welcome",
        "contentURL": "https://cms.example.com/page",
        "test": "true",
        "segmentCode": "vip",
        "attribute": "2019-04-03 08:17:19.100Z",
    }

    values = coerce(CMS, given)

    assert values == {
        "audience": "all",
        "email": "a@example.com",
        "template": "welcome",
        "contentURL": "https://cms.example.com/page",
        "test": True,
        "segmentCode": "vip",
        "attribute": "2019-04-03T08:17:19.100000+00:00",
    }


def test_an_undeclared_parameter_is_refused_with_the_platform_message() -> None:
    error = refusal({"audience": "string"}, {"audience": "all", "contentURL": "https://x"})

    assert str(error) == "'contentURL' parameter isn't defined in signal activity"
    assert error.message == "'contentURL' parameter isn't defined in signal activity"
    assert error.details == {"parameter": "contentURL"}
    assert error.status == 400


def test_no_parameters_at_all_coerce_to_nothing() -> None:
    assert coerce(CMS, None) == {}
    assert coerce(CMS, {}) == {}


def test_declared_parameters_may_be_left_out() -> None:
    assert coerce(CMS, {"test": False}) == {"test": False}


@pytest.mark.parametrize("given", [[], ["test"], "test=true", 5, True, 1.5])
def test_parameters_that_are_not_an_object_are_refused(given: Any) -> None:
    error = refusal(CMS, given)

    assert str(error) == "'parameters' must be an object"
    assert error.status == 400


@pytest.mark.parametrize("kind", sorted(PARAMETER_TYPES))
def test_a_null_value_is_kept_as_null_for_every_type(kind: str) -> None:
    assert one(kind, None) is None


# string


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("hello", "hello"), ("", ""), ("été ✓", "été ✓"), (42, "42"), (-1.5, "-1.5")],
)
def test_a_string_parameter_takes_text_and_numbers_as_text(raw: Any, expected: str) -> None:
    assert one("string", raw) == expected


@pytest.mark.parametrize("raw", [True, False, [], ["a"], {"a": 1}])
def test_a_string_parameter_refuses_booleans_lists_and_objects(raw: Any) -> None:
    assert "expected a string" in str(refused_one("string", raw))


def test_a_string_of_the_maximum_length_is_accepted() -> None:
    assert len(one("string", "x" * MAX_STRING)) == MAX_STRING == 16_384


def test_a_string_over_the_maximum_length_is_refused() -> None:
    error = refused_one("string", "x" * (MAX_STRING + 1))

    assert "longer than 16384 characters" in str(error)


# number


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (42, 42),
        (-7, -7),
        (0, 0),
        (2.5, 2.5),
        ("42", 42),
        ("-7", -7),
        ("2.5", 2.5),
        (".5", 0.5),
        ("1e3", 1000.0),
        ("1E-2", 0.01),
        (" 12 ", 12),
    ],
)
def test_a_number_parameter_takes_numbers_and_numbers_as_strings(raw: Any, expected: Any) -> None:
    value = one("number", raw)

    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize("raw", [True, False, "true"])
def test_a_number_parameter_refuses_booleans(raw: Any) -> None:
    refused_one("number", raw)


def test_a_boolean_is_refused_as_a_number_with_a_clear_reason() -> None:
    assert "expected a number, got a boolean" in str(refused_one("number", True))


@pytest.mark.parametrize("raw", [math.nan, math.inf, -math.inf])
def test_a_number_parameter_refuses_non_finite_floats(raw: float) -> None:
    assert "not a finite number" in str(refused_one("number", raw))


@pytest.mark.parametrize(
    "raw", ["NaN", "nan", "Infinity", "-Infinity", "inf", "+inf", "1e999", "-1e999"]
)
def test_a_number_parameter_refuses_non_finite_numbers_written_as_strings(raw: str) -> None:
    refused_one("number", raw)


@pytest.mark.parametrize("raw", ["", "abc", "1,5", "0x10", "1.2.3", "12abc", [1], {"n": 1}])
def test_a_number_parameter_refuses_what_is_not_a_number(raw: Any) -> None:
    refused_one("number", raw)


def test_a_number_string_longer_than_64_characters_is_refused() -> None:
    assert one("number", "9" * 64) == int("9" * 64)

    assert "expected a number" in str(refused_one("number", "9" * 65))


# boolean


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (True, True),
        (False, False),
        ("true", True),
        ("false", False),
        ("TRUE", True),
        ("fAlSe", False),
    ],
)
def test_a_boolean_parameter_takes_booleans_and_their_names(raw: Any, expected: bool) -> None:
    assert one("boolean", raw) is expected


@pytest.mark.parametrize("raw", [1, 0, "1", "0", "yes", "no", "", " true", [], {}])
def test_a_boolean_parameter_refuses_anything_else(raw: Any) -> None:
    assert "expected true or false" in str(refused_one("boolean", raw))


# datetime


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2019-04-03 08:17:19.100Z", "2019-04-03T08:17:19.100000+00:00"),
        ("2019-04-03T08:17:19Z", "2019-04-03T08:17:19+00:00"),
        ("2019-04-03T08:17:19", "2019-04-03T08:17:19+00:00"),
        ("2019-04-03T08:17", "2019-04-03T08:17:00+00:00"),
        ("2019-04-03", "2019-04-03T00:00:00+00:00"),
        ("2019-04-03T10:17:19+02:00", "2019-04-03T08:17:19+00:00"),
        ("2019-04-03T10:17:19+0200", "2019-04-03T08:17:19+00:00"),
        ("2019-04-03T02:47:19.5-05:30", "2019-04-03T08:17:19.500000+00:00"),
        ("2019-04-03T00:30:00+01:00", "2019-04-02T23:30:00+00:00"),
        ("  2019-04-03T08:17:19Z  ", "2019-04-03T08:17:19+00:00"),
    ],
)
def test_a_datetime_parameter_is_normalised_to_utc(raw: str, expected: str) -> None:
    assert one("datetime", raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "yesterday",
        "04/03/2019",
        "2019-4-3",
        "2019-13-01",
        "2019-02-30",
        "2019-04-03T25:00",
        "2019-04-03T08:61",
        "2019-04-03T08:17:19+05",
        "2019-04-03T08:17:19+24:00",
        "2019-04-03T08:17:19.1234567Z",
        "2019-04-03T08:17:19 UTC",
        "0000-01-01",
        "20190403",
        "٢٠١٩-٠٤-٠٣",
        20190403,
        1554279439.1,
        True,
        [],
    ],
)
def test_a_malformed_datetime_is_refused(raw: Any) -> None:
    refused_one("datetime", raw)


@pytest.mark.parametrize("raw", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_a_datetime_that_leaves_the_calendar_in_utc_is_refused(raw: str) -> None:
    refused_one("datetime", raw)


def test_parse_datetime_returns_an_aware_utc_datetime() -> None:
    value = parse_datetime("2019-04-03 10:17:19.100+02:00")

    assert value == dt.datetime(2019, 4, 3, 8, 17, 19, 100_000, tzinfo=dt.UTC)
    assert value.utcoffset() == dt.timedelta(0)


def test_parse_datetime_reads_a_naive_value_as_utc() -> None:
    assert parse_datetime("2019-04-03T08:17").tzinfo is dt.UTC


@pytest.mark.parametrize("raw", [None, 0, dt.datetime(2019, 4, 3, tzinfo=dt.UTC), b"2019-04-03"])
def test_parse_datetime_takes_only_strings(raw: Any) -> None:
    with pytest.raises(ValueError, match="expected an ISO 8601 date-time"):
        parse_datetime(raw)


def test_a_refusal_names_the_first_bad_parameter() -> None:
    error = refusal(CMS, {"audience": "all", "count": "many", "test": "maybe"})

    assert error.details["parameter"] == "count"


# Declarations.


def test_a_declaration_of_every_type_is_fine() -> None:
    assert check_declaration(CMS) is None
    assert check_declaration({}) is None
    assert check_declaration({"_private": "number", "x" * 64: "string"}) is None


def test_the_parameter_types_are_the_four_of_the_design() -> None:
    assert {"string", "number", "boolean", "datetime"} == PARAMETER_TYPES


@pytest.mark.parametrize(
    ("declaration", "problem"),
    [
        (["string"], "must map parameter names to types"),
        ("string", "must map parameter names to types"),
        (None, "must map parameter names to types"),
        ({"a": "int"}, "parameter 'a' has type 'int'; use one of"),
        ({"a": "String"}, "parameter 'a' has type 'String'"),
        ({"a": None}, "parameter 'a' has type None"),
        ({"a": 1}, "parameter 'a' has type 1"),
        ({"1a": "string"}, "invalid parameter name '1a'"),
        ({"a-b": "string"}, "invalid parameter name 'a-b'"),
        ({"": "string"}, "invalid parameter name ''"),
        ({"x" * 65: "string"}, "invalid parameter name"),
        ({1: "string"}, "invalid parameter name 1"),
        ({f"p{i}": "string" for i in range(MAX_PARAMETERS + 1)}, "at most 100 parameters"),
    ],
)
def test_a_bad_declaration_says_why(declaration: Any, problem: str) -> None:
    assert problem in (check_declaration(declaration) or "")


def test_the_maximum_number_of_parameters_may_be_declared() -> None:
    assert check_declaration({f"p{i}": "string" for i in range(MAX_PARAMETERS)}) is None


@pytest.mark.parametrize("kind", [["string"], {"type": "string"}])
def test_a_declared_type_that_is_a_list_or_object_is_refused(kind: Any) -> None:
    assert check_declaration({"a": kind}) is not None


def test_a_parameter_name_with_a_trailing_newline_is_refused() -> None:
    assert check_declaration({"segment\n": "string"}) is not None
