"""Workflow definitions: parse JSON/YAML, validate the graph, expose entries and successors."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from worker import registry
from worker.activities.base import (
    ACTIVITY_KEYS,
    ERROR_POLICIES,
    EXECUTION_MODES,
    Activity,
    ActivityType,
)
from worker.errors import DefinitionError

NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}\Z")
WORKFLOW_KEYS = frozenset(
    {"id", "label", "onError", "consecutiveErrors", "historyDays", "activities", "description"}
)
MAX_ACTIVITIES = 500
MAX_DEFINITION_BYTES = 1_000_000
#: Deepest bracket nesting accepted before parsing (PyYAML is quadratic on deep nesting).
MAX_NESTING = 64
_BRACKETS = re.compile(r"[\[\]{}]")


@dataclass(frozen=True)
class Definition:
    """A validated workflow definition."""

    id: str
    label: str
    on_error: str
    consecutive_errors: int
    history_days: int
    activities: Mapping[str, Activity]
    body: Mapping[str, Any]

    def activity(self, name: str) -> Activity:
        return self.activities[name]

    def type_of(self, name: str) -> ActivityType:
        return registry.get(self.activities[name].type, activity=name)

    def entries(self) -> list[Activity]:
        inbound = self.inbound_counts()
        return [a for a in self.activities.values() if inbound[a.name] == 0]

    def edges(self, name: str) -> list[str]:
        """Every activity `name` can lead to: its transitions, plus a jump's target."""
        activity = self.activities[name]
        found = [t for targets in activity.transitions.values() for t in targets]
        jump = self.type_of(name).jump_target(activity)
        if jump:
            found.append(jump)
        return found

    def inbound_counts(self) -> dict[str, int]:
        """Distinct predecessors of each activity (an and-join waits for that many branches)."""
        counts = dict.fromkeys(self.activities, 0)
        for name in self.activities:
            for target in set(self.edges(name)):
                counts[target] += 1
        return counts

    def error_policy(self, name: str) -> str:
        return self.activities[name].on_error or self.on_error


