"""Seeded hops (worker/hop.py) on real PostgreSQL: a pure quick activity run from the seed its
predecessor seen.sent and written in one statement, the same rows as the usual claim, and every
seed that does not match its row (or is not a seed at all) changing nothing by itself."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError

from tests.conftest import Harness
from tests.integration.conftest import wait_for
from tests.integration.statements import Statements
from worker import hop, registry
from worker.activities.base import ActivityType, Context, Outcome
from worker.errors import ActivityError
from worker.hop import MAX_SEED_BYTES, SEED_KEYS, Seed
from worker.models import LogLine, StateEvent, Task, Workflow, new_id
from worker.transitions import with_defaults

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def chain(*kinds: str | dict[str, Any]) -> dict[str, Any]:
    """start1 -> a0 -> a1 ... -> end1, each `kind` a type name or a whole activity."""
    names = [f"a{i}" for i in range(len(kinds))]
    activities: list[dict[str, Any]] = [
        {"name": "start1", "type": "start", "transitions": {"done": names[0]}}
    ]
    for index, kind in enumerate(kinds):
        after = names[index + 1] if index + 1 < len(names) else "end1"
        activity: dict[str, Any] = {"type": kind} if isinstance(kind, str) else dict(kind)
        outlets = activity.pop("outlets", ["done"])
        activity.update(name=names[index], transitions={outlet: after for outlet in outlets})
        activities.append(activity)
    activities.append({"name": "end1", "type": "end"})
    return {"id": unique("seed"), "activities": activities}


def first_hop(h: Harness, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Start `body`, run start1 by hand: (a0's task id, the seed start1 left for it)."""
    name = h.start(body, org=unique("org"))
    h.stub.queue.clear()
    with h.sessions() as s:
        start_id = s.scalar(select(Task.id).join(Workflow).where(Workflow.name == name))
    a0 = new_id()
    result = h.engine.run(start_id, {"a0": a0})
    assert result.continue_chain and set(result.seeds) == {a0}
    return a0, result.seeds[a0]


def task(h: Harness, task_id: str) -> Task:
    with h.sessions() as s:
        found = s.get(Task, task_id)
        assert found is not None
        s.expunge(found)
        return found


def history(h: Harness, task_id: str) -> list[tuple[str | None, str, int | None]]:
    with h.sessions() as s:
        return [
            tuple(row)
            for row in s.execute(
                select(StateEvent.from_state, StateEvent.to_state, StateEvent.attempt)
                .where(StateEvent.entity_id == task_id)
                .order_by(StateEvent.at, StateEvent.id)
            )
        ]


def test_a_seeded_hop_is_one_statement_with_the_usual_rows(pg_harness: Harness) -> None:
    h = pg_harness
    warm, warm_seed = first_hop(h, chain("noop", "noop"))
    h.engine.run(warm, {"a1": new_id()}, warm_seed)  # prepares the statement, warms caches
    a0, seed = first_hop(h, chain("noop", "noop"))
    assert seed["activity"] == "a0" and seed["vars"] == {} and seed["inputs"] is None
    a1 = new_id()
    with Statements(h.db) as seen:
        result = h.engine.run(a0, {"a1": a1}, seed)
    # A plain successor: only its own columns are parameters (worker.hop._plain).
    assert [s.split("(", 1)[0] for s in seen.sent] == ["EXECUTE carillon_hop_1_0_plain"]
    assert result.status == "done" and result.continue_chain and set(result.seeds) == {a1}
    done = task(h, a0)
    assert (done.state, done.attempt, done.worker, done.reason) == ("done", 1, "test", None)
    assert done.outlets == ["done"] and done.started_at is not None
    assert done.heartbeat_at == done.started_at and done.finished_at is not None
    assert history(h, a0) == [
        (None, "pending", None),
        ("pending", "running", 1),
        ("running", "done", 1),
    ]
    successor = task(h, a1)
    assert (successor.state, successor.parent_id, successor.activity) == ("pending", a0, "a1")
    assert (successor.job_id, successor.version, successor.workflow_id) == (
        done.job_id,
        done.version,
        done.workflow_id,
    )
    assert successor.created_at == successor.updated_at == done.finished_at
    assert history(h, a1) == [(None, "pending", None)]


