"""Unit tests of workflow definitions: valid graphs parse, every invalid one is refused by name."""

from __future__ import annotations

import contextlib
import json
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tests.plugins  # noqa: F401  (registers the noop and effect activity types)
import worker.samples
from worker import registry
from worker.definitions import (
    MAX_ACTIVITIES,
    MAX_DEFINITION_BYTES,
    WORKFLOW_KEYS,
    Definition,
    load_text,
    parse,
)
from worker.errors import DefinitionError

SAMPLES = sorted(Path(worker.samples.__file__).parent.glob("*.yaml"))


def act(
    name: str, type_: str, transitions: dict[str, Any] | None = None, **options: Any
) -> dict[str, Any]:
    """One activity of a definition body."""
    body: dict[str, Any] = {"name": name, "type": type_, **options}
    if transitions is not None:
        body["transitions"] = transitions
    return body


def workflow(*activities: dict[str, Any], **keys: Any) -> dict[str, Any]:
    """A definition body with id `wf` unless `keys` says otherwise."""
    return {"id": "wf", "activities": list(activities), **keys}


def start(to: str | list[str] = "end1") -> dict[str, Any]:
    return act("start1", "start", {"done": to})


def end(name: str = "end1", **options: Any) -> dict[str, Any]:
    return act(name, "end", **options)


def refused(body: Any) -> DefinitionError:
    """The DefinitionError parse() raises for `body` (the test fails if it accepts it)."""
    with pytest.raises(DefinitionError) as info:
        parse(body)
    return info.value


def refused_naming(body: Any, activity: str) -> DefinitionError:
    """The DefinitionError for `body`, checked to name `activity` in its message and fields."""
    error = refused(body)
    assert error.activity == activity
    assert error.details["activity"] == activity
    assert str(error).startswith(f"activity '{activity}': ")
    return error


def condition(name: str, when: Any = None) -> dict[str, Any]:
    return {"name": name, "when": when or {"field": "vars.x", "op": "eq", "value": 1}}


# The example of DESIGN section 3, with the types that exist today: a signal and a start
# reaching the same test (one through a jump), a fork into two waits joined by an andJoin,
# and a scheduler ending in an end that triggers another workflow's signal.
DESIGN_EXAMPLE = """
id: cmsSend            # internal name, unique per organization; used in API URLs
label: Send from the CMS
onError: suspend
consecutiveErrors: 5
historyDays: 60
description: The CMS triggers it with typed parameters.
activities:
  - name: signal1
    type: externalSignal
    parameters: {audience: string, segmentCode: string, contentURL: string, test: boolean}
    transitions: {done: test1}
  - name: start1
    type: start
    transitions: {done: jump1}
  - name: jump1
    type: jump
    target: test1
  - name: test1
    type: test
    conditions:
      - name: isTest
        when: {all: [{field: vars.test, op: eq, value: true},
                     {field: vars.segmentCode, op: notEmpty}]}
    transitions: {isTest: end2, default: fork1}
  - name: fork1
    type: fork
    transitions: {done: [wait1, wait2]}
  - name: wait1
    type: wait
    duration: 1d 8h 30mn
    transitions: {done: andJoin1}
  - name: wait2
    type: wait
    until: "2030-01-01T00:00:00Z"
    onError: ignore
    execution: suspended
    transitions: {done: andJoin1}
  - name: andJoin1
    type: andJoin
    transitions: {done: end1}
  - name: sched1
    type: scheduler
    frequency: daily
    times: ["04:00"]
    timezone: Europe/Paris
    transitions: {done: end3}
  - {name: end1, type: end, terminate: true}
  - {name: end2, type: end}
  - name: end3
    type: end
    signal:
      workflow: nightlyBatch
      activity: signal1
      parameters: {segment: "$(vars/segmentCode)"}
"""


# Valid definitions.


def test_the_design_example_parses_with_its_workflow_options() -> None:
    definition = parse(load_text(DESIGN_EXAMPLE))

    assert definition.id == "cmsSend"
    assert definition.label == "Send from the CMS"
    assert definition.on_error == "suspend"
    assert definition.consecutive_errors == 5
    assert definition.history_days == 60
    assert " ".join(definition.activities) == (
        "signal1 start1 jump1 test1 fork1 wait1 wait2 andJoin1 sched1 end1 end2 end3"
    )


def test_the_design_example_begins_at_its_start_signal_and_scheduler() -> None:
    definition = parse(load_text(DESIGN_EXAMPLE))

    assert [a.name for a in definition.entries()] == ["signal1", "start1", "sched1"]


def test_edges_list_transitions_and_the_jump_target() -> None:
    definition = parse(load_text(DESIGN_EXAMPLE))

    assert definition.edges("fork1") == ["wait1", "wait2"]
    assert sorted(definition.edges("test1")) == ["end2", "fork1"]
    assert definition.edges("jump1") == ["test1"]
    assert definition.edges("end1") == []


def test_inbound_counts_count_distinct_predecessors() -> None:
    definition = parse(load_text(DESIGN_EXAMPLE))

    counts = definition.inbound_counts()

    assert counts["test1"] == 2  # from signal1 and, through the jump, from start1
    assert counts["andJoin1"] == 2
    assert counts["signal1"] == counts["start1"] == counts["sched1"] == 0
    assert counts["end3"] == 1


