"""Unit tests of the filter DSL: validation, evaluation and hostile input."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from worker.errors import DefinitionError, FilterError
from worker.filters import (
    MAX_DEPTH,
    MAX_LIST,
    MAX_NODES,
    MAX_STRING,
    OPS,
    evaluate,
    referenced_fields,
    validate_filter,
)

TODAY = date(2024, 6, 15)


def leaf(field: str, op: str, value: Any = None) -> dict[str, Any]:
    node: dict[str, Any] = {"field": field, "op": op}
    if value is not None:
        node["value"] = value
    return node


def matches(node: Any, vars: dict[str, Any], counts: dict[str, Any] | None = None) -> bool:
    return evaluate(node, {"vars": vars, "counts": counts or {}}, today=TODAY)


def nested_nots(depth: int) -> dict[str, Any]:
    node: dict[str, Any] = leaf("x", "eq", 1)
    for _ in range(depth - 1):
        node = {"not": node}
    return node


# -- the operator set --------------------------------------------------------------------


def test_the_operator_set_is_the_one_of_the_design() -> None:
    design = "eq ne lt le gt ge in notIn between contains startsWith endsWith isEmpty notEmpty"
    assert {*design.split(), "relativeDays"} == OPS


def test_filter_error_is_a_definition_error() -> None:
    assert issubclass(FilterError, DefinitionError)


# -- every operator, true and false ------------------------------------------------------

OPERATOR_CASES = [
    ("eq", "FR", "FR", True),
    ("eq", "FR", "fr", False),
    ("ne", "FR", "DE", True),
    ("ne", "FR", "FR", False),
    ("lt", 3, 5, True),
    ("lt", 5, 5, False),
    ("le", 5, 5, True),
    ("le", 6, 5, False),
    ("gt", 6, 5, True),
    ("gt", 5, 5, False),
    ("ge", 5, 5, True),
    ("ge", 4, 5, False),
    ("in", "FR", ["DE", "FR"], True),
    ("in", "IT", ["DE", "FR"], False),
    ("notIn", "IT", ["DE", "FR"], True),
    ("notIn", "FR", ["DE", "FR"], False),
    ("between", 5, [1, 10], True),
    ("between", 10, [1, 10], True),
    ("between", 11, [1, 10], False),
    ("contains", "newsletter-weekly", "weekly", True),
    ("contains", "newsletter-weekly", "Weekly", False),
    ("contains", ["a", "b"], "b", True),
    ("contains", ["a", "b"], "c", False),
    ("startsWith", "https://example.com", "https://", True),
    ("startsWith", "http://example.com", "https://", False),
    ("startsWith", "Hello", "hello", False),
    ("endsWith", "report.csv", ".csv", True),
    ("endsWith", "report.CSV", ".csv", False),
    ("relativeDays", "2024-06-18", {"days": [0, 7]}, True),
    ("relativeDays", "2024-06-30", {"days": [0, 7]}, False),
]


@pytest.mark.parametrize(("op", "actual", "value", "expected"), OPERATOR_CASES)
def test_each_operator_holds_or_not_on_a_plain_value(
    op: str, actual: Any, value: Any, expected: bool
) -> None:
    assert matches(leaf("x", op, value), {"x": actual}) is expected


@pytest.mark.parametrize(
    ("actual", "expected"),
    [(None, True), ("", True), ([], True), ({}, True), ("a", False), (0, False), ([0], False)],
)
def test_is_empty_and_not_empty_are_opposites(actual: Any, expected: bool) -> None:
    assert matches(leaf("x", "isEmpty"), {"x": actual}) is expected
    assert matches(leaf("x", "notEmpty"), {"x": actual}) is not expected


def test_every_operator_is_exercised_by_the_cases() -> None:
    covered = {case[0] for case in OPERATOR_CASES} | {"isEmpty", "notEmpty"}
    assert covered == OPS


def test_a_missing_field_is_empty() -> None:
    assert matches(leaf("missing", "isEmpty"), {})
    assert not matches(leaf("missing", "notEmpty"), {})


def test_is_empty_accepts_an_explicit_null_value() -> None:
    assert matches({"field": "x", "op": "isEmpty", "value": None}, {})


# -- combinators -------------------------------------------------------------------------


def test_all_needs_every_child_to_hold() -> None:
    node = {"all": [leaf("country", "eq", "FR"), leaf("age", "ge", 18)]}
    assert matches(node, {"country": "FR", "age": 30})
    assert not matches(node, {"country": "FR", "age": 12})


def test_any_needs_one_child_to_hold() -> None:
    node = {"any": [leaf("country", "eq", "FR"), leaf("country", "eq", "BE")]}
    assert matches(node, {"country": "BE"})
    assert not matches(node, {"country": "DE"})


def test_not_inverts_its_child() -> None:
    node = {"not": leaf("test", "eq", True)}
    assert matches(node, {"test": False})
    assert not matches(node, {"test": True})


def test_combinators_nest() -> None:
    node = {
        "all": [
            {"any": [leaf("country", "eq", "FR"), leaf("country", "eq", "BE")]},
            {"not": {"all": [leaf("test", "eq", True), leaf("counts.query1", "eq", 0)]}},
        ]
    }
    assert matches(node, {"country": "FR", "test": True}, {"query1": 5})
    assert not matches(node, {"country": "FR", "test": True}, {"query1": 0})
    assert not matches(node, {"country": "DE", "test": False}, {"query1": 5})


# -- field resolution --------------------------------------------------------------------


def test_fields_resolve_in_vars_counts_and_nested_objects() -> None:
    context = {
        "vars": {"segmentCode": "A1", "address": {"city": "Lyon"}, "vars": "itself"},
        "counts": {"query1": 937122},
    }
    assert evaluate(leaf("segmentCode", "eq", "A1"), context)
    assert evaluate(leaf("vars.segmentCode", "eq", "A1"), context)
    assert evaluate(leaf("counts.query1", "gt", 900000), context)
    assert evaluate(leaf("address.city", "eq", "Lyon"), context)
    assert evaluate(leaf("vars.address.city", "eq", "Lyon"), context)
    assert evaluate(leaf("vars", "eq", "itself"), context)


def test_a_path_through_a_non_object_is_missing() -> None:
    assert matches(leaf("address.city", "isEmpty"), {"address": "Lyon"})
    assert not matches(leaf("address.city", "eq", "Lyon"), {"address": "Lyon"})


def test_a_context_without_vars_or_counts_sees_every_field_missing() -> None:
    assert evaluate(leaf("counts.query1", "isEmpty"), {}, today=TODAY)
    assert not evaluate(leaf("x", "eq", 1), {"vars": "not an object"}, today=TODAY)


@pytest.mark.parametrize(
    ("op", "value"),
    [
        ("eq", 1),
        ("lt", 1),
        ("le", 1),
        ("gt", 1),
        ("ge", 1),
        ("in", [1]),
        ("notIn", [1]),
        ("between", [0, 2]),
        ("contains", "a"),
        ("startsWith", "a"),
        ("endsWith", "a"),
        ("relativeDays", {"days": [-1000, 1000]}),
    ],
)
def test_a_missing_field_matches_no_comparison(op: str, value: Any) -> None:
    assert not matches(leaf("missing", op, value), {})


def test_a_missing_field_is_not_equal_to_anything() -> None:
    assert matches(leaf("missing", "ne", "FR"), {})


def test_references_to_the_same_path_with_and_without_vars_agree() -> None:
    node = leaf("x", "eq", 1)
    assert matches(node, {"x": 1}) == matches(leaf("vars.x", "eq", 1), {"x": 1})


# -- types -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "actual", "value"),
    [
        ("eq", "abc", 1),
        ("lt", "abc", 1),
        ("gt", [1], 0),
        ("ge", {"a": 1}, 0),
        ("eq", True, 1),
        ("eq", 1, True),
        ("eq", 0, False),
        ("gt", True, 0),
        ("between", "abc", [1, 2]),
        ("startsWith", 12, "1"),
        ("endsWith", ["a"], "a"),
        ("contains", 123, "2"),
        ("contains", "abc", 1),
        ("eq", "2024-06-15", 20240615),
        ("lt", date(2024, 1, 1), 5),
    ],
)
def test_incompatible_types_make_the_leaf_false_without_raising(
    op: str, actual: Any, value: Any
) -> None:
    assert matches(leaf("x", op, value), {"x": actual}) is False


def test_ne_is_exactly_not_eq_even_across_types() -> None:
    assert matches(leaf("x", "ne", 1), {"x": "abc"})
    assert matches(leaf("x", "ne", 1), {"x": True})


def test_not_in_needs_a_present_field() -> None:
    assert not matches(leaf("x", "notIn", ["a"]), {})
    assert matches(leaf("x", "notIn", ["a"]), {"x": 1})


def test_booleans_compare_with_booleans() -> None:
    assert matches(leaf("test", "eq", True), {"test": True})
    assert matches(leaf("test", "in", [False]), {"test": False})
    assert not matches(leaf("test", "eq", "true"), {"test": True})


@pytest.mark.parametrize(
    ("op", "actual", "value", "expected"),
    [
        ("eq", "42", 42, True),
        ("eq", 42, "42.0", True),
        ("gt", "10", 9, True),
        ("lt", "10", 9, False),
        ("le", "-1.5e1", -15, True),
        ("between", "7", [1, 10], True),
        ("in", "3", [1, 2, 3], True),
        ("eq", "1_000", 1000, False),
        ("eq", " 42", 42, False),
        ("eq", "nan", 0, False),
        ("gt", "1e999", 0, False),
        ("eq", "9" * 5000, 0, False),
    ],
)
def test_numeric_strings_compare_as_numbers_with_numbers(
    op: str, actual: Any, value: Any, expected: bool
) -> None:
    assert matches(leaf("x", op, value), {"x": actual}) is expected


def test_two_numeric_strings_compare_as_strings() -> None:
    assert matches(leaf("code", "ne", "7"), {"code": "007"})
    assert matches(leaf("code", "lt", "9"), {"code": "10"})


def test_integers_and_floats_compare_exactly() -> None:
    assert matches(leaf("x", "eq", 1), {"x": 1.0})
    assert matches(leaf("x", "gt", 10**20), {"x": 10**20 + 1})


@pytest.mark.parametrize(
    ("op", "actual", "value", "expected"),
    [
        ("eq", "2019-04-03 08:17:19.100Z", "2019-04-03T08:17:19.1+00:00", True),
        ("eq", "2019-04-03T10:17:19+02:00", "2019-04-03T08:17:19Z", True),
        ("gt", "2019-04-03 08:17:19.100Z", "2019-04-03T08:17:19Z", True),
        ("lt", "2019-04-03T08:17:19", "2019-04-03T08:17:20Z", True),
        ("ge", datetime(2024, 1, 1, 12, tzinfo=UTC), "2024-01-01T11:00:00Z", True),
        ("lt", datetime(2024, 1, 1, 12), "2024-01-01T11:00:00Z", False),
        ("eq", date(2024, 1, 1), "2024-01-01", True),
        ("eq", "2024-01-01T23:59:00", "2024-01-01", True),
        ("le", "2024-01-01T23:59:00", "2024-01-01", True),
        ("lt", "2024-01-01T23:59:00", "2024-01-01", False),
        ("gt", "2024-01-02", "2024-01-01T23:59:00", True),
        ("between", "2024-03-10T08:00:00Z", ["2024-03-01", "2024-03-31"], True),
        ("between", "2024-04-01T00:00:00Z", ["2024-03-01", "2024-03-31"], False),
        ("eq", "2024-13-01", "2024-01-01", False),
        ("eq", "2024-01-01T10:00+25:00", "2024-01-01T10:00Z", False),
    ],
)
def test_iso_datetime_strings_compare_as_datetimes(
    op: str, actual: Any, value: Any, expected: bool
) -> None:
    assert matches(leaf("x", op, value), {"x": actual}) is expected


def test_datetime_strings_against_numbers_do_not_match() -> None:
    assert not matches(leaf("x", "gt", 2000), {"x": "2024-01-01"})


# -- relativeDays ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("actual", "days", "expected"),
    [
        ("2024-06-15", [0, 0], True),
        ("2024-06-22", [0, 7], True),
        ("2024-06-23", [0, 7], False),
        ("2024-06-14", [0, 7], False),
        ("2024-06-08", [-7, 0], True),
        ("2024-06-07T23:59:00Z", [-7, 0], False),
        (datetime(2024, 6, 16, 1, 0), [1, 1], True),
        (date(2024, 5, 16), [-30, -30], True),
        ("not a date", [-1000, 1000], False),
        (20240615, [-1000, 1000], False),
    ],
)
def test_relative_days_counts_days_from_today(actual: Any, days: list[int], expected: bool) -> None:
    node = leaf("x", "relativeDays", {"days": days})
    assert matches(node, {"x": actual}) is expected


def test_relative_days_uses_the_calendar_date_written_in_the_datetime() -> None:
    node = leaf("x", "relativeDays", {"days": [1, 1]})
    assert matches(node, {"x": "2024-06-16T00:30:00+02:00"})


def test_relative_days_defaults_to_today_in_utc() -> None:
    today = datetime.now(UTC).date().isoformat()
    node = leaf("x", "relativeDays", {"days": [0, 0]})
    assert evaluate(node, {"vars": {"x": today}})


def birthday_soon(days: list[int]) -> dict[str, Any]:
    return leaf("birthDate", "relativeDays", {"days": days, "anniversary": True})


@pytest.mark.parametrize(
    ("today", "birth", "expected"),
    [
        (date(2024, 6, 15), "1990-06-20", True),
        (date(2024, 6, 15), "1990-06-23", False),
        (date(2024, 6, 15), "1990-06-14", False),
        (date(2024, 12, 28), "1985-01-02", True),
        (date(2024, 12, 28), "1985-01-05", False),
        (date(2024, 12, 28), "1985-12-27", False),
        (date(2023, 2, 25), "2000-02-29", True),
        (date(2023, 2, 28), "2000-02-29", True),
        (date(2023, 3, 1), "2000-02-29", False),
        (date(2024, 2, 25), "2000-02-29", True),
        (date(2024, 2, 28), "2000-02-29T07:00:00", True),
    ],
)
def test_anniversary_matches_the_next_occurrence_across_year_end_and_feb_29(
    today: date, birth: str, expected: bool
) -> None:
    context = {"vars": {"birthDate": birth}, "counts": {}}
    assert evaluate(birthday_soon([0, 7]), context, today=today) is expected


def test_anniversary_on_feb_29_falls_on_feb_28_outside_leap_years() -> None:
    context = {"vars": {"birthDate": "2000-02-29"}}
    assert evaluate(birthday_soon([0, 0]), context, today=date(2023, 2, 28))
    assert not evaluate(birthday_soon([0, 0]), context, today=date(2024, 2, 28))
    assert evaluate(birthday_soon([0, 0]), context, today=date(2024, 2, 29))


def test_anniversary_looks_back_across_year_start() -> None:
    context = {"vars": {"birthDate": "1970-12-30"}}
    assert evaluate(birthday_soon([-7, -1]), context, today=date(2025, 1, 3))
    assert not evaluate(birthday_soon([-3, -1]), context, today=date(2025, 1, 3))


def test_anniversary_near_the_calendar_edges_does_not_overflow() -> None:
    context = {"vars": {"birthDate": "0001-01-01"}}
    assert evaluate(birthday_soon([0, 0]), context, today=date(1, 1, 1))
    assert evaluate(birthday_soon([1, 1]), context, today=date(9999, 12, 31)) is False


# -- validation: what is accepted --------------------------------------------------------


def test_the_design_example_filter_is_valid() -> None:
    validate_filter(
        {
            "all": [
                {"field": "country", "op": "eq", "value": "FR"},
                {"field": "segmentCode", "op": "eq", "value": "$(vars/segmentCode)"},
            ]
        }
    )


def test_a_filter_at_the_maximum_depth_is_valid() -> None:
    validate_filter(nested_nots(MAX_DEPTH))


def test_a_filter_with_the_maximum_node_count_is_valid() -> None:
    validate_filter({"any": [leaf("x", "eq", index) for index in range(MAX_NODES - 1)]})


def test_an_in_list_of_the_maximum_length_is_valid() -> None:
    validate_filter(leaf("x", "in", list(range(MAX_LIST))))


def test_referenced_fields_lists_every_leaf_field() -> None:
    node = {
        "all": [
            leaf("country", "eq", "FR"),
            {"not": {"any": [leaf("counts.query1", "gt", 0), leaf("profile.age", "lt", 18)]}},
            leaf("country", "ne", "BE"),
        ]
    }
    assert referenced_fields(node) == {"country", "counts.query1", "profile.age"}


def test_referenced_fields_validates_first() -> None:
    with pytest.raises(FilterError):
        referenced_fields({"field": "a;drop table", "op": "eq", "value": 1})


# -- validation: what is rejected, naming the path ---------------------------------------


def rejection(node: Any) -> str:
    with pytest.raises(FilterError) as caught:
        validate_filter(node)
    return str(caught.value)


def test_unknown_operator_is_rejected_naming_the_path() -> None:
    node = {"all": [leaf("a", "eq", 1), leaf("b", "eq", 2), leaf("c", "like", "%x%")]}
    assert rejection(node) == "filter.all[2].op: unknown operator 'like'"


def test_the_error_path_starts_at_the_given_place_and_is_in_the_details() -> None:
    with pytest.raises(FilterError) as caught:
        validate_filter({"not": leaf("a", "like", 1)}, where="conditions[0].when")
    assert str(caught.value).startswith("conditions[0].when.not.op: ")
    assert caught.value.details == {"path": "conditions[0].when.not.op"}


def test_the_first_error_in_document_order_is_reported() -> None:
    node = {"any": [leaf("a", "bad1", 1), leaf("b", "bad2", 2)]}
    assert "filter.any[0].op" in rejection(node)


@pytest.mark.parametrize(
    "node",
    [None, "x", 1, 1.5, True, [], [leaf("a", "eq", 1)], ("all",)],
)
def test_a_node_that_is_not_an_object_is_rejected(node: Any) -> None:
    assert rejection(node).startswith("filter: expected a filter object")


def test_a_child_that_is_not_an_object_is_rejected_naming_it() -> None:
    assert rejection({"all": [leaf("a", "eq", 1), "b"]}).startswith(
        "filter.all[1]: expected a filter object, got a string"
    )


@pytest.mark.parametrize(
    ("node", "message"),
    [
        ({}, "filter: empty filter"),
        ({"all": [leaf("a", "eq", 1)], "label": "x"}, "filter: unknown key 'label' next to 'all'"),
        ({**leaf("a", "eq", 1), "values": 1}, "filter: unknown key 'values'"),
        ({**leaf("a", "eq", 1), 1: 1}, "filter: unknown key a number"),
        ({"all": [], "any": []}, "filter: several combinators in one node: all, any"),
        ({"all": []}, "filter.all: empty list"),
        ({"any": leaf("a", "eq", 1)}, "filter.any: expected a list of filters, got an object"),
        ({"not": []}, "filter.not: expected a filter object, got a list"),
        ({"op": "eq", "value": 1}, "filter: missing 'field'"),
        ({"field": "a", "value": 1}, "filter: missing 'op'"),
        ({"field": "a", "op": "eq"}, "filter.value: missing value for 'eq'"),
        ({"field": "a", "op": "isEmpty", "value": ""}, "filter.value: 'isEmpty' takes no value"),
        (leaf("a", 7, 1), "filter.op: expected an operator name, got a number"),
        (leaf("a", "EQ", 1), "filter.op: unknown operator 'EQ'"),
    ],
)
def test_malformed_nodes_are_rejected_with_a_clear_message(node: Any, message: str) -> None:
    assert rejection(node).startswith(message)


@pytest.mark.parametrize(
    "field",
    [
        "a;drop table",
        "a; DROP TABLE profile; --",
        "",
        " a",
        "a.",
        ".a",
        "a..b",
        "1abc",
        "a-b",
        "profile.name'",
        "a\n",
        "é",
        "a[0]",
    ],
)
def test_injection_looking_or_malformed_field_names_are_rejected(field: str) -> None:
    message = rejection(leaf(field, "eq", 1))
    assert message.startswith("filter.field: ")


@pytest.mark.parametrize("field", [None, 1, True, ["a"], {"a": 1}])
def test_a_field_that_is_not_a_string_is_rejected(field: Any) -> None:
    assert rejection({"field": field, "op": "eq", "value": 1}).startswith(
        "filter.field: expected a non-empty string"
    )


def test_a_rejected_field_name_is_quoted_short_in_the_message() -> None:
    message = rejection(leaf("a;" + "x" * 5000, "eq", 1))
    assert len(message) < 200


@pytest.mark.parametrize(
    ("op", "value", "message"),
    [
        ("eq", None, "filter.value: missing value"),
        ("eq", [1], "filter.value: expected a string, number or boolean, got a list"),
        ("eq", {"a": 1}, "filter.value: expected a string, number or boolean, got an object"),
        ("eq", float("nan"), "filter.value: not a finite number"),
        ("eq", float("inf"), "filter.value: not a finite number"),
        ("lt", True, "filter.value: booleans have no order"),
        ("in", "FR", "filter.value: 'in' expects a list, got a string"),
        ("notIn", {"a": 1}, "filter.value: 'notIn' expects a list, got an object"),
        ("in", [1, None], "filter.value[1]: null is not a value"),
        ("in", [1, [2]], "filter.value[1]: expected a string, number or boolean"),
        ("between", [1], "filter.value: 'between' expects [low, high]"),
        ("between", [1, 2, 3], "filter.value: 'between' expects [low, high]"),
        ("between", "1..2", "filter.value: 'between' expects [low, high]"),
        ("between", [10, 1], "filter.value: low bound is greater than high bound"),
        ("between", [False, True], "filter.value[0]: booleans have no order"),
        ("startsWith", 1, "filter.value: 'startsWith' expects a string, got a number"),
        ("contains", [1], "filter.value: expected a string, number or boolean"),
    ],
)
def test_values_that_do_not_fit_the_operator_are_rejected(
    op: str, value: Any, message: str
) -> None:
    node = {"field": "x", "op": op} if value is None else leaf("x", op, value)
    assert rejection(node).startswith(message)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([0, 7], "filter.value: 'relativeDays' expects {\"days\": [min, max]"),
        ({"days": [0, 7], "when": 1}, "filter.value: unknown key 'when'"),
        ({}, "filter.value.days: expected [min, max], two integers"),
        ({"days": [0]}, "filter.value.days: expected [min, max], two integers"),
        ({"days": [0, 7.5]}, "filter.value.days: expected [min, max], two integers"),
        ({"days": [False, True]}, "filter.value.days: expected [min, max], two integers"),
        ({"days": "0,7"}, "filter.value.days: expected [min, max], two integers"),
        ({"days": [7, 0]}, "filter.value.days: min is greater than max"),
        ({"days": [0, 10**30]}, "filter.value.days: bounds must lie within"),
        ({"days": [0, 400], "anniversary": True}, "filter.value.days: bounds must lie within"),
        ({"days": [0, 7], "anniversary": "yes"}, "filter.value.anniversary: expected a boolean"),
    ],
)
def test_malformed_relative_days_are_rejected(value: Any, message: str) -> None:
    assert rejection(leaf("birthDate", "relativeDays", value)).startswith(message)


def test_too_deep_a_filter_is_rejected() -> None:
    assert "nested deeper than 16 levels" in rejection(nested_nots(MAX_DEPTH + 1))


def test_a_100000_deep_nesting_raises_filter_error_not_recursion_error() -> None:
    node: Any = leaf("x", "eq", 1)
    for index in range(100_000):
        node = {"not": node} if index % 2 else {"all": [node]}
    assert "nested deeper than" in rejection(node)
    with pytest.raises(FilterError):
        evaluate(node, {"vars": {}})
    with pytest.raises(FilterError):
        referenced_fields(node)


def test_2000_nodes_are_too_many() -> None:
    node = {"all": [leaf("x", "eq", index) for index in range(2000)]}
    assert rejection(node) == f"filter.all: filter has more than {MAX_NODES} nodes"


def test_too_many_nodes_spread_over_nested_lists_are_rejected() -> None:
    node = {"any": [{"all": [leaf("x", "eq", 1)] * 40} for _ in range(50)]}
    assert rejection(node) == f"filter: filter has more than {MAX_NODES} nodes"


def test_a_huge_in_list_is_rejected() -> None:
    assert rejection(leaf("x", "in", list(range(MAX_LIST + 1)))).startswith(
        f"filter.value: list longer than {MAX_LIST} items"
    )


def test_strings_over_the_limit_are_rejected() -> None:
    long = "x" * (MAX_STRING + 1)
    assert rejection(leaf("x", "eq", long)).startswith("filter.value: string longer than")
    assert rejection(leaf("x", "in", ["a", long])).startswith("filter.value[1]: string longer")
    assert rejection(leaf("x", "endsWith", long)).startswith("filter.value: string longer")
    assert rejection(leaf("a" * (MAX_STRING + 1), "eq", 1)).startswith("filter.field: longer")


def test_a_self_referencing_filter_is_rejected() -> None:
    node: dict[str, Any] = {"all": []}
    node["all"].append(node)
    assert "nested deeper than" in rejection(node)


def test_evaluate_rejects_an_invalid_filter_with_filter_error() -> None:
    with pytest.raises(FilterError, match="unknown operator 'like'"):
        evaluate(leaf("x", "like", "a"), {"vars": {"x": "a"}})


def test_evaluate_rejects_a_context_that_is_not_an_object() -> None:
    with pytest.raises(FilterError, match="context"):
        evaluate(leaf("x", "eq", 1), None)  # type: ignore[arg-type]


# -- properties --------------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(["2024-06-15", "2019-04-03 08:17:19.100Z", "42", "-1.5e3", "FR"])
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=30,
)
field_names = st.sampled_from(["x", "vars.x", "counts.x", "a.b", "y", "a;drop table", ""])
op_names = st.sampled_from([*sorted(OPS), "like", "EQ"])
relative_values = st.fixed_dictionaries(
    {"days": st.lists(st.integers(-400, 400), min_size=2, max_size=2).map(sorted)},
    optional={"anniversary": st.booleans()},
)
leaves = st.fixed_dictionaries(
    {"field": field_names | json_values, "op": op_names},
    optional={"value": json_values | relative_values},
)
filter_like = st.recursive(
    leaves | json_values,
    lambda children: (
        st.fixed_dictionaries({"all": st.lists(children, max_size=4)})
        | st.fixed_dictionaries({"any": st.lists(children, max_size=4)})
        | st.fixed_dictionaries({"not": children})
        | st.dictionaries(st.sampled_from(["all", "any", "not", "field", "op"]), children)
    ),
    max_leaves=20,
)
sample_strings = st.sampled_from(
    ["2024-06-15", "2024-06-20T10:00:00+02:00", "2019-04-03 08:17:19.100Z", "42", "FR", ""]
)
finite_numbers = st.integers() | st.floats(allow_nan=False, allow_infinity=False)
ordered_values = finite_numbers | st.text(max_size=20) | sample_strings
plain_values = st.booleans() | ordered_values
good_fields = st.sampled_from(["x", "vars.x", "counts.x", "a.b", "y"])
valid_leaves = st.one_of(
    st.builds(leaf, good_fields, st.sampled_from(["eq", "ne", "contains"]), plain_values),
    st.builds(leaf, good_fields, st.sampled_from(["lt", "le", "gt", "ge"]), ordered_values),
    st.builds(leaf, good_fields, st.sampled_from(["in", "notIn"]), st.lists(plain_values)),
    st.builds(
        leaf, good_fields, st.just("between"), st.lists(ordered_values, min_size=2, max_size=2)
    ),
    st.builds(leaf, good_fields, st.sampled_from(["startsWith", "endsWith"]), st.text(max_size=5)),
    st.builds(leaf, good_fields, st.sampled_from(["isEmpty", "notEmpty"])),
    st.builds(leaf, good_fields, st.just("relativeDays"), relative_values),
)
valid_filters = st.recursive(
    valid_leaves,
    lambda children: (
        st.fixed_dictionaries({"all": st.lists(children, min_size=1, max_size=4)})
        | st.fixed_dictionaries({"any": st.lists(children, min_size=1, max_size=4)})
        | st.fixed_dictionaries({"not": children})
    ),
    max_leaves=15,
)
contexts = st.fixed_dictionaries(
    {
        "vars": st.dictionaries(st.sampled_from(["x", "y", "a"]), json_values),
        "counts": st.dictionaries(st.sampled_from(["x"]), st.integers()),
    }
)
property_settings = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@property_settings
@given(node=json_values)
def test_any_json_value_is_either_a_valid_filter_or_a_filter_error(node: Any) -> None:
    try:
        validate_filter(node)
    except FilterError:
        return


@property_settings
@given(node=valid_filters | filter_like, context=contexts, today=st.dates())
def test_filter_shaped_input_validates_or_raises_filter_error_and_evaluates_to_a_bool(
    node: Any, context: dict[str, Any], today: date
) -> None:
    try:
        validate_filter(node)
    except FilterError:
        return
    assert isinstance(evaluate(node, context, today=today), bool)
    assert all(isinstance(field, str) and field for field in referenced_fields(node))


@property_settings
@given(node=valid_filters, context=contexts)
def test_not_of_a_valid_filter_is_its_negation(node: Any, context: dict[str, Any]) -> None:
    try:
        validate_filter(node)
    except FilterError:
        return
    assert evaluate({"not": node}, context, today=TODAY) is not evaluate(node, context, today=TODAY)


def test_between_bounds_from_placeholders_are_left_for_run_time() -> None:
    validate_filter({"field": "age", "op": "between", "value": ["$(vars/lo)", "$(vars/hi)"]})

    with pytest.raises(FilterError, match="low bound is greater"):
        validate_filter({"field": "age", "op": "between", "value": [9, 1]})