def test_a_successor_that_is_not_plain_is_written_whole(pg_harness: Harness) -> None:
    """A waiting successor (a wait, with its due time) is not a plain row: the hop sends all
    its columns, and writes what the usual path would."""
    h = pg_harness
    a0, seed = first_hop(h, chain("noop", {"type": "wait", "duration": "1h"}))
    a1 = new_id()
    with Statements(h.db) as seen:
        result = h.engine.run(a0, {"a1": a1}, seed)
    assert [s.split("(", 1)[0] for s in seen.sent if s.startswith("EXECUTE")] == [
        "EXECUTE carillon_hop_1_0"
    ]
    assert result.status == "done" and not result.continue_chain  # a1 is no pending link
    with h.sessions() as s:
        waiting = s.scalars(select(Task).where(Task.parent_id == a0)).one()
    assert (waiting.state, waiting.activity) == ("waiting", "a1")
    assert (waiting.reason or "").startswith("timer due at")
    assert waiting.due_at is not None and waiting.due_at > waiting.created_at
    assert history(h, waiting.id) == [(None, "waiting", None)]


@pytest.mark.parametrize("plain", [True, False], ids=["plain", "whole"])
def test_a_successor_id_already_taken_fails_the_whole_hop(pg_harness: Harness, plain: bool) -> None:
    """Nothing of a hop is written when one of its rows cannot be: not the completion, not
    the events (the statement reads no insert back to check it)."""
    h = pg_harness
    a0, raw = first_hop(h, chain("noop", "noop"))
    seed = Seed.parse(raw)
    assert seed is not None
    fence = seed.fence()
    assert fence is not None
    now = dt.datetime.now(dt.UTC)
    done = hop.Completion(now, now, "test", ["done"], {}, {}, [])
    created = now if plain else now - dt.timedelta(seconds=1)  # not plain: another time
    taken = with_defaults(
        {
            "id": a0,  # its own id: taken
            "workflow_id": seed.workflow_id,
            "job_id": seed.job_id,
            "parent_id": a0,
            "activity": "a1",
            "activity_type": "noop",
            "version": seed.version,
            "state": "pending",
            "attempt": 0,
            "vars": {},
            "counts": {},
            "created_at": created,
            "updated_at": created,
        }
    )
    assert hop._plain(taken, a0, fence, done) is plain
    with h.db.connect() as connection:
        driver: Any = connection.connection.dbapi_connection
        driver.autocommit = True  # as Engine._autocommit runs it
        with pytest.raises(IntegrityError):
            hop.claim_complete_and_create(connection, a0, fence, done, [taken])
        driver.autocommit = False
    assert task(h, a0).state == "pending"
    assert history(h, a0) == [(None, "pending", None)]


@pytest.mark.parametrize("shape", [(1, 0, True), (1, 0, False), (0, 0, False)])
def test_a_hop_reads_its_task_by_id_alone_in_a_generic_plan(
    pg_harness: Harness, shape: tuple[int, int, bool]
) -> None:
    """PostgreSQL runs a prepared statement with a generic plan; in it, the hop must read its
    task through the primary key. With the seed's values as separate equalities it took the
    (workflow, activity, created) index and read every task of that activity in the
    workflow, on every hop (a never-analyzed table, as this test database's)."""
    form = hop._hop(*shape).form(pg_harness.db.dialect)
    name = f"plan_check_{'_'.join(str(int(part)) for part in shape)}"
    prepare = form.prepare.replace(f"PREPARE {hop._hop(*shape).name}", f"PREPARE {name}", 1)
    nulls = ", ".join(["NULL"] * len(form.names))
    with pg_harness.db.connect() as connection:
        connection.exec_driver_sql(prepare)
        try:
            connection.exec_driver_sql("SET LOCAL plan_cache_mode = force_generic_plan")
            plan = connection.exec_driver_sql(f"EXPLAIN EXECUTE {name}({nulls})").scalars().all()
        finally:
            connection.rollback()
            connection.exec_driver_sql(f"DEALLOCATE {name}")
    lines = [line.strip() for line in plan]
    scans = [line for line in lines if "Scan" in line and " on task" in line]
    assert scans and all("Index Scan using pk_task on task" in scan for scan in scans), lines
    conditions = [line for line in lines if line.startswith("Index Cond:") and "(id)" in line]
    assert conditions and all("AND" not in condition for condition in conditions), lines


