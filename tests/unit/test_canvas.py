"""Canvas shapes compiled from graphs: chain for sequences, group for forks, chord for joins."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from celery import Celery, current_app, group
from celery.canvas import _chain as chain
from celery.canvas import _chord as chord
from celery.signals import before_task_publish

import tests.plugins  # noqa: F401
from worker import canvas, definitions


def _ids() -> Any:
    counter = itertools.count(1)
    return lambda: f"id{next(counter)}"


def _names(sig: Any, definition: definitions.Definition, ids: dict[str, str]) -> Any:
    """The canvas as nested tuples of activity names, to compare shapes at a glance."""
    if isinstance(sig, chord):
        return (
            "chord",
            [_names(t, definition, ids) for t in sig.tasks],
            _names(sig.body, definition, ids),
        )
    if isinstance(sig, group):
        return ("group", [_names(t, definition, ids) for t in sig.tasks])
    if isinstance(sig, chain):
        return ("chain", [_names(t, definition, ids) for t in sig.tasks])
    return ids[sig.args[0]]


def _compile(body: dict[str, Any], first: str) -> tuple[Any, dict[str, str], Any]:
    definition = definitions.parse(body)
    new_id = _ids()
    sig = canvas.compile_segment(definition, first, "head", new_id)
    ids: dict[str, str] = {"head": first}
    # Recover which id belongs to which activity from the `chained` maps.
    stack = [sig]
    while stack:
        current = stack.pop()
        if isinstance(current, chord):
            stack.extend(current.tasks)
            stack.append(current.body)
        elif isinstance(current, group | chain):
            stack.extend(current.tasks)
        else:
            for activity, task_id in current.args[1].items():
                ids[task_id] = activity
    return sig, ids, definition


FORK_JOIN: dict[str, Any] = {
    "id": "forkJoin",
    "activities": [
        {"name": "start1", "type": "start", "transitions": {"done": "fork1"}},
        {"name": "fork1", "type": "fork", "transitions": {"done": ["a1", "b1"]}},
        {"name": "a1", "type": "noop", "transitions": {"done": "a2"}},
        {"name": "a2", "type": "noop", "transitions": {"done": "join1"}},
        {"name": "b1", "type": "noop", "transitions": {"done": "join1"}},
        {"name": "join1", "type": "andJoin", "transitions": {"done": "after1"}},
        {"name": "after1", "type": "noop", "transitions": {"done": "end1"}},
        {"name": "end1", "type": "end"},
    ],
}


def test_a_fork_whose_branches_meet_at_an_and_join_compiles_to_a_chord() -> None:
    sig, ids, definition = _compile(FORK_JOIN, "start1")

    assert _names(sig, definition, ids) == (
        "chain",
        [
            "start1",
            "fork1",
            (
                "chord",
                [("chain", ["a1", "a2"]), "b1"],
                ("chain", ["join1", "after1", "end1"]),
            ),
        ],
    )


def test_only_chord_header_ends_report_results_and_they_announce_the_join_id() -> None:
    sig, _ids_map, _definition = _compile(FORK_JOIN, "start1")
    the_chord = sig.tasks[2]
    join_id = the_chord.body.tasks[0].args[0]
    a_chain, b1 = the_chord.tasks
    for last in (a_chain.tasks[-1], b1):
        assert last.options["ignore_result"] is False
        assert last.args[1] == {"join1": join_id}
    assert "ignore_result" not in a_chain.tasks[0].options


def test_every_link_is_immutable_and_routed_to_its_family_queue() -> None:
    sig, _ids_map, _definition = _compile(FORK_JOIN, "start1")
    assert sig.tasks[0].immutable
    assert sig.tasks[0].options["queue"] == "carillon.flow"
    assert sig.tasks[0].options["task_id"] == "head"


def test_a_fork_whose_branches_do_not_meet_compiles_to_a_group() -> None:
    body = {
        "id": "fan",
        "activities": [
            {"name": "start1", "type": "start", "transitions": {"done": "fork1"}},
            {"name": "fork1", "type": "fork", "transitions": {"done": ["a1", "b1"]}},
            {"name": "a1", "type": "noop", "transitions": {"done": "end1"}},
            {"name": "b1", "type": "noop", "transitions": {"done": "end2"}},
            {"name": "end1", "type": "end"},
            {"name": "end2", "type": "end"},
        ],
    }
    sig, ids, definition = _compile(body, "start1")
    assert _names(sig, definition, ids) == (
        "chain",
        ["start1", "fork1", ("group", [("chain", ["a1", "end1"]), ("chain", ["b1", "end2"])])],
    )


def test_a_segment_stops_after_a_deciding_activity_and_before_a_wait() -> None:
    body = {
        "id": "decide",
        "activities": [
            {"name": "start1", "type": "start", "transitions": {"done": "noop1"}},
            {"name": "noop1", "type": "noop", "transitions": {"done": "test1"}},
            {
                "name": "test1",
                "type": "test",
                "conditions": [{"name": "big", "when": {"field": "n", "op": "gt", "value": 1}}],
                "transitions": {"big": "wait1", "default": "end1"},
            },
            {"name": "wait1", "type": "wait", "duration": "1h", "transitions": {"done": "end1"}},
            {"name": "end1", "type": "end"},
        ],
    }
    sig, ids, definition = _compile(body, "start1")
    assert _names(sig, definition, ids) == ("chain", ["start1", "noop1", "test1"])
    # The wait is never a link: the engine creates it as a waiting row after the test runs.
    assert not canvas.chainable(definition, "wait1")


def test_a_branch_that_decides_before_the_join_falls_back_to_a_group() -> None:
    body = {
        "id": "mixed",
        "activities": [
            {"name": "start1", "type": "start", "transitions": {"done": "fork1"}},
            {"name": "fork1", "type": "fork", "transitions": {"done": ["a1", "test1"]}},
            {"name": "a1", "type": "noop", "transitions": {"done": "join1"}},
            {
                "name": "test1",
                "type": "test",
                "conditions": [{"name": "yes", "when": {"field": "n", "op": "eq", "value": 1}}],
                "transitions": {"yes": "join1", "default": "join1"},
            },
            {"name": "join1", "type": "andJoin", "transitions": {"done": "end1"}},
            {"name": "end1", "type": "end"},
        ],
    }
    sig, ids, definition = _compile(body, "start1")
    assert _names(sig, definition, ids) == (
        "chain",
        ["start1", "fork1", ("group", ["a1", "test1"])],
    )


SEQUENCE_FOR_SEEDS = {
    "id": "seeds",
    "activities": [
        {"name": "start1", "type": "start", "transitions": {"done": "b"}},
        {"name": "b", "type": "noop", "transitions": {"done": "end1"}},
        {"name": "end1", "type": "end"},
    ],
}


def _link_dict(task_id: str) -> dict[str, Any]:
    return dict(canvas.link(definitions.parse(SEQUENCE_FOR_SEEDS), "b", task_id))


def test_seed_next_seeds_the_next_run_of_the_task_it_names() -> None:
    remaining = [_link_dict("later"), _link_dict("next")]
    seed = {"activity": "b", "workflow_id": 7, "vars": {"password": "hunter2"}}
    canvas.seed_next(remaining, {"next": seed, "other": {"vars": {"x": 1}}})
    assert remaining[-1]["kwargs"] == {"seed": seed}
    assert remaining[0]["kwargs"] == {}  # only the link Celery publishes next
    # What Flower and logs show: the row, never its vars.
    shown = remaining[-1]["options"]["kwargsrepr"]
    assert "b of workflow 7" in shown and "hunter2" not in shown
    assert remaining[0]["options"]["kwargsrepr"] == "{}"


def test_a_link_says_what_its_arguments_are_without_celery_computing_it() -> None:
    sig = canvas.link(definitions.parse(SEQUENCE_FOR_SEEDS), "b", "t1", {"end1": "t2"})
    assert sig.options["argsrepr"] == repr(("t1", {"end1": "t2"}))
    seeded = canvas.compile_segment(
        definitions.parse(SEQUENCE_FOR_SEEDS),
        "b",
        "t1",
        _ids(),
        {"activity": "b", "workflow_id": 3, "vars": {"secret": "x" * 100}},
    )
    first = seeded.tasks[0] if isinstance(seeded, chain) else seeded
    assert first.kwargs["seed"]["vars"] == {"secret": "x" * 100}
    assert "secret" not in first.options["kwargsrepr"]


@pytest.mark.parametrize(
    "remaining",
    [
        None,
        [],
        [dict(group(canvas.link(definitions.parse(SEQUENCE_FOR_SEEDS), "b", "next")))],
        [{"task": "other.task", "args": ["next"], "kwargs": {}}],
        [{"task": canvas.RUN_ACTIVITY, "args": [], "kwargs": {}}],
        [{"task": canvas.RUN_ACTIVITY, "args": [["next"]], "kwargs": {}}],
        ["not a signature"],
    ],
    ids=["none", "empty", "group", "other-task", "no-args", "odd-args", "junk"],
)
def test_seed_next_leaves_anything_else_alone(remaining: Any) -> None:
    before = repr(remaining)
    canvas.seed_next(remaining, {"next": {"vars": {}}})
    assert repr(remaining) == before


def _published(links: Any, *, through_chain: bool = False) -> list[tuple[dict[str, Any], Any]]:
    """(headers, body) of every message Celery publishes for `links` on an in-memory broker:
    canvas.publish, or Celery's own chain(...).apply_async with `through_chain`."""
    app = Celery("publish-test", broker="memory://localhost", backend="cache+memory://")
    app.conf.update(task_serializer="json", accept_content=["json"])
    sent: list[tuple[dict[str, Any], Any]] = []

    def seen(headers: dict[str, Any], body: Any, **_: Any) -> None:
        sent.append((headers, json.loads(json.dumps(body))))

    previous = current_app._get_current_object()
    before_task_publish.connect(seen, weak=False)
    try:
        app.set_current()
        if through_chain:
            (links[0] if len(links) == 1 else chain(*links)).apply_async()
        else:
            canvas.publish(links)
    finally:
        before_task_publish.disconnect(seen)
        previous.set_current()
    return sent