def test_an_activity_error_policy_overrides_the_workflow_one() -> None:
    definition = parse(load_text(DESIGN_EXAMPLE))

    assert definition.error_policy("wait2") == "ignore"
    assert definition.error_policy("wait1") == "suspend"
    assert definition.activity("wait2").execution == "suspended"
    assert definition.activity("wait1").execution == "normal"


def test_options_are_kept_apart_from_the_activity_keys() -> None:
    definition = parse(load_text(DESIGN_EXAMPLE))

    wait2 = definition.activity("wait2")
    assert dict(wait2.options) == {"until": "2030-01-01T00:00:00Z"}
    assert dict(wait2.transitions) == {"done": ("andJoin1",)}
    assert definition.type_of("wait2").name == "wait"


def test_the_json_form_of_a_definition_parses_the_same_as_its_yaml_form() -> None:
    from_yaml = parse(load_text(DESIGN_EXAMPLE))

    from_json = parse(load_text(json.dumps(dict(from_yaml.body))))

    assert from_json == from_yaml


def test_a_minimal_definition_takes_the_documented_defaults() -> None:
    definition = parse(workflow(start(), end()))

    assert definition.label == "wf"
    assert definition.on_error == "suspend"
    assert definition.consecutive_errors == 3
    assert definition.history_days == 30
    assert isinstance(definition, Definition)


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_every_sample_workflow_parses(path: Path) -> None:
    definition = parse(load_text(path.read_text(encoding="utf-8")))

    assert definition.id == path.stem
    assert definition.entries()


def test_the_samples_are_the_three_documented_workflows() -> None:
    assert [p.name for p in SAMPLES] == ["cmsSend.yaml", "nightlyBatch.yaml", "profileImport.yaml"]


def test_the_test_plugin_types_are_registered() -> None:
    assert {"noop", "effect"} <= set(registry.names())


def test_a_test_plugin_activity_takes_its_declared_options() -> None:
    body = workflow(
        start("effect1"),
        act("effect1", "effect", {"done": "noop1"}, seconds=0.5, failUnlessFile="/tmp/x"),
        act("noop1", "noop", {"done": "end1"}),
        end(),
    )

    assert parse(body).activity("effect1").options == {"seconds": 0.5, "failUnlessFile": "/tmp/x"}


def test_a_transition_may_name_one_activity_or_a_list() -> None:
    body = workflow(
        start("fork1"),
        act("fork1", "fork", {"done": ["end1", "end2"]}),
        end("end1"),
        end("end2"),
    )

    assert parse(body).activity("fork1").transitions == {"done": ("end1", "end2")}


# Types, options and outlets.


def test_an_unknown_activity_type_is_refused_listing_the_known_ones() -> None:
    error = refused_naming(
        workflow(start("pigeon1"), act("pigeon1", "carrierPigeon"), end()), "pigeon1"
    )

    assert "unknown activity type 'carrierPigeon'" in str(error)
    assert "andJoin" in str(error) and "externalSignal" in str(error)


def test_a_missing_activity_type_is_refused() -> None:
    error = refused_naming(workflow(start(), {"name": "end1"}), "end1")

    assert "'type' is required" in str(error)


def test_an_unknown_option_is_refused_listing_the_known_ones() -> None:
    body = workflow(start("wait1"), act("wait1", "wait", {"done": "end1"}, delay="1h"), end())

    error = refused_naming(body, "wait1")

    assert "unknown option 'delay' for type 'wait'" in str(error)
    assert "(known: duration, timezone, until)" in str(error)


def test_an_option_on_a_type_without_options_says_there_are_none() -> None:
    body = workflow(start("noop1"), act("noop1", "noop", {"done": "end1"}, speed=1), end())

    error = refused_naming(body, "noop1")

    assert "(known: none)" in str(error)


@pytest.mark.parametrize(
    ("option", "value", "kinds"),
    [
        ("seconds", True, "int/float"),
        ("seconds", False, "int/float"),
        ("seconds", "1", "int/float"),
        ("seconds", None, "int/float"),
        ("seconds", [1], "int/float"),
        ("failUnlessFile", 3, "str"),
        ("failUnlessFile", True, "str"),
    ],
)
def test_an_option_of_the_wrong_type_is_refused(option: str, value: Any, kinds: str) -> None:
    body = workflow(
        start("effect1"), act("effect1", "effect", {"done": "end1"}, **{option: value}), end()
    )

    error = refused_naming(body, "effect1")

    assert f"option '{option}' must be {kinds}" in str(error)


@pytest.mark.parametrize("value", [1, "true", None])
def test_a_boolean_option_refuses_anything_but_a_boolean(value: Any) -> None:
    error = refused_naming(workflow(start(), end(terminate=value)), "end1")

    assert "option 'terminate' must be bool" in str(error)


def test_a_required_option_is_refused_when_missing() -> None:
    error = refused_naming(workflow(start("jump1"), act("jump1", "jump")), "jump1")

    assert "option 'target' is required" in str(error)


def test_an_outlet_the_type_does_not_have_is_refused_listing_the_allowed_ones() -> None:
    body = workflow(act("start1", "start", {"result": "end1"}), end())

    error = refused_naming(body, "start1")

    assert "unknown outlet 'result' for type 'start' (allowed: ['done'])" in str(error)