#: Every column of a workflow's tasks as PostgreSQL stores it (JSON text, NULL or not), but
#: the ids and instants, which differ from run to run.
STORED = text(
    """
    SELECT t.activity, t.activity_type, t.state, t.attempt, t.vars::text, t.counts::text,
           t.outlets::text, t.outlets IS NULL, t.inputs::text, t.inputs IS NULL,
           t.progress::text, t.progress IS NULL, t.reason, t.error, t.fired, t.attempt_base,
           t.version, t.worker IS NULL, p.activity AS parent, t.job_id = p.job_id,
           t.started_at IS NULL, t.finished_at IS NULL, t.heartbeat_at IS NULL,
           t.due_at IS NULL, t.last_trigger_at IS NULL, t.updated_at >= t.created_at
    FROM task t LEFT JOIN task p ON p.id = t.parent_id
    WHERE t.workflow_id = :workflow_id ORDER BY t.activity
    """
)


def test_a_started_workflow_publishes_its_first_task_with_its_seed(pg_harness: Harness) -> None:
    h = pg_harness
    h.start(chain("noop"), org=unique("org"))
    segment = h.stub.queue[0]
    first = segment.tasks[0] if hasattr(segment, "tasks") else segment
    start_id = first.args[0]
    assert first.kwargs["seed"]["activity"] == "start1"
    with Statements(h.db) as seen:
        h.stub.drain()
    executed = [statement for statement in seen.sent if statement.startswith("EXECUTE")]
    assert executed[0].startswith("EXECUTE carillon_hop_1_0_plain(")  # start1, from its seed
    assert task(h, start_id).state == "done"


DECIDE = {
    "type": "test",
    "conditions": [{"name": "yes", "when": {"field": "vars.x", "op": "isEmpty"}}],
    "outlets": ["yes", "default"],
}


@pytest.mark.parametrize(
    ("kinds", "expected"),
    [
        (("noop", DECIDE, "noop"), ("a1", "logs", "condition 'yes' is true")),
        (("emit", "collect", "noop"), ("a1", "vars", {"seen_a1": ["a0"]})),
    ],
    ids=["test-activity-logs", "carried-inputs"],
)
def test_seeded_and_usual_runs_write_the_same_workflow(
    pg_harness: Harness, kinds: tuple[Any, ...], expected: tuple[str, str, Any]
) -> None:
    """The whole chain through the stub (which seeds as a worker does) then with seeding off:
    the same tasks, states, attempts, vars, inputs, events and log lines."""
    h = pg_harness
    body = chain(*kinds)
    shapes = []
    for seeded in (True, False):
        h.engine.settings = dataclasses.replace(h.settings, seeded_hops=seeded)
        h.engine._seeds_on = None
        name = h.start({**body, "id": unique("same")}, org=unique("org"))
        with Statements(h.db) as seen:
            h.stub.drain()
        hops = sum(s.startswith("EXECUTE carillon_hop") for s in seen.sent)
        assert (hops > 0) is seeded
        with h.sessions() as s:
            workflow = s.scalars(select(Workflow).where(Workflow.name == name)).one()
            rows = s.execute(STORED, {"workflow_id": workflow.id}).all()
            events = sorted(
                (e.to_state, e.from_state or "")
                for e in s.execute(
                    select(StateEvent.to_state, StateEvent.from_state).where(
                        StateEvent.workflow_id == workflow.id, StateEvent.entity == "task"
                    )
                )
            )
            lines = sorted(
                s.scalars(select(LogLine.message).where(LogLine.workflow_id == workflow.id))
            )
        shapes.append((workflow.state, [tuple(r) for r in rows], events, lines))
    assert shapes[0] == shapes[1]
    state, rows, _, lines = shapes[0]
    assert state == "finished"
    activity, what, value = expected
    if what == "logs":
        assert any(value in line for line in lines)
    else:
        assert next(json.loads(row[4]) for row in rows if row[0] == activity) == value