def _step(link: dict[str, Any]) -> tuple[Any, ...]:
    """What a chain step carries that the worker reads: task, arguments, id, queue."""
    options = link.get("options") or {}
    return (
        link["task"],
        link["args"],
        link["kwargs"],
        options.get("task_id"),
        options.get("queue"),
        options.get("argsrepr"),
    )


def test_a_sequence_is_published_as_one_message_carrying_the_same_steps_as_celerys_chain() -> None:
    definition = definitions.parse(SEQUENCE_FOR_SEEDS)
    seed = {"activity": "start1", "workflow_id": 3, "vars": {}}
    links = canvas.segment_links(definition, "start1", "head", _ids(), seed)
    assert len(links) > 2
    ours = _published(links)
    celerys = _published(links, through_chain=True)
    assert len(ours) == len(celerys) == 1
    (headers, (args, kwargs, embed)), (their_headers, (their_args, their_kwargs, their_embed)) = (
        ours[0],
        celerys[0],
    )
    assert headers["id"] == their_headers["id"] == "head" and headers["root_id"] == "head"
    assert (args, kwargs) == (their_args, their_kwargs) and kwargs == {"seed": seed}
    # The next link last, as Celery keeps them (it pops from the end).
    assert [link["args"][0] for link in embed["chain"]] == [
        link.args[0] for link in reversed(links[1:])
    ]
    assert [_step(link) for link in embed["chain"]] == [
        _step(link) for link in their_embed["chain"]
    ]