def test_an_end_activity_has_no_outlet() -> None:
    body = workflow(start(), end(transitions={"done": "end2"}), end("end2"))

    error = refused_naming(body, "end1")

    assert "unknown outlet 'done' for type 'end' (allowed: [])" in str(error)


def test_a_test_outlet_must_be_a_condition_name_or_default() -> None:
    body = workflow(
        start("test1"),
        act("test1", "test", {"isVip": "end1", "other": "end1"}, conditions=[condition("isVip")]),
        end(),
    )

    error = refused_naming(body, "test1")

    assert "unknown outlet 'other' for type 'test' (allowed: ['default', 'isVip'])" in str(error)


def test_a_test_without_a_default_has_no_default_outlet() -> None:
    body = workflow(
        start("test1"),
        act(
            "test1",
            "test",
            {"a": "end1", "default": "end1"},
            conditions=[condition("a")],
            default=False,
        ),
        end(),
    )

    error = refused_naming(body, "test1")

    assert "unknown outlet 'default'" in str(error)


# Graph shape.


def test_a_transition_to_an_unknown_activity_is_refused() -> None:
    error = refused_naming(workflow(start("nowhere"), end()), "start1")

    assert "transition to unknown activity 'nowhere'" in str(error)


def test_a_jump_to_an_unknown_activity_is_refused() -> None:
    error = refused_naming(
        workflow(start("jump1"), act("jump1", "jump", target="nowhere")), "jump1"
    )

    assert "transition to unknown activity 'nowhere'" in str(error)


def test_an_activity_leading_to_itself_is_refused() -> None:
    error = refused_naming(workflow(start("jump1"), act("jump1", "jump", target="jump1")), "jump1")

    assert "cannot lead to itself" in str(error)


def test_an_unreachable_activity_is_refused() -> None:
    # Given a fork and a wait that lead to each other, and to an end, but that no entry reaches
    body = workflow(
        start(),
        end(),
        act("fork1", "fork", {"done": ["wait1", "end2"]}),
        act("wait1", "wait", {"done": "fork1"}, duration="1h"),
        end("end2"),
    )

    # When it is parsed
    error = refused(body)

    # Then the first unreachable activity is named
    assert error.activity == "fork1"
    assert "is unreachable from any start activity" in str(error)


def test_an_activity_without_inbound_transition_that_is_not_an_entry_is_refused() -> None:
    body = workflow(start(), end(), act("fork1", "fork", {"done": "end1"}))

    error = refused_naming(body, "fork1")

    assert "has no inbound transition" in str(error)
    assert "only start, externalSignal and scheduler" in str(error)


def test_an_empty_target_list_leaves_its_activity_without_inbound() -> None:
    error = refused_naming(workflow(start([]), end()), "end1")

    assert "has no inbound transition" in str(error)


def test_a_workflow_whose_every_activity_has_an_inbound_transition_has_no_entry() -> None:
    body = workflow(
        act("fork1", "fork", {"done": "wait1"}),
        act("wait1", "wait", {"done": "fork1"}, duration="1h"),
    )

    error = refused(body)

    assert error.activity is None
    assert "no start, externalSignal or scheduler activity" in str(error)


@pytest.mark.parametrize(
    "entry_only",
    [
        act("start2", "start", {"done": "end1"}),
        act("start2", "scheduler", {"done": "end1"}, frequency="daily"),
    ],
    ids=["start", "scheduler"],
)
def test_an_entry_only_activity_with_an_inbound_transition_is_refused(
    entry_only: dict[str, Any],
) -> None:
    body = workflow(start("fork1"), act("fork1", "fork", {"done": ["start2"]}), entry_only, end())

    error = refused_naming(body, "start2")

    assert f"'{entry_only['type']}' activities begin a workflow" in str(error)
    assert "take no inbound transition" in str(error)


def test_an_external_signal_may_have_an_inbound_transition() -> None:
    body = workflow(
        start("signal1"),
        act("signal1", "externalSignal", {"done": "end1"}),
        end(),
    )

    assert [a.name for a in parse(body).entries()] == ["start1"]


def test_an_and_join_with_one_inbound_transition_is_refused() -> None:
    body = workflow(start("andJoin1"), act("andJoin1", "andJoin", {"done": "end1"}), end())

    error = refused_naming(body, "andJoin1")

    assert "an andJoin needs at least two inbound transitions" in str(error)


def test_an_and_join_reached_twice_from_one_activity_still_has_one_inbound() -> None:
    # Given a test whose two outlets both lead to the same join
    body = workflow(
        start("test1"),
        act("test1", "test", {"a": "andJoin1", "default": "andJoin1"}, conditions=[condition("a")]),
        act("andJoin1", "andJoin", {"done": "end1"}),
        end(),
    )

    # When it is parsed, then the join waits for one branch only, which is refused
    refused_naming(body, "andJoin1")


def test_a_loop_through_transitions_without_a_wait_is_refused() -> None:
    body = workflow(
        start("fork1"),
        act("fork1", "fork", {"done": "fork2"}),
        act("fork2", "fork", {"done": ["fork1", "end1"]}),
        end(),
    )

    error = refused(body)

    assert error.activity in {"fork1", "fork2"}
    assert "is part of a loop without a wait or scheduler activity" in str(error)


