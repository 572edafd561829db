"""Unit tests of `$(vars/x)` placeholder substitution."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.errors import FilterError
from worker.expressions import MAX_DEPTH, find_placeholders, substitute

VARS: dict[str, Any] = {
    "segmentCode": "A1",
    "count": 42,
    "test": False,
    "tags": ["a", "b"],
    "nothing": None,
    "profile": {"address": {"city": "Lyon"}, "age": 30},
}


def nested_lists(depth: int, inner: Any = "$(vars/segmentCode)") -> Any:
    value: Any = inner
    for _ in range(depth):
        value = [value]
    return value


def test_a_whole_string_placeholder_becomes_the_typed_value() -> None:
    assert substitute("$(vars/count)", VARS) == 42
    assert substitute("$(vars/test)", VARS) is False
    assert substitute("$(vars/tags)", VARS) == ["a", "b"]
    assert substitute("$(vars/segmentCode)", VARS) == "A1"


def test_a_whole_string_placeholder_of_a_missing_variable_becomes_none() -> None:
    assert substitute("$(vars/unknown)", VARS) is None
    assert substitute("$(vars/nothing)", VARS) is None


def test_a_placeholder_inside_a_longer_string_is_replaced_by_its_text() -> None:
    assert substitute("code=$(vars/segmentCode)&n=$(vars/count)", VARS) == "code=A1&n=42"
    assert substitute("test: $(vars/test)", VARS) == "test: False"
    assert substitute(" $(vars/segmentCode)", VARS) == " A1"


def test_a_missing_variable_inside_a_longer_string_is_replaced_by_nothing() -> None:
    assert substitute("[$(vars/unknown)]", VARS) == "[]"
    assert substitute("[$(vars/nothing)]", VARS) == "[]"


def test_a_nested_path_walks_objects() -> None:
    assert substitute("$(vars/profile/address/city)", VARS) == "Lyon"
    assert substitute("age $(vars/profile/age)", VARS) == "age 30"
    assert substitute("$(vars/profile/address/zip)", VARS) is None
    assert substitute("$(vars/segmentCode/length)", VARS) is None


def test_dicts_and_lists_are_walked_and_keys_kept() -> None:
    value = {
        "filter": {"all": [{"field": "segmentCode", "op": "eq", "value": "$(vars/segmentCode)"}]},
        "$(vars/count)": ["$(vars/count)", 1, None, True],
    }
    assert substitute(value, VARS) == {
        "filter": {"all": [{"field": "segmentCode", "op": "eq", "value": "A1"}]},
        "$(vars/count)": [42, 1, None, True],
    }


def test_substitution_leaves_the_input_untouched() -> None:
    value = {"a": ["$(vars/count)"]}
    substitute(value, VARS)
    assert value == {"a": ["$(vars/count)"]}


def test_non_container_non_string_values_are_returned_as_they_are() -> None:
    for value in (None, 1, 1.5, True):
        assert substitute(value, VARS) == value


@pytest.mark.parametrize(
    "text",
    [
        "$(vars/)",
        "$(foo)",
        "$(vars/a b)",
        "$vars/count",
        "$(vars/count",
        "$(VARS/count)",
        "{{ vars.x }}",
    ],
)
def test_text_that_only_looks_like_a_placeholder_is_kept(text: str) -> None:
    assert substitute(text, VARS) == text
    assert find_placeholders(text) == set()


def test_substituted_text_is_not_substituted_again() -> None:
    assert substitute("x$(vars/a)", {"a": "$(vars/b)", "b": "no"}) == "x$(vars/b)"


def test_find_placeholders_lists_the_paths_used() -> None:
    value = {
        "subject": "Hello $(vars/firstName) from $(vars/profile/address/city)",
        "filter": {"all": [{"field": "x", "op": "eq", "value": "$(vars/segmentCode)"}]},
        "list": ["$(vars/firstName)", 3],
    }
    assert find_placeholders(value) == {"firstName", "profile/address/city", "segmentCode"}


def test_find_placeholders_of_a_plain_value_is_empty() -> None:
    assert find_placeholders(None) == set()
    assert find_placeholders({"a": [1, "b"]}) == set()


def test_a_structure_at_the_depth_limit_is_accepted() -> None:
    assert substitute(nested_lists(MAX_DEPTH), VARS) == nested_lists(MAX_DEPTH, "A1")
    assert find_placeholders(nested_lists(MAX_DEPTH)) == {"segmentCode"}


def test_a_structure_past_the_depth_limit_raises_filter_error() -> None:
    with pytest.raises(FilterError, match="nested deeper than 32 levels"):
        substitute(nested_lists(MAX_DEPTH + 1), VARS)
    with pytest.raises(FilterError, match="nested deeper than 32 levels"):
        find_placeholders(nested_lists(MAX_DEPTH + 1))


def test_a_100000_deep_structure_raises_filter_error_not_recursion_error() -> None:
    deep: Any = {"leaf": "$(vars/count)"}
    for _ in range(100_000):
        deep = {"child": [deep]}
    with pytest.raises(FilterError):
        substitute(deep, VARS)
    with pytest.raises(FilterError):
        find_placeholders(deep)


def test_a_self_referencing_structure_raises_filter_error() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(FilterError):
        substitute(loop, VARS)
    with pytest.raises(FilterError):
        find_placeholders(loop)


def test_a_deep_variable_rendered_inside_a_string_raises_filter_error() -> None:
    deep: Any = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(FilterError):
        substitute("value: $(vars/deep)", {"deep": deep})


def test_a_deep_variable_used_whole_is_returned_as_it_is() -> None:
    deep: Any = []
    for _ in range(100_000):
        deep = [deep]
    assert substitute("$(vars/deep)", {"deep": deep}) is deep


def test_an_integer_too_long_to_print_raises_filter_error() -> None:
    with pytest.raises(FilterError, match="cannot be rendered"):
        substitute("n=$(vars/n)", {"n": 10**5000})


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=10)
    | st.sampled_from(["$(vars/a)", "x $(vars/b/c) y", "$(vars/missing)"]),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=25,
)


@settings(max_examples=200, deadline=None)
@given(value=json_values, vars=st.dictionaries(st.sampled_from(["a", "b"]), json_values))
def test_substitution_of_any_json_value_leaves_no_known_placeholder(
    value: Any, vars: dict[str, Any]
) -> None:
    try:
        result = substitute(value, vars)
    except FilterError:
        return
    # Substituted values may themselves contain placeholder text, so only check the
    # input's placeholders are gone when the variables hold none.
    if not find_placeholders(vars):
        assert find_placeholders(result) == set()