def test_a_single_link_goes_out_alone_and_a_fork_goes_through_celerys_chain() -> None:
    definition = definitions.parse(SEQUENCE_FOR_SEEDS)
    alone = canvas.segment_links(definition, "end1", "last", _ids())
    ((headers, (_, _, embed)),) = _published(alone)
    assert headers["id"] == "last" and not embed["chain"]
    forked = canvas.segment_links(definitions.parse(FORK_JOIN), "start1", "head", _ids())
    assert isinstance(forked[-1], chord)
    ours, celerys = _published(forked), _published(forked, through_chain=True)
    assert [h["id"] for h, _ in ours] == [h["id"] for h, _ in celerys]
    steps = ours[0][1][2]["chain"]
    assert [step.get("subtask_type") for step in steps].count("chord") == 1
    assert [_step(step) for step in steps if step.get("subtask_type") != "chord"] == [
        _step(step) for step in celerys[0][1][2]["chain"] if step.get("subtask_type") != "chord"
    ]


def _sequence(n: int, then: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """start1 -> n1 ... -> n<n> -> (then, or end1)."""
    names = ["start1", *(f"n{i}" for i in range(1, n + 1))]
    tail = then or [{"name": "end1", "type": "end"}]
    activities: list[dict[str, Any]] = [
        {"name": name, "type": "start" if i == 0 else "noop", "transitions": {"done": after}}
        for i, (name, after) in enumerate(zip(names, [*names[1:], tail[0]["name"]], strict=True))
    ]
    return {"id": "long", "activities": [*activities, *tail]}


def test_a_long_sequence_is_cut_into_segments_of_max_links() -> None:
    """Celery's chain carries every remaining link in each message: a segment stops after
    MAX_LINKS, its last link without successor ids (its run publishes the next segment)."""
    sig, ids, definition = _compile(_sequence(20), "start1")
    assert isinstance(sig, chain) and len(sig.tasks) == canvas.MAX_LINKS
    assert [ids[link.args[0]] for link in sig.tasks] == ["start1", "n1", "n2"]
    assert sig.tasks[-1].args[1] == {}  # the engine creates n3 and publishes from there
    assert all(link.args[1] for link in sig.tasks[:-1])
    # From any task, the same: n3's segment is n3, n4, n5.
    again = canvas.segment_links(definition, "n3", "t3", _ids())
    assert len(again) == canvas.MAX_LINKS and again[-1].args[1] == {}
    # The last activities of a sequence are not cut short.
    tail = canvas.segment_links(definition, "n19", "t19", _ids())
    assert len(tail) == 3 and tail[-1].options["task_id"] == next(iter(tail[-2].args[1].values()))


def test_a_fork_is_never_cut_off_from_its_branches() -> None:
    """At the cap, a fork still compiles with its chord: only single steps are cut."""
    fork_join = [dict(activity) for activity in FORK_JOIN["activities"]][1:]
    sig, _, _ = _compile(_sequence(1, then=fork_join), "start1")
    # start1 -> n1 -> fork1 -> chord: the fork is the cap's third link, its chord follows.
    assert isinstance(sig, chain)
    assert isinstance(sig.tasks[-1], chord)