def test_a_loop_through_a_jump_without_a_wait_is_refused() -> None:
    body = workflow(
        start("fork1"),
        act("fork1", "fork", {"done": ["jump1", "end1"]}),
        act("jump1", "jump", target="fork1"),
        end(),
    )

    error = refused(body)

    assert error.activity in {"fork1", "jump1"}
    assert "is part of a loop without a wait or scheduler activity" in str(error)


def test_a_loop_through_a_wait_is_accepted() -> None:
    body = workflow(
        start("test1"),
        act(
            "test1", "test", {"again": "wait1", "default": "end1"}, conditions=[condition("again")]
        ),
        act("wait1", "wait", {"done": "jump1"}, duration="1h"),
        act("jump1", "jump", target="test1"),
        end(),
    )

    definition = parse(body)

    assert definition.edges("jump1") == ["test1"]
    assert definition.inbound_counts()["test1"] == 2


def test_a_loop_through_an_external_signal_is_accepted() -> None:
    body = workflow(
        start("signal1"),
        act("signal1", "externalSignal", {"done": "fork1"}),
        act("fork1", "fork", {"done": ["signal1", "end1"]}),
        end(),
    )

    assert parse(body).inbound_counts()["signal1"] == 2


# Names and workflow keys.


def test_a_duplicate_activity_name_is_refused() -> None:
    error = refused_naming(workflow(start(), end(), end()), "end1")

    assert "duplicate activity name" in str(error)


@pytest.mark.parametrize(
    "name", ["", "1end", "_end", "end-1", "end 1", "énd", "e" * 65, 1, None, True, ["end1"]]
)
def test_a_bad_activity_name_is_refused_by_its_index(name: Any) -> None:
    error = refused(workflow(start(), {"name": name, "type": "end"}))

    assert "activities[1].name must be letters, digits and '_' starting with a letter" in str(error)


def test_a_name_of_64_characters_is_accepted() -> None:
    name = "e" * 64

    assert name in parse(workflow(start(name), end(name))).activities


def test_an_activity_name_with_a_trailing_newline_is_refused() -> None:
    refused(workflow(start("end1\n"), end("end1\n")))


@pytest.mark.parametrize("workflow_id", ["", "1wf", "wf-1", "wf.x", "w" * 65, 7, None, ["wf"]])
def test_a_bad_workflow_id_is_refused(workflow_id: Any) -> None:
    error = refused(workflow(start(), end(), id=workflow_id))

    assert "'id' must be a name of letters, digits and '_'" in str(error)


def test_a_missing_workflow_id_is_refused() -> None:
    error = refused({"activities": [start(), end()]})

    assert "'id' must be a name" in str(error)


def test_a_workflow_id_with_a_trailing_newline_is_refused() -> None:
    refused(workflow(start(), end(), id="cmsSend\n"))


def test_an_unknown_workflow_key_is_refused_listing_the_known_ones() -> None:
    error = refused(workflow(start(), end(), owner="me"))

    assert f"unknown workflow key(s) ['owner'] (known: {sorted(WORKFLOW_KEYS)})" in str(error)


def test_a_non_string_workflow_key_from_yaml_is_refused() -> None:
    error = refused(load_text("id: wf\n1: one\nactivities: []\n"))

    assert "unknown workflow key(s) ['1']" in str(error)


@pytest.mark.parametrize("label", [5, None, ["x"], "x" * 256])
def test_a_bad_workflow_label_is_refused(label: Any) -> None:
    error = refused(workflow(start(), end(), label=label))

    assert "'label' must be a string of at most 255 characters" in str(error)


def test_a_bad_activity_label_is_refused() -> None:
    error = refused_naming(workflow(start(), end(label=5)), "end1")

    assert "'label' must be a string" in str(error)


# Error policy and execution options.


@pytest.mark.parametrize("value", ["retry", "Suspend", "", None, 1])
def test_a_bad_workflow_on_error_is_refused(value: Any) -> None:
    error = refused(workflow(start(), end(), onError=value))

    assert "'onError' must be one of ['ignore', 'suspend']" in str(error)


@pytest.mark.parametrize("value", ["retry", "", 1, False])
def test_a_bad_activity_on_error_is_refused_naming_it(value: Any) -> None:
    error = refused_naming(workflow(start(), end(onError=value)), "end1")

    assert "'onError' must be one of ['ignore', 'suspend']" in str(error)


@pytest.mark.parametrize("value", ["paused", "Normal", None, 0])
def test_a_bad_execution_mode_is_refused_naming_the_activity(value: Any) -> None:
    error = refused_naming(workflow(start(), end(execution=value)), "end1")

    assert "'execution' must be one of ['disabled', 'normal', 'suspended']" in str(error)


@pytest.mark.parametrize("mode", ["normal", "suspended", "disabled"])
def test_every_execution_mode_is_accepted(mode: str) -> None:
    assert parse(workflow(start(), end(execution=mode))).activity("end1").execution == mode


@pytest.mark.parametrize(
    "body",
    [
        workflow(start(), end(), onError=["suspend"]),
        workflow(start(), end(onError={"policy": "ignore"})),
        workflow(start(), end(execution=["normal"])),
    ],
    ids=["workflow onError list", "activity onError object", "execution list"],
)
def test_an_on_error_or_execution_that_is_a_list_or_object_is_refused(body: Any) -> None:
    refused(body)