@pytest.mark.parametrize(
    "change",
    [
        {"vars": {"x": 1}},
        {"counts": {"n": 2}},
        {"inputs": {"a0": {"kind": "file", "path": "/etc/passwd"}}},
        {"activity": "a1"},
        {"job_id": "someone-else"},
        {"version": 99},
        {"workflow_id": 2**31 - 1},
    ],
    ids=["vars", "counts", "inputs", "activity", "job", "version", "workflow"],
)
def test_a_seed_that_does_not_match_its_row_is_ignored(
    pg_harness: Harness, change: dict[str, Any]
) -> None:
    """The row is the authority: the usual claim runs the task on what the row holds."""
    h = pg_harness
    a0, seed = first_hop(h, chain("noop", "noop"))
    a1 = new_id()
    result = h.engine.run(a0, {"a1": a1}, {**seed, **change})
    assert result.status == "done" and result.continue_chain
    done, successor = task(h, a0), task(h, a1)
    assert (done.state, done.attempt, done.vars, done.counts) == ("done", 1, {}, {})
    assert (successor.vars, successor.counts, successor.inputs) == ({}, {}, None)
    assert history(h, a0) == [
        (None, "pending", None),
        ("pending", "running", 1),
        ("running", "done", 1),
    ]


def deep(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(levels):
        value = {"d": value}
    return value


#: Not seeds at all.
NOT_SEEDS: list[Any] = ["a seed", 42, ["workflow_id"], {}, {"workflow_id": 1}]
#: Changes to a real seed that make it malformed.
MALFORMED: list[dict[str, Any]] = [
    {"extra": 1},
    {"workflow_id": "1"},
    {"workflow_id": -1},
    {"workflow_id": True},
    {"version": 2**63},
    {"activity": "x" * 10_000},
    {"activity": "'; DROP TABLE task; --"},
    {"job_id": None},
    {"vars": ["not", "a", "mapping"]},
    {"inputs": "a string"},
    {"vars": {"n": math.nan}},
    {"vars": {"n": math.inf}},
    {"vars": deep(5_000)},
    {"vars": {"big": "x" * 2_000_000}},
]


@pytest.mark.parametrize(
    "hostile",
    [*NOT_SEEDS, *MALFORMED],
    ids=[f"not-a-seed{i}" for i in range(len(NOT_SEEDS))]
    + [f"malformed{i}" for i in range(len(MALFORMED))],
)
def test_hostile_seeds_change_nothing_by_themselves(pg_harness: Harness, hostile: Any) -> None:
    h = pg_harness
    a0, seed = first_hop(h, chain("noop", "noop"))
    given = {**seed, **hostile} if any(hostile is m for m in MALFORMED) else hostile
    a1 = new_id()
    result = h.engine.run(a0, {"a1": a1}, given)
    assert result.status == "done"
    done = task(h, a0)
    assert (done.state, done.attempt, done.vars) == ("done", 1, {})
    assert task(h, a1).vars == {}


def test_a_duplicate_seeded_message_is_skipped(pg_harness: Harness) -> None:
    h = pg_harness
    a0, seed = first_hop(h, chain("noop", "noop"))
    a1 = new_id()
    assert h.engine.run(a0, {"a1": a1}, seed).status == "done"
    again = h.engine.run(a0, {"a1": a1}, seed)
    assert again.status == "skipped" and not again.continue_chain
    assert task(h, a0).attempt == 1
    with h.sessions() as s:
        assert s.scalar(select(Task.id).where(Task.parent_id == a0)) == a1
    assert len(history(h, a0)) == 3


def test_a_paused_workflow_holds_a_seeded_task(pg_harness: Harness) -> None:
    h = pg_harness
    body = chain("noop", "noop")
    a0, seed = first_hop(h, body)
    with h.sessions() as s:
        name = s.scalar(select(Workflow.name).join(Task).where(Task.id == a0))
    assert name is not None
    h.engine.command(None, name, "pause")
    result = h.engine.run(a0, {"a1": new_id()}, seed)
    assert result.status == "skipped" and not result.continue_chain
    held = task(h, a0)
    assert (held.state, held.attempt) == ("held", 0)


class _ReadsDatabase(ActivityType):
    """Quick, not pure: reads the database (the seeded hop must leave it alone)."""

    name = "seedTestReads"
    quick = True

    def run(self, ctx: Context) -> Outcome:
        one = ctx.session.execute(select(1)).scalar_one()
        return Outcome(vars={"read": one})


class _ClaimsPurity(_ReadsDatabase):
    """Says it is pure but reads the database: the seeded run fails, the usual one works."""

    name = "seedTestLiar"
    pure = True


class _PureFailure(ActivityType):
    name = "seedTestFails"
    quick = True
    pure = True

    def run(self, ctx: Context) -> Outcome:
        raise ActivityError("pure and failing")


class _PureBig(ActivityType):
    name = "seedTestBig"
    quick = True
    pure = True

    def run(self, ctx: Context) -> Outcome:
        return Outcome(vars={"big": "x" * (MAX_SEED_BYTES + 1)})


@pytest.fixture
def test_types() -> Iterator[None]:
    registry.load()
    kinds = [_ReadsDatabase(), _ClaimsPurity(), _PureFailure(), _PureBig()]
    for kind in kinds:
        registry._TYPES[kind.name] = kind  # test-only types, removed below
    try:
        yield
    finally:
        for kind in kinds:
            registry._TYPES.pop(kind.name, None)


@pytest.mark.parametrize("kind", ["seedTestReads", "seedTestLiar"])
def test_activities_that_read_the_database_take_the_usual_claim(
    pg_harness: Harness, test_types: None, kind: str
) -> None:
    h = pg_harness
    a0, seed = first_hop(h, chain(kind, "noop"))
    a1 = new_id()
    with Statements(h.db) as seen:
        result = h.engine.run(a0, {"a1": a1}, seed)
    assert result.status == "done" and result.continue_chain
    # Neither is run from its seed: one is not pure, the other fails before any statement.
    assert not any(s.startswith("EXECUTE carillon_hop") for s in seen.sent)
    assert task(h, a0).vars == {"read": 1} and task(h, a1).vars == {"read": 1}


def test_a_failing_pure_activity_fails_once_the_usual_way(
    pg_harness: Harness, test_types: None
) -> None:
    h = pg_harness
    a0, seed = first_hop(h, chain("seedTestFails", "noop"))
    result = h.engine.run(a0, {"a1": new_id()}, seed)
    assert result.status == "failed" and not result.continue_chain
    failed = task(h, a0)
    assert (failed.state, failed.attempt) == ("failed", 1)
    assert failed.error is not None and "pure and failing" in failed.error
    assert ("running", "done", 1) not in history(h, a0)


def test_large_vars_are_not_seeded(pg_harness: Harness, test_types: None) -> None:
    h = pg_harness
    a0, seed = first_hop(h, chain("seedTestBig", "noop"))
    a1 = new_id()
    result = h.engine.run(a0, {"a1": a1}, seed)
    assert result.status == "done" and result.continue_chain and result.seeds == {}
    assert len(task(h, a1).vars["big"]) == MAX_SEED_BYTES + 1


def to_the_end(h: Harness, kinds: tuple[Any, ...] = ("noop",)) -> tuple[str, dict[str, Any]]:
    """Start a chain and run it by hand up to end1: (end1's task id, its seed)."""
    task_id, seed = first_hop(h, chain(*kinds))
    names = [*(f"a{i}" for i in range(1, len(kinds))), "end1"]
    for name in names:
        following = new_id()
        result = h.engine.run(task_id, {name: following}, seed)
        assert result.continue_chain and set(result.seeds) == {following}
        task_id, seed = following, result.seeds[following]
    return task_id, seed


def workflow_of(h: Harness, task_id: str) -> Workflow:
    with h.sessions() as s:
        workflow = s.scalars(select(Workflow).join(Task).where(Task.id == task_id)).one()
        s.expunge(workflow)
        return workflow


def workflow_records(h: Harness, workflow_id: int) -> tuple[list[Any], list[str]]:
    """(the workflow's own state events, its log lines without a task)."""
    with h.sessions() as s:
        events = s.execute(
            select(StateEvent.from_state, StateEvent.to_state).where(
                StateEvent.workflow_id == workflow_id, StateEvent.entity == "workflow"
            )
        ).all()
        lines = s.scalars(
            select(LogLine.message).where(
                LogLine.workflow_id == workflow_id, LogLine.task_id.is_(None)
            )
        ).all()
    return [tuple(e) for e in events], list(lines)


def test_an_end_finishes_its_workflow_in_the_same_round_trip(pg_harness: Harness) -> None:
    h = pg_harness
    warm, warm_seed = to_the_end(h)
    h.engine.run(warm, {}, warm_seed)  # prepares the three statements
    end, seed = to_the_end(h)
    with Statements(h.db) as seen:
        result = h.engine.run(end, {}, seed)
    assert result.status == "done" and not result.continue_chain and result.seeds == {}
    assert [s.split("(", 1)[0] for s in seen.sent] == ["EXECUTE carillon_hop_0_0"]
    assert [part.split("(", 1)[0] for part in seen.sent[0].split("; ")] == [
        "EXECUTE carillon_hop_0_0",
        "EXECUTE carillon_hop_finish_lock",
        "EXECUTE carillon_hop_finish",
    ]
    done, workflow = task(h, end), workflow_of(h, end)
    assert (done.state, done.attempt, done.outlets) == ("done", 1, [])
    assert history(h, end) == [
        (None, "pending", None),
        ("pending", "running", 1),
        ("running", "done", 1),
    ]
    assert workflow.state == "finished" and workflow.ended_at == done.finished_at
    events, lines = workflow_records(h, workflow.id)
    assert events.count(("started", "finished")) == 1 and lines.count("workflow finished") == 1


def two_ends(prefix: str, through: tuple[str, str] | None = None) -> dict[str, Any]:
    """start1 -> fork1 -> end1 and end2, each through a noop of `through` if given."""
    ends = ("end1", "end2")
    heads = through or ends
    activities: list[dict[str, Any]] = [
        {"name": "start1", "type": "start", "transitions": {"done": "fork1"}},
        {"name": "fork1", "type": "fork", "transitions": {"done": list(heads)}},
    ]
    if through:
        activities += [
            {"name": head, "type": "noop", "transitions": {"done": end}}
            for head, end in zip(through, ends, strict=True)
        ]
    activities += [{"name": end, "type": "end"} for end in ends]
    return {"id": unique(prefix), "activities": activities}


def test_an_end_leaves_the_workflow_started_while_another_branch_runs(
    pg_harness: Harness,
) -> None:
    """The first of two branches to end finds the other still pending: only the second one
    finishes the workflow (both ends from their seeds, through the stub as a worker runs)."""
    h = pg_harness
    name = h.start(two_ends("branches", through=("x", "y")), org=unique("org"))
    with Statements(h.db) as seen:
        h.stub.drain()
    finishing = [s for s in seen.sent if s.startswith("EXECUTE carillon_hop_0_0(")]
    assert len(finishing) == 2  # end1 and end2 each took the finishing hop
    with h.sessions() as s:
        workflow = s.scalars(select(Workflow).where(Workflow.name == name)).one()
        ends = s.scalars(
            select(Task.finished_at).where(
                Task.workflow_id == workflow.id, Task.activity.in_(["end1", "end2"])
            )
        ).all()
    assert workflow.state == "finished" and workflow.ended_at == max(ends)
    events, lines = workflow_records(h, workflow.id)
    assert events.count(("started", "finished")) == 1 and lines.count("workflow finished") == 1


def test_two_ends_at_once_finish_the_workflow_once(pg_harness: Harness) -> None:
    """Both seeded ends complete, then wait for the workflow's lock (held here). Whichever
    gets it first must not see the other's end, done but not committed, as finished; the
    second, whose finish reads after the first committed, finishes the workflow."""
    h = pg_harness
    body = two_ends("race")
    warm, warm_seed = to_the_end(h)
    h.engine.run(warm, {}, warm_seed)  # prepared on the pool's connections it may use
    h.start(body, org=unique("org"))
    segment = h.stub.queue.popleft()
    start_link, fork_link, ends = segment.tasks
    fork_seed = h.engine.run(*start_link.args, start_link.kwargs["seed"]).seeds
    h.engine.run(*fork_link.args, fork_seed[fork_link.args[0]])
    end_ids = [link.args[0] for link in ends.tasks]
    with h.sessions() as s:
        rows = s.scalars(select(Task).where(Task.id.in_(end_ids))).all()
        seeds = {row.id: {key: getattr(row, key) for key in SEED_KEYS} for row in rows}
        workflow_id = rows[0].workflow_id
    outcomes: dict[str, Any] = {}

    def run_end(task_id: str) -> None:
        try:
            outcomes[task_id] = h.engine.run(task_id, {}, seeds[task_id])
        except Exception as exc:  # reported by the assertion below
            outcomes[task_id] = exc

    with h.db.connect() as blocker:
        blocker.execute(
            select(Workflow.id).where(Workflow.id == workflow_id).with_for_update(key_share=True)
        )
        threads = [threading.Thread(target=run_end, args=(end_id,)) for end_id in end_ids]
        for thread in threads:
            thread.start()
        with h.db.connect() as watcher:
            # The first end waits for the blocker, the second (queued) for the first.
            waiting = text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND cardinality(pg_blocking_pids(pid)) > 0"
            )

            def both_waiting() -> bool:
                count = watcher.scalar(waiting)
                watcher.rollback()  # the view is read once per transaction: read it anew
                return count == 2

            wait_for(both_waiting, 30, "both ends waiting for the workflow")
        blocker.rollback()
    for thread in threads:
        thread.join(30)
    assert {type(outcome).__name__ for outcome in outcomes.values()} == {"RunResult"}
    assert all(task(h, end_id).state == "done" for end_id in end_ids)
    assert workflow_of(h, end_ids[0]).state == "finished"
    events, lines = workflow_records(h, workflow_id)
    assert events.count(("started", "finished")) == 1 and lines.count("workflow finished") == 1