def load_text(text: str) -> dict[str, Any]:
    """Parse a JSON or YAML document into a dict, with a clear error when it is neither."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_DEFINITION_BYTES:
        raise DefinitionError(f"definition is larger than {MAX_DEFINITION_BYTES} bytes")
    depth = deepest = 0
    for bracket in _BRACKETS.finditer(text):
        depth += 1 if bracket.group() in "[{" else -1
        deepest = max(deepest, depth)
    if deepest > MAX_NESTING:
        raise DefinitionError(f"definition is nested too deeply (more than {MAX_NESTING} levels)")
    try:
        if text.lstrip().startswith("{"):
            body = json.loads(text)
        else:
            _refuse_yaml_aliases(text)
            body = yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise DefinitionError(f"definition is neither valid JSON nor YAML: {exc}") from None
    except RecursionError:
        raise DefinitionError("definition is nested too deeply") from None
    if not isinstance(body, dict):
        raise DefinitionError("definition must be a mapping with 'id' and 'activities'")
    return body


def _refuse_yaml_aliases(text: str) -> None:
    """Aliases let a 1 KB document expand to gigabytes ("billion laughs"); definitions need none."""
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.AliasEvent):
            raise DefinitionError("YAML aliases (*name) are not allowed in definitions")


def parse(body: Mapping[str, Any]) -> Definition:
    """Validate a definition body; raise DefinitionError naming the activity and the problem."""
    if not isinstance(body, Mapping):
        raise DefinitionError("definition must be a mapping with 'id' and 'activities'")
    unknown = set(body) - WORKFLOW_KEYS
    if unknown:
        raise DefinitionError(
            f"unknown workflow key(s) {sorted(map(str, unknown))} (known: {sorted(WORKFLOW_KEYS)})"
        )
    workflow_id = body.get("id")
    if not isinstance(workflow_id, str) or not NAME_RE.match(workflow_id):
        raise DefinitionError(
            "'id' must be a name of letters, digits and '_' starting with a letter (max 64)"
        )
    label = body.get("label", workflow_id)
    if not isinstance(label, str) or len(label) > 255:
        raise DefinitionError("'label' must be a string of at most 255 characters")
    description = body.get("description", "")
    if not isinstance(description, str) or len(description) > 4000:
        raise DefinitionError("'description' must be a string of at most 4000 characters")
    on_error = body.get("onError", "suspend")
    if not isinstance(on_error, str) or on_error not in ERROR_POLICIES:
        raise DefinitionError(f"'onError' must be one of {sorted(ERROR_POLICIES)}")
    consecutive = _positive_int(body, "consecutiveErrors", 3, maximum=1000)
    history_days = _positive_int(body, "historyDays", 30, maximum=3650)
    raw_activities = body.get("activities")
    if not isinstance(raw_activities, list) or not raw_activities:
        raise DefinitionError("'activities' must be a non-empty list")
    if len(raw_activities) > MAX_ACTIVITIES:
        raise DefinitionError(f"at most {MAX_ACTIVITIES} activities per workflow")

    activities: dict[str, Activity] = {}
    for index, raw in enumerate(raw_activities):
        activity = _parse_activity(raw, index)
        if activity.name in activities:
            raise DefinitionError("duplicate activity name", activity=activity.name)
        activities[activity.name] = activity

    definition = Definition(
        id=workflow_id,
        label=label,
        on_error=on_error,
        consecutive_errors=consecutive,
        history_days=history_days,
        activities=activities,
        body=dict(body),
    )
    _check_graph(definition)
    return definition


def _positive_int(body: Mapping[str, Any], key: str, default: int, *, maximum: int) -> int:
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
        raise DefinitionError(f"'{key}' must be an integer between 1 and {maximum}")
    return value


def _parse_activity(raw: Any, index: int) -> Activity:
    if not isinstance(raw, Mapping):
        raise DefinitionError(f"activities[{index}] must be a mapping")
    name = raw.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise DefinitionError(
            f"activities[{index}].name must be letters, digits and '_' starting with a letter"
        )
    type_name = raw.get("type")
    if not isinstance(type_name, str):
        raise DefinitionError("'type' is required", activity=name)
    activity_type = registry.get(type_name, activity=name)
    transitions = _parse_transitions(raw.get("transitions", {}), name)
    on_error = raw.get("onError")
    if on_error is not None and (not isinstance(on_error, str) or on_error not in ERROR_POLICIES):
        raise DefinitionError(f"'onError' must be one of {sorted(ERROR_POLICIES)}", activity=name)
    execution = raw.get("execution", "normal")
    if not isinstance(execution, str) or execution not in EXECUTION_MODES:
        raise DefinitionError(
            f"'execution' must be one of {sorted(EXECUTION_MODES)}", activity=name
        )
    label = raw.get("label", "")
    if not isinstance(label, str):
        raise DefinitionError("'label' must be a string", activity=name)
    activity = Activity(
        name=name,
        type=type_name,
        options={k: v for k, v in raw.items() if k not in ACTIVITY_KEYS},
        transitions=transitions,
        label=label,
        on_error=on_error,
        execution=execution,
    )
    activity_type.validate(activity)
    allowed = activity_type.outlets(activity)
    for outlet in activity.transitions:
        if outlet not in allowed:
            raise DefinitionError(
                f"unknown outlet '{outlet}' for type '{type_name}' (allowed: {sorted(allowed)})",
                activity=name,
            )
    return activity


def _parse_transitions(raw: Any, name: str) -> dict[str, tuple[str, ...]]:
    if not isinstance(raw, Mapping):
        raise DefinitionError(
            "'transitions' must map outlet names to activity names", activity=name
        )
    parsed: dict[str, tuple[str, ...]] = {}
    for outlet, targets in raw.items():
        if not isinstance(outlet, str) or not outlet:
            raise DefinitionError("transition outlet names must be strings", activity=name)
        listed = [targets] if isinstance(targets, str) else targets
        if not isinstance(listed, list) or not all(isinstance(t, str) for t in listed):
            raise DefinitionError(
                f"transition '{outlet}' must name an activity or a list of them", activity=name
            )
        if len(set(listed)) != len(listed):
            raise DefinitionError(f"transition '{outlet}' lists a target twice", activity=name)
        parsed[outlet] = tuple(listed)
    return parsed


def _check_graph(definition: Definition) -> None:
    names = definition.activities
    for name in names:
        for target in definition.edges(name):
            if target not in names:
                raise DefinitionError(f"transition to unknown activity '{target}'", activity=name)
            if target == name:
                raise DefinitionError("an activity cannot lead to itself", activity=name)
    inbound = definition.inbound_counts()
    entries = [n for n in names if inbound[n] == 0]
    for name in entries:
        if not definition.type_of(name).entry:
            raise DefinitionError(
                "has no inbound transition; only start, externalSignal and scheduler "
                "activities may begin a workflow",
                activity=name,
            )
    for name in names:
        if definition.type_of(name).entry_only and inbound[name]:
            raise DefinitionError(
                f"'{names[name].type}' activities begin a workflow and take no inbound transition",
                activity=name,
            )
        if definition.type_of(name).joins and inbound[name] < 2:
            raise DefinitionError(
                f"an {names[name].type} needs at least two inbound transitions", activity=name
            )
    if not entries:
        raise DefinitionError("the workflow has no start, externalSignal or scheduler activity")
    reachable = _reachable(definition, entries)
    for name in names:
        if name not in reachable:
            raise DefinitionError("is unreachable from any start activity", activity=name)
    _check_loops(definition)


def _reachable(definition: Definition, entries: list[str]) -> set[str]:
    seen: set[str] = set()
    stack = list(entries)
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        stack.extend(definition.edges(name))
    return seen


def _check_loops(definition: Definition) -> None:
    """Every cycle must pass through a wait or a scheduler, else it would spin forever."""
    # Remove the loop breakers; any cycle left in the graph is a busy loop.
    breakers = {n for n in definition.activities if definition.type_of(n).breaks_loops}
    graph = {
        n: [t for t in definition.edges(n) if t not in breakers]
        for n in definition.activities
        if n not in breakers
    }
    white, grey, black = 0, 1, 2
    color = dict.fromkeys(graph, white)
    for root in graph:
        if color[root] != white:
            continue
        stack: list[tuple[str, int]] = [(root, 0)]
        color[root] = grey
        while stack:
            node, index = stack[-1]
            if index < len(graph[node]):
                stack[-1] = (node, index + 1)
                child = graph[node][index]
                if color[child] == grey:
                    raise DefinitionError(
                        "is part of a loop without a wait or scheduler activity",
                        activity=child,
                    )
                if color[child] == white:
                    color[child] = grey
                    stack.append((child, 0))
            else:
                color[node] = black
                stack.pop()