@pytest.mark.parametrize(("key", "maximum"), [("consecutiveErrors", 1000), ("historyDays", 3650)])
@pytest.mark.parametrize("case", ["zero", "negative", "over", "bool", "float", "string"])
def test_a_workflow_counter_out_of_bounds_or_not_an_integer_is_refused(
    key: str, maximum: int, case: str
) -> None:
    value = {
        "zero": 0,
        "negative": -1,
        "over": maximum + 1,
        "bool": True,
        "float": 2.0,
        "string": "3",
    }[case]

    error = refused(workflow(start(), end(), **{key: value}))

    assert f"'{key}' must be an integer between 1 and {maximum}" in str(error)


@pytest.mark.parametrize(("key", "maximum"), [("consecutiveErrors", 1000), ("historyDays", 3650)])
def test_a_workflow_counter_accepts_its_bounds(key: str, maximum: int) -> None:
    low = parse(workflow(start(), end(), **{key: 1}))
    high = parse(workflow(start(), end(), **{key: maximum}))

    attribute = {"consecutiveErrors": "consecutive_errors", "historyDays": "history_days"}[key]
    assert (getattr(low, attribute), getattr(high, attribute)) == (1, maximum)


# Test conditions.


def test_two_conditions_with_the_same_name_are_refused() -> None:
    body = workflow(
        start("test1"),
        act("test1", "test", {"a": "end1"}, conditions=[condition("a"), condition("a")]),
        end(),
    )

    error = refused_naming(body, "test1")

    assert "condition name 'a' is used twice" in str(error)


def test_a_condition_named_default_is_refused() -> None:
    body = workflow(
        start("test1"),
        act("test1", "test", {"default": "end1"}, conditions=[condition("default")]),
        end(),
    )

    error = refused_naming(body, "test1")

    assert "conditions[0].name must be an outlet name other than 'default'" in str(error)


@pytest.mark.parametrize(
    ("conditions", "message"),
    [
        ([], "must be a non-empty list of {name, when}"),
        ([{"name": "a"}], "conditions[0] must be exactly {name, when}"),
        ([{**condition("a"), "then": "x"}], "conditions[0] must be exactly {name, when}"),
        (["a"], "conditions[0] must be exactly {name, when}"),
        ([condition("1a")], "conditions[0].name must be an outlet name"),
        ([condition(f"c{i}") for i in range(51)], "at most 50 conditions"),
    ],
    ids=["empty", "no when", "extra key", "not a mapping", "bad name", "51 conditions"],
)
def test_malformed_conditions_are_refused_naming_the_test(conditions: Any, message: str) -> None:
    error = refused_naming(
        workflow(start("test1"), act("test1", "test", conditions=conditions)), "test1"
    )

    assert message in str(error)


def test_a_test_without_conditions_is_refused() -> None:
    error = refused_naming(
        workflow(start("test1"), act("test1", "test", {"default": "end1"}), end()), "test1"
    )

    assert "option 'conditions' is required" in str(error)


def test_a_bad_filter_inside_a_condition_names_the_test_activity() -> None:
    bad = {"field": "vars.x", "op": "bogus", "value": 1}
    body = workflow(
        start("test1"), act("test1", "test", {"a": "end1"}, conditions=[condition("a", bad)]), end()
    )

    error = refused_naming(body, "test1")

    assert "unknown operator 'bogus'" in str(error)


def test_a_bad_filter_inside_a_condition_is_still_a_definition_error() -> None:
    body = workflow(
        start("test1"),
        act("test1", "test", {"a": "end1"}, conditions=[condition("a", {"all": []})]),
        end(),
    )

    error = refused(body)

    assert "conditions[0].when.all" in str(error)


# End signal option.


@pytest.mark.parametrize(
    ("signal", "message"),
    [
        ("nightlyBatch", "option 'signal' must be dict"),
        ({"workflow": "w", "activity": "s", "vars": {}}, "unknown key(s) ['vars']"),
        ({"workflow": "w"}, "'workflow' and 'activity' are required names"),
        ({"workflow": 1, "activity": "s"}, "'workflow' and 'activity' are required names"),
        ({"workflow": "w", "activity": "s", "parameters": []}, "'parameters' must be an object"),
    ],
    ids=["string", "unknown key", "no activity", "workflow not a name", "parameters list"],
)
def test_a_malformed_end_signal_is_refused_naming_the_end(signal: Any, message: str) -> None:
    error = refused_naming(workflow(start(), end(signal=signal)), "end1")

    assert message in str(error)


def test_a_well_formed_end_signal_is_accepted() -> None:
    signal = {"workflow": "w", "activity": "s", "parameters": {"x": "$(vars/x)"}}

    assert parse(workflow(start(), end(signal=signal))).activity("end1").options["signal"] == signal


def test_an_end_signal_with_int_and_string_unknown_keys_is_refused() -> None:
    refused(workflow(start(), end(signal={"workflow": "w", "activity": "s", 1: "x", "y": 2})))