def test_without_prepared_statements_an_end_finishes_the_usual_way(pg_harness: Harness) -> None:
    h = pg_harness
    end, seed = to_the_end(h)
    h.engine.settings = dataclasses.replace(h.settings, prepared_statements=False)
    with Statements(h.db) as seen:
        result = h.engine.run(end, {}, seed)
    assert result.status == "done"
    assert not any("carillon_hop" in s for s in seen.sent)
    assert workflow_of(h, end).state == "finished"


def test_an_end_whose_seed_does_not_match_finishes_the_usual_way(pg_harness: Harness) -> None:
    """The finishing query changes nothing when the hop's fence fails (the lock and the
    finish are for a task this hop completed): the usual claim then runs the end."""
    h = pg_harness
    end, seed = to_the_end(h)
    with Statements(h.db) as seen:
        result = h.engine.run(end, {}, {**seed, "vars": {"forged": True}})
    assert result.status == "done"
    assert sum(s.startswith("EXECUTE carillon_hop_0_0(") for s in seen.sent) == 1
    assert task(h, end).vars == {}
    workflow = workflow_of(h, end)
    assert workflow.state == "finished"
    events, lines = workflow_records(h, workflow.id)
    assert events.count(("started", "finished")) == 1 and lines.count("workflow finished") == 1