# External signal parameter declarations.


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"a": "int"}, "parameter 'a' has type 'int'; use one of"),
        ({"a": "text"}, "parameter 'a' has type 'text'"),
        ({"a": "String"}, "parameter 'a' has type 'String'"),
        ({"a": None}, "parameter 'a' has type None"),
        ({"1a": "string"}, "invalid parameter name '1a'"),
        ({"a-b": "string"}, "invalid parameter name 'a-b'"),
        ({f"p{i}": "string" for i in range(101)}, "at most 100 parameters"),
        (["a"], "option 'parameters' must be dict"),
    ],
    ids=["int", "text", "String", "null", "digit first", "dash", "101 parameters", "list"],
)
def test_a_bad_signal_parameter_declaration_is_refused_naming_the_signal(
    parameters: Any, message: str
) -> None:
    body = workflow(
        act("signal1", "externalSignal", {"done": "end1"}, parameters=parameters), end()
    )

    error = refused_naming(body, "signal1")

    assert message in str(error)


def test_every_parameter_type_may_be_declared() -> None:
    parameters = {"s": "string", "n": "number", "b": "boolean", "d": "datetime"}
    body = workflow(
        act("signal1", "externalSignal", {"done": "end1"}, parameters=parameters), end()
    )

    assert parse(body).activity("signal1").options["parameters"] == parameters


def test_a_signal_parameter_whose_type_is_a_list_is_refused() -> None:
    refused(
        workflow(
            act("signal1", "externalSignal", {"done": "end1"}, parameters={"a": ["string"]}), end()
        )
    )


# Scheduler and wait options, checked by worker/schedules.py and worker/durations.py.


def scheduler(**options: Any) -> dict[str, Any]:
    return workflow(act("sched1", "scheduler", {"done": "end1"}, **options), end())


def test_a_scheduler_every_five_minutes_is_refused_naming_it() -> None:
    error = refused_naming(scheduler(frequency="intraday", every="5mn"), "sched1")

    assert "every: '5mn' is shorter than the minimum interval of 10mn" in str(error)


def test_a_scheduler_every_hour_is_accepted() -> None:
    assert parse(scheduler(frequency="intraday", every="1h")).entries()[0].name == "sched1"


def test_a_scheduler_without_frequency_is_refused_naming_it() -> None:
    error = refused_naming(scheduler(times=["04:00"]), "sched1")

    assert "frequency: required" in str(error)


def test_an_unknown_scheduler_option_is_refused_listing_the_known_ones() -> None:
    error = refused_naming(scheduler(frequency="daily", cron="* * * * *"), "sched1")

    assert "unknown option(s) ['cron'] for type 'scheduler'" in str(error)
    assert "'frequency'" in str(error) and "'timezone'" in str(error)


def test_an_unknown_scheduler_time_zone_is_refused_naming_it() -> None:
    error = refused_naming(scheduler(frequency="daily", timezone="Mars/Olympus"), "sched1")

    assert "timezone" in str(error)


def test_a_scheduler_with_int_and_string_unknown_options_is_refused() -> None:
    refused(
        load_text("""
id: wf
activities:
  - {name: sched1, type: scheduler, frequency: daily, 1: x, extra: y, transitions: {done: end1}}
  - {name: end1, type: end}
""")
    )


def wait(**options: Any) -> dict[str, Any]:
    return workflow(start("wait1"), act("wait1", "wait", {"done": "end1"}, **options), end())


@pytest.mark.parametrize(
    "options",
    [{}, {"duration": "1h", "until": "2030-01-01T00:00"}, {"timezone": "UTC"}],
    ids=["neither", "both", "timezone only"],
)
def test_a_wait_needs_exactly_one_of_duration_or_until(options: dict[str, Any]) -> None:
    error = refused_naming(wait(**options), "wait1")

    assert "give exactly one of 'duration' or 'until'" in str(error)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"duration": "soon"}, "duration: cannot read 'soon'"),
        ({"duration": "0s"}, "is zero"),
        ({"duration": "1.5h"}, "whole numbers only"),
        ({"until": "next week"}, "until: 'next week' is not an ISO datetime"),
        ({"duration": "1h", "timezone": "Europe/Paris"}, "timezone: only applies to 'until'"),
    ],
    ids=["words", "zero", "fraction", "bad date", "timezone with duration"],
)
def test_a_bad_wait_option_is_refused_naming_the_wait(options: Any, message: str) -> None:
    error = refused_naming(wait(**options), "wait1")

    assert message in str(error)


@pytest.mark.parametrize(
    "options",
    [
        {"duration": "1d 8h 30mn"},
        {"until": "2019-04-03T08:00:00Z"},
        {"until": "2030-06-01T09:00", "timezone": "Europe/Paris"},
        {"until": "$(vars/when)"},
    ],
    ids=["duration", "until in the past", "until in a zone", "until from vars"],
)
def test_a_well_formed_wait_is_accepted(options: dict[str, Any]) -> None:
    assert dict(parse(wait(**options)).activity("wait1").options) == options


# Hostile input.


@pytest.mark.parametrize(
    "text",
    ["{not json", '{"id": "wf",}', "key: [unclosed", "a: b: c", "\x00", "@@@: %%%\n\t- x"],
    ids=["bad json", "trailing comma", "unclosed", "nested colon", "nul", "garbage"],
)
def test_load_text_refuses_text_that_is_neither_json_nor_yaml(text: str) -> None:
    with pytest.raises(DefinitionError, match="neither valid JSON nor YAML"):
        load_text(text)


@pytest.mark.parametrize(
    "text",
    ["", "just words", "42", "- a\n- b", "[1, 2]", "null", "~"],
)
def test_load_text_refuses_a_document_that_is_not_a_mapping(text: str) -> None:
    with pytest.raises(DefinitionError, match="definition must be a mapping"):
        load_text(text)


def test_load_text_refuses_a_text_of_one_byte_more_than_the_limit() -> None:
    padding = MAX_DEFINITION_BYTES + 1 - len('{"id": "wf", "label": ""}')
    text = '{"id": "wf", "label": "' + "x" * padding + '"}'
    assert len(text.encode()) == 1_000_001

    with pytest.raises(DefinitionError, match="larger than 1000000 bytes"):
        load_text(text)


def test_load_text_accepts_a_text_of_exactly_the_limit() -> None:
    padding = MAX_DEFINITION_BYTES - len('{"id": "wf", "label": ""}')
    text = '{"id": "wf", "label": "' + "x" * padding + '"}'

    assert len(load_text(text)["label"]) == padding


def test_load_text_counts_the_limit_in_bytes_not_characters() -> None:
    text = "label: " + "é" * (MAX_DEFINITION_BYTES // 2)  # under a million characters

    with pytest.raises(DefinitionError, match="larger than"):
        load_text(text)


def test_load_text_refuses_a_lone_surrogate() -> None:
    with pytest.raises(DefinitionError):
        load_text("id: \ud800")


def _billion_laughs(indent: str = "") -> str:
    """Nine levels of nine aliases each: 9**9 strings once expanded, under 1 KB as text."""
    lines = [indent + "a: &a [" + ", ".join(['"lol"'] * 9) + "]"]
    for previous, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(indent + f"{name}: &{name} [" + ", ".join([f"*{previous}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def _expanded_leaves(value: Any, memo: dict[int, int] | None = None) -> int:
    """How many scalars `value` holds once shared references are copied (without copying)."""
    memo = {} if memo is None else memo
    if isinstance(value, dict):
        children: Any = value.values()
    elif isinstance(value, list):
        children = value
    else:
        return 1
    if id(value) not in memo:
        memo[id(value)] = sum(_expanded_leaves(child, memo) for child in children)
    return memo[id(value)]


BOMB_DEFINITION = (
    "id: wf\n"
    "activities:\n"
    "  - {name: signal1, type: externalSignal, transitions: {done: end1}}\n"
    "  - name: end1\n"
    "    type: end\n"
    "    signal:\n"
    "      workflow: other\n"
    "      activity: signal1\n"
    "      parameters:\n" + _billion_laughs(indent="        ")
)


@pytest.mark.timeout(30)
def test_a_yaml_alias_bomb_is_refused_before_it_expands() -> None:
    # Given a definition under 1 KB whose aliases name 9**9 strings
    assert len(BOMB_DEFINITION) < 1500

    # When it is loaded, then it is refused without building anything big
    tracemalloc.start()
    try:
        with pytest.raises(DefinitionError, match="YAML aliases"):
            load_text(BOMB_DEFINITION)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 5_000_000


def test_a_yaml_alias_bomb_is_refused_or_bounded_by_the_size_limit() -> None:
    try:
        body: Any = parse(load_text(BOMB_DEFINITION)).body
    except DefinitionError:
        return
    # Each expanded scalar takes at least a byte of JSON.
    assert _expanded_leaves(body) <= MAX_DEFINITION_BYTES


@pytest.mark.parametrize(
    "text",
    ['{"a": ' * 100_000 + "1" + "}" * 100_000, "a: " + "[" * 100_000 + "]" * 100_000],
    ids=["json", "yaml"],
)
def test_load_text_refuses_deeply_nested_text_with_a_definition_error(text: str) -> None:
    with pytest.raises(DefinitionError):
        load_text(text)


def test_a_recursive_yaml_alias_is_refused_by_load_text() -> None:
    with pytest.raises(DefinitionError, match="YAML aliases"):
        load_text("id: wf\nactivities: &a [*a]\n")


def test_more_than_the_maximum_number_of_activities_is_refused() -> None:
    forks = [act(f"fork{i}", "fork", {"done": f"fork{i + 1}"}) for i in range(1, 500)]
    body = workflow(start("fork1"), *forks, end("fork500"))
    assert len(body["activities"]) == MAX_ACTIVITIES + 1

    error = refused(body)

    assert "at most 500 activities per workflow" in str(error)


def test_the_maximum_number_of_activities_is_accepted() -> None:
    forks = [act(f"fork{i}", "fork", {"done": f"fork{i + 1}"}) for i in range(1, 499)]
    body = workflow(start("fork1"), *forks, end("fork499"))

    assert len(parse(body).activities) == MAX_ACTIVITIES


@pytest.mark.parametrize("activity", ["start1", 5, None, ["start1"], True])
def test_an_activity_that_is_not_a_mapping_is_refused_by_its_index(activity: Any) -> None:
    error = refused(workflow(activity, end()))

    assert "activities[0] must be a mapping" in str(error)


@pytest.mark.parametrize("activities", [None, "start1", {"start1": {}}, [], 5])
def test_activities_that_are_not_a_non_empty_list_are_refused(activities: Any) -> None:
    error = refused({"id": "wf", "activities": activities})

    assert "'activities' must be a non-empty list" in str(error)


@pytest.mark.parametrize("transitions", [["end1"], "end1", None, 5])
def test_transitions_that_are_not_a_mapping_are_refused(transitions: Any) -> None:
    error = refused_naming(workflow(start() | {"transitions": transitions}, end()), "start1")

    assert "'transitions' must map outlet names to activity names" in str(error)


@pytest.mark.parametrize(
    ("transitions", "message"),
    [
        ({"done": 1}, "transition 'done' must name an activity or a list of them"),
        ({"done": None}, "transition 'done' must name an activity or a list of them"),
        ({"done": ["end1", 2]}, "transition 'done' must name an activity or a list of them"),
        ({"done": {"to": "end1"}}, "transition 'done' must name an activity or a list of them"),
        ({"done": ["end1", "end1"]}, "transition 'done' lists a target twice"),
        ({1: "end1"}, "transition outlet names must be strings"),
        ({"": "end1"}, "transition outlet names must be strings"),
    ],
)
def test_malformed_transitions_are_refused_naming_the_activity(
    transitions: Any, message: str
) -> None:
    error = refused_naming(workflow(start() | {"transitions": transitions}, end()), "start1")

    assert message in str(error)


@pytest.mark.parametrize("body", [None, "wf", 5, ["id", "wf"], b"{}"])
def test_a_body_that_is_not_a_mapping_is_refused(body: Any) -> None:
    error = refused(body)

    assert "definition must be a mapping" in str(error)


def test_a_definition_whose_every_field_has_the_wrong_type_is_refused() -> None:
    body = {
        "id": 1,
        "label": 2,
        "onError": 3,
        "consecutiveErrors": "x",
        "historyDays": [],
        "activities": "y",
        "description": 5,
    }

    refused(body)


WRONG_TYPES: list[tuple[str, Any]] = [
    ("id", 1),
    ("label", 2),
    ("onError", 3),
    ("consecutiveErrors", "3"),
    ("historyDays", 30.0),
    ("activities", {"start1": {}}),
]


@pytest.mark.parametrize(("key", "value"), WRONG_TYPES, ids=[k for k, _ in WRONG_TYPES])
def test_each_workflow_field_of_the_wrong_type_alone_is_refused(key: str, value: Any) -> None:
    refused(workflow(start(), end()) | {key: value})


def test_a_description_that_is_not_a_string_is_refused() -> None:
    refused(workflow(start(), end(), description={"nested": ["anything", 1, None]}))


@pytest.mark.parametrize(
    ("key", "value"),
    [("name", 1), ("type", 1), ("label", 1), ("transitions", []), ("onError", 1), ("execution", 1)],
)
def test_each_activity_field_of_the_wrong_type_alone_is_refused(key: str, value: Any) -> None:
    refused(workflow(start() | {key: value}, end()))


# Random bodies: whatever the input, parse() raises DefinitionError or returns a Definition.

NAMES = ["start1", "end1", "fork1", "wait1", "test1", "andJoin1", "signal1", "jump1", "x"]
TYPES = sorted({*registry.names(), "query", ""})
# Every type's options, and one no type has.
OPTION_KEYS = ["duration", "until", "timezone", "target", "conditions", "default", "signal"]
OPTION_KEYS += ["terminate", "frequency", "every", "times", "seconds", "other"]
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(NAMES + TYPES + ["suspend", "ignore", "normal", "1h", "daily", "string"])
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=8) | st.sampled_from(OPTION_KEYS), children, max_size=4)
    ),
    max_leaves=12,
)


def _activities(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    targets = st.sampled_from(NAMES) | st.lists(st.sampled_from(NAMES), max_size=3)
    transitions = (
        st.dictionaries(st.sampled_from(["done", "default", "a", ""]), targets, max_size=3)
        | JSON_VALUES
    )
    activity = st.fixed_dictionaries(
        {"name": st.sampled_from(NAMES) | JSON_VALUES, "type": st.sampled_from(TYPES) | SCALARS},
        optional={
            "transitions": transitions,
            "label": SCALARS,
            "onError": values,
            "execution": values,
            "parameters": st.dictionaries(st.text(max_size=8), values, max_size=3) | values,
            **{key: JSON_VALUES for key in OPTION_KEYS},
        },
    )
    return st.lists(activity | JSON_VALUES, min_size=1, max_size=6)


def _bodies(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.fixed_dictionaries(
        {"id": st.just("wf") | SCALARS, "activities": _activities(values) | JSON_VALUES},
        optional={
            "label": SCALARS,
            "onError": values,
            "consecutiveErrors": SCALARS,
            "historyDays": SCALARS,
            "description": JSON_VALUES,
            "extra": JSON_VALUES,
        },
    )


def _parse_or_refuse(body: Any) -> None:
    with contextlib.suppress(DefinitionError):
        parse(body)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_bodies(values=SCALARS))
def test_parse_raises_only_definition_errors_on_random_json_like_bodies(body: Any) -> None:
    # onError, execution and parameter types are scalars here; the next test gives
    # them containers too.
    _parse_or_refuse(body)


@settings(
    max_examples=300, deadline=None, derandomize=True, database=None, report_multiple_bugs=False
)
@given(_bodies(values=JSON_VALUES))
def test_parse_raises_only_definition_errors_even_with_containers_as_policies(body: Any) -> None:
    _parse_or_refuse(body)
