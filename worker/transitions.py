"""The one place that changes states: compare-and-set updates plus their event rows."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from typing import Any, cast

from sqlalchemy import (
    Row,
    Table,
    and_,
    bindparam,
    exists,
    func,
    insert,
    literal,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.sql.selectable import CTE

from worker.db import utcnow
from worker.models import Job, LogLine, StateEvent, Task, Workflow
from worker.prepared import PreparedStatement
from worker.states import TaskState, WorkflowState, task_can, workflow_can

TASK = cast(Table, Task.__table__)
EVENT = cast(Table, StateEvent.__table__)
WORKFLOW = cast(Table, Workflow.__table__)
LOG = cast(Table, LogLine.__table__)
JOB = cast(Table, Job.__table__)


def relaxed_commit() -> Any:
    """set_config(synchronous_commit, off) for the statement's transaction alone: its COMMIT
    returns before the WAL reaches the disk. Written as constants: a bound value would be one
    more parameter of every EXECUTE."""
    return func.set_config(
        literal_column("'synchronous_commit'"), literal_column("'off'"), literal_column("true")
    )


def row_binds(table: Table, keys: Iterable[str], prefix: str) -> dict[str, Any]:
    """A bound parameter per column of `keys`, named <prefix>_<column>, typed as the column."""
    return {key: bindparam(f"{prefix}_{key}", type_=table.c[key].type) for key in keys}


def row_params(
    prefix: str, rows: Iterable[Mapping[str, Any]], keys: Iterable[str]
) -> dict[str, Any]:
    """The values of rows for row_binds(..., f"{prefix}{i}"): <prefix><i>_<column>, a column
    a row does not hold as None."""
    return {
        f"{prefix}{index}_{key}": row.get(key) for index, row in enumerate(rows) for key in keys
    }


#: Which rows a claim may take: pending, or running with a stale heartbeat and attempts left,
#: and only while the workflow is started.
_CLAIMABLE = and_(
    TASK.c.id == bindparam("task_id"),
    or_(
        TASK.c.state == bindparam("pending"),
        # A redelivered message of a task whose worker died: taken over, unless the task
        # already lost its worker CARILLON_MAX_ATTEMPTS times (the reaper makes it dead).
        and_(
            TASK.c.state == bindparam("running"),
            TASK.c.heartbeat_at < bindparam("stale"),
            TASK.c.attempt - func.coalesce(TASK.c.fired, 0) - TASK.c.attempt_base
            < bindparam("max_attempts"),
        ),
    ),
    exists().where(WORKFLOW.c.id == TASK.c.workflow_id, WORKFLOW.c.state == bindparam("started")),
)
#: What a claim reads of its task.
_CLAIMED_COLUMNS = (
    TASK.c.workflow_id,
    TASK.c.job_id,
    TASK.c.activity,
    TASK.c.version,
    TASK.c.vars,
    TASK.c.counts,
    TASK.c.attempt,
    TASK.c.inputs,
    # For a task that parked: how often, and whether its timer is still set (due).
    TASK.c.fired,
    TASK.c.due_at,
)
#: Built once: the claim runs for every task, statement construction is not free.
_CLAIM = (
    update(TASK)
    .where(_CLAIMABLE)
    .values(
        state=TaskState.RUNNING.value,
        attempt=TASK.c.attempt + 1,
        started_at=bindparam("now"),
        heartbeat_at=bindparam("now"),
        updated_at=bindparam("now"),
        worker=bindparam("worker"),
        reason=None,
    )
    .returning(*_CLAIMED_COLUMNS)
)
#: On PostgreSQL the claim also lets its transaction commit without waiting for the WAL
#: flush (synchronous_commit off), in the same round trip. A PostgreSQL crash may then forget
#: the last few hundred milliseconds of claims and of quick activities (claimed, run and
#: completed in one transaction, every effect in the database): those tasks are `pending`
#: again and the tick publishes them. Effects outside the database are recorded by later
#: synchronous commits (delivery logs before a send, a long activity's completion), and a
#: synchronous commit flushes all the WAL before it, this claim included. SQLite's
#: `synchronous=NORMAL` (worker/db.py) makes the same trade on the embedded default.
_CLAIM_RELAXED = _CLAIM.returning(relaxed_commit().label("relaxed"))
#: The claim of a quick activity on PostgreSQL (claim, run and complete in one transaction):
#: the same rows, but only locked and read, with the lock the UPDATE would take (FOR NO KEY
#: UPDATE). Its completion then writes running and done in one UPDATE (_COMPLETE_CLAIMING):
#: every UPDATE of a task rewrites the row and its eight indexes (the state is indexed, so it
#: is never a HOT update), and the running state of a quick activity is never seen by anyone
#: anyway. Any other way out of the run takes the claim for real first (claim_locked).
_LOCK = (
    select(
        *(c for c in _CLAIMED_COLUMNS if c is not TASK.c.attempt),
        (TASK.c.attempt + 1).label("attempt"),
        relaxed_commit().label("relaxed"),
    )
    .where(_CLAIMABLE)
    .with_for_update(of=TASK, key_share=True)
)
#: The two claims run on every hop of PostgreSQL, prepared once per connection.
_LOCK_PREPARED = PreparedStatement("carillon_claim_lock", _LOCK)
_CLAIM_RELAXED_PREPARED = PreparedStatement("carillon_claim", _CLAIM_RELAXED)
#: Built once: completing a task is the engine's most frequent write.
_COMPLETE = (
    update(TASK)
    .where(
        TASK.c.id == bindparam("b_task_id"),
        TASK.c.state == TaskState.RUNNING.value,
        TASK.c.attempt == bindparam("b_attempt"),
    )
    .values(
        state=TaskState.DONE.value,
        updated_at=bindparam("b_now"),
        finished_at=bindparam("b_now"),
        outlets=bindparam("b_outlets", type_=TASK.c.outlets.type),
        vars=bindparam("b_vars", type_=TASK.c.vars.type),
        counts=bindparam("b_counts", type_=TASK.c.counts.type),
    )
)


#: The completion of a task claimed by _LOCK: the claim's columns and the outcome's together,
#: fenced by the attempt the lock read (the row is still pending, or running and stale).
_COMPLETE_CLAIMING = (
    update(TASK)
    .where(
        TASK.c.id == bindparam("b_task_id"),
        # Not IN (...): an expanding parameter would keep it from being prepared.
        or_(
            TASK.c.state == TaskState.PENDING.value,
            TASK.c.state == TaskState.RUNNING.value,
        ),
        TASK.c.attempt + 1 == bindparam("b_attempt"),
    )
    .values(
        state=TaskState.DONE.value,
        attempt=TASK.c.attempt + 1,
        started_at=bindparam("b_started"),
        heartbeat_at=bindparam("b_started"),
        worker=bindparam("b_worker"),
        reason=None,
        updated_at=bindparam("b_now"),
        finished_at=bindparam("b_now"),
        outlets=bindparam("b_outlets", type_=TASK.c.outlets.type),
        vars=bindparam("b_vars", type_=TASK.c.vars.type),
        counts=bindparam("b_counts", type_=TASK.c.counts.type),
    )
)


def set_workflow_state(
    session: Session,
    workflow: Workflow,
    to_state: WorkflowState,
    *,
    from_states: Iterable[str] | None = None,
    events: list[dict[str, Any]] | None = None,
    **values: Any,
) -> bool:
    """Move `workflow` to `to_state` if it is still in one of `from_states`; False otherwise.

    With `events`, its state event is buffered there (for write_events or
    record_new_tasks_last) instead of being added to the session.
    """
    allowed = [s for s in (from_states or [workflow.state]) if workflow_can(s, to_state)]
    if not allowed:
        return False
    now = utcnow()
    result = session.execute(
        update(Workflow)
        .where(Workflow.id == workflow.id, Workflow.state.in_(allowed))
        .values(state=to_state, updated_at=now, **values)
        .returning(Workflow.id)
        .execution_options(synchronize_session=False)
    )
    if result.first() is None:
        return False
    event = {
        "workflow_id": workflow.id,
        "entity": "workflow",
        "entity_id": str(workflow.id),
        "from_state": workflow.state if workflow.state in allowed else "|".join(allowed),
        "to_state": str(to_state),
        "attempt": None,
        "at": now,
    }
    if events is None:
        session.add(StateEvent(**event))
    else:
        events.append(event)
    # The UPDATE above wrote them: set them as loaded, or the flush would write them again.
    set_committed_value(workflow, "state", to_state)
    for key, value in values.items():
        set_committed_value(workflow, key, value)
    return True


def set_task_state(
    session: Session,
    task_id: str,
    workflow_id: int,
    from_state: TaskState,
    to_state: TaskState,
    *,
    attempt: int | None = None,
    events: list[dict[str, Any]] | None = None,
    **values: Any,
) -> bool:
    """Move one task from `from_state` to `to_state` (fenced by `attempt` when given).

    With `events`, the event row is appended there for the caller to write with others
    (`write_events`) before it commits: one statement instead of one per transition.
    """
    if not task_can(from_state, to_state):
        raise ValueError(f"task transition {from_state} -> {to_state} is not allowed")
    now = utcnow()
    # Core statements on the table: this is the hot path, the ORM layer costs more than the SQL.
    stmt = update(TASK).where(TASK.c.id == task_id, TASK.c.state == from_state)
    if attempt is not None:
        stmt = stmt.where(TASK.c.attempt == attempt)
    connection = session.connection()
    row = connection.execute(
        stmt.values(state=to_state, updated_at=now, **values).returning(TASK.c.attempt)
    ).first()
    if row is None:
        return False
    event = {
        "workflow_id": workflow_id,
        "entity": "task",
        "entity_id": task_id,
        "from_state": from_state,
        "to_state": to_state,
        "attempt": row[0],
        "at": now,
    }
    if events is None:
        connection.execute(insert(EVENT), [event])
    else:
        events.append(event)
    return True


def _claim_params(
    task_id: str, now: dt.datetime, stale: dt.datetime, worker: str, max_attempts: int
) -> dict[str, Any]:
    return {
        "task_id": task_id,
        "pending": TaskState.PENDING.value,
        "running": TaskState.RUNNING.value,
        "stale": stale,
        "started": WorkflowState.STARTED.value,
        "now": now,
        "worker": worker,
        "max_attempts": max_attempts,
    }


def claim_task(
    session: Session,
    task_id: str,
    now: dt.datetime,
    stale: dt.datetime,
    worker: str,
    events: list[dict[str, Any]] | None = None,
    max_attempts: int = 5,
    *,
    lock_only: bool = False,
    prepared: bool = True,
) -> Row[Any] | None:
    """pending -> running (or a running task whose heartbeat is older than `stale` and that
    has attempts left under `max_attempts`), only while its workflow is started; increments
    the attempt, the fencing token. None if not.

    With `lock_only` (PostgreSQL), the row is only locked and read, its `attempt` the one the
    claim gives: the caller then completes it with `claiming` (complete_and_create) or takes
    the claim for real with claim_locked, in the same transaction. The event is the same.
    On PostgreSQL the claim is a prepared statement unless `prepared` is False (worker.prepared).
    """
    connection = session.connection()
    postgresql = connection.dialect.name == "postgresql"
    if lock_only and not postgresql:
        raise ValueError("lock_only claims need PostgreSQL")
    statement = _LOCK_PREPARED if lock_only else _CLAIM_RELAXED_PREPARED if postgresql else _CLAIM
    params = _claim_params(task_id, now, stale, worker, max_attempts)
    if isinstance(statement, PreparedStatement):
        row = statement.execute(connection, params, enabled=prepared).first()
    else:
        row = connection.execute(statement, params).first()
    if row is None:
        return None
    event = claimed_event(task_id, row.workflow_id, row.attempt, now)
    if events is None:
        connection.execute(insert(EVENT), [event])
    else:
        events.append(event)
    return row


def claim_locked(
    session: Session,
    task_id: str,
    attempt: int,
    now: dt.datetime,
    stale: dt.datetime,
    worker: str,
    max_attempts: int = 5,
) -> None:
    """Take for real the claim of a task locked by claim_task(lock_only=True): it becomes
    running with `attempt`, as the claim would have left it (its event is already recorded)."""
    row = (
        session.connection()
        .execute(_CLAIM, _claim_params(task_id, now, stale, worker, max_attempts))
        .first()
    )
    if row is None or row.attempt != attempt:
        # The row is locked by this transaction since the claim read it: cannot happen.
        raise RuntimeError(f"task {task_id}: the locked claim could not be taken")


def complete_task(
    session: Session,
    task_id: str,
    workflow_id: int,
    attempt: int,
    *,
    outlets: list[str],
    vars: dict[str, Any],
    counts: dict[str, Any],
    events: list[dict[str, Any]],
) -> bool:
    """running -> done for the attempt that owns the task (fencing token); False if not."""
    now = utcnow()
    result = session.connection().execute(
        _COMPLETE,
        {
            "b_task_id": task_id,
            "b_attempt": attempt,
            "b_now": now,
            "b_outlets": outlets,
            "b_vars": vars,
            "b_counts": counts,
        },
    )
    if result.rowcount != 1:
        return False
    events.append(done_event(task_id, workflow_id, attempt, now))
    return True


#: Columns of a state event row, in the order of the folded statement's parameters.
EVENT_KEYS = ("workflow_id", "entity", "entity_id", "from_state", "to_state", "attempt", "at")
#: Columns of a log line a statement writes (the seeded hop, the finish of a workflow).
LOG_KEYS = ("workflow_id", "job_id", "task_id", "activity", "level", "message", "created_at")
#: Every column of a task row: the folded statement binds them all (a column left to its
#: default would get the same parameter name in each row's INSERT).
TASK_KEYS = tuple(column.key for column in TASK.columns)
#: The columns of a job row.
JOB_KEYS = tuple(column.key for column in JOB.columns)
#: Most successor rows folded into one statement; a wider fork takes separate statements.
FOLD_MAX_ROWS = 16


def complete_and_create(
    session: Session,
    task_id: str,
    workflow_id: int,
    attempt: int,
    *,
    outlets: list[str],
    vars: dict[str, Any],
    counts: dict[str, Any],
    rows: list[dict[str, Any]],
    events: list[dict[str, Any]],
    claiming: tuple[dt.datetime, str] | None = None,
    prepared: bool = True,
) -> bool:
    """running -> done for the attempt that owns the task, then the successors' `rows` (column
    values, as record_new_task takes) and every buffered event; False if fenced.

    With `claiming` (started at, worker), the task was locked by claim_task(lock_only=True)
    and `attempt` is the one its claim gives: the claim's columns are written with the
    outcome, pending (or stale running) -> done in one UPDATE. PostgreSQL, FOLD_MAX_ROWS only.

    On PostgreSQL it is one statement, one round trip instead of three (the engine's hot path):
    a data-modifying CTE. Its parts cannot see each other's rows, so the inserts are not made
    conditional on the update: a fenced attempt (nothing updated) gets False and must roll the
    transaction back, which takes the inserts with it. Elsewhere, one statement per part.
    """
    connection = session.connection()
    foldable = connection.dialect.name == "postgresql" and len(rows) <= FOLD_MAX_ROWS
    if claiming is not None and not foldable:
        raise ValueError("a claiming completion needs PostgreSQL and at most FOLD_MAX_ROWS rows")
    if not foldable:
        if not complete_task(
            session,
            task_id,
            workflow_id,
            attempt,
            outlets=outlets,
            vars=vars,
            counts=counts,
            events=events,
        ):
            return False
        for row in rows:
            record_new_task(session, row, events)
        return True
    now = utcnow()
    events.append(done_event(task_id, workflow_id, attempt, now))
    events.extend(created_event(row) for row in rows)
    params: dict[str, Any] = {
        "b_task_id": task_id,
        "b_attempt": attempt,
        "b_now": now,
        "b_outlets": outlets,
        "b_vars": vars,
        "b_counts": counts,
    }
    if claiming is not None:
        params.update({"b_started": claiming[0], "b_worker": claiming[1]})
    params.update(_insert_params(rows, events))
    statement = _folded(len(rows), len(events), claiming is not None)
    done, created = statement.execute(connection, params, enabled=prepared).one()
    if done != 1:
        return False
    if created != len(rows):
        # Successor ids exist only once their predecessor is done: cannot happen while this
        # attempt owns the task (its claim holds the row). Refuse rather than lose them.
        raise RuntimeError(f"task {task_id}: {len(rows) - created} successor row(s) already exist")
    events.clear()
    return True


@lru_cache(maxsize=128)
def _folded(n_rows: int, n_events: int, claiming: bool = False) -> PreparedStatement:
    """The statement of complete_and_create for one shape, built once (statements are cached
    by shape: building and compiling one costs more than its round trip), prepared on
    PostgreSQL (worker.prepared) under a name that says its shape."""
    done = (_COMPLETE_CLAIMING if claiming else _COMPLETE).returning(TASK.c.id).cte("done")
    created, count, logged = _inserts(n_rows, n_events)
    counted = select(select(func.count()).select_from(done).scalar_subquery(), count)
    name = f"carillon_fold_{n_rows}_{n_events}_{'claiming' if claiming else 'claimed'}"
    return PreparedStatement(name, counted.add_cte(*created, *logged))


@lru_cache(maxsize=32)
def _new_rows(
    n_rows: int, n_events: int, n_jobs: int = 0, n_lines: int = 0, relaxed: bool = False
) -> PreparedStatement:
    """The statement of record_new_tasks_last for one shape (as _folded, without a completion)."""
    created, count, logged = _inserts(n_rows, n_events)
    jobs = [_insert_values(JOB, JOB_KEYS, f"j{i}").cte(f"job{i}") for i in range(n_jobs)]
    lines = [_insert_values(LOG, LOG_KEYS, f"l{i}").cte(f"line{i}") for i in range(n_lines)]
    columns = [count]
    if relaxed:
        columns.append(relaxed_commit())
    name = f"carillon_new_{n_rows}_{n_events}_{n_jobs}_{n_lines}{'_relaxed' if relaxed else ''}"
    return PreparedStatement(name, select(*columns).add_cte(*jobs, *lines, *created, *logged))


def _insert_values(table: Table, keys: tuple[str, ...], prefix: str) -> Any:
    """A one-row INSERT of `keys`, row values named <prefix>_<column>."""
    return insert(table).values(row_binds(table, keys, prefix))


def _insert_params(rows: list[dict[str, Any]], events: list[dict[str, Any]]) -> dict[str, Any]:
    """The values of _inserts' CTEs: row i's columns as t{i}_<column>, event i's as
    e{i}_<column>."""
    return {
        **row_params("t", (with_defaults(row) for row in rows), TASK_KEYS),
        **row_params("e", events, EVENT_KEYS),
    }


def _inserts(n_rows: int, n_events: int) -> tuple[list[CTE], Any, list[CTE]]:
    """(task row INSERTs, how many rows they wrote, event INSERTs) as CTEs of one statement,
    row i's values named t{i}_<column>, event i's e{i}_<column>.

    One single-row INSERT per row: SQLAlchemy does not cache multi-row VALUES statements,
    and compiling one on every run would cost more than the round trips it saves.
    """
    created = [
        # ON CONFLICT DO NOTHING: a fenced attempt may find its successors created by the
        # attempt that owns the task; it rolls back on `done` = 0 instead of failing here.
        pg_insert(TASK)
        .values(row_binds(TASK, TASK_KEYS, f"t{i}"))
        .on_conflict_do_nothing()
        .returning(TASK.c.id)
        .cte(f"created{i}")
        for i in range(n_rows)
    ]
    count = sum(
        (select(func.count()).select_from(cte).scalar_subquery() for cte in created), literal(0)
    )
    logged = [_insert_values(EVENT, EVENT_KEYS, f"e{i}").cte(f"logged{i}") for i in range(n_events)]
    return created, count, logged


def claimed_event(task_id: str, workflow_id: int, attempt: int, now: dt.datetime) -> dict[str, Any]:
    """The event of a claim: from pending on a first attempt (a takeover's state is unknown)."""
    return {
        "workflow_id": workflow_id,
        "entity": "task",
        "entity_id": task_id,
        "from_state": TaskState.PENDING.value if attempt == 1 else None,
        "to_state": TaskState.RUNNING.value,
        "attempt": attempt,
        "at": now,
    }


def done_event(task_id: str, workflow_id: int, attempt: int, now: dt.datetime) -> dict[str, Any]:
    return {
        "workflow_id": workflow_id,
        "entity": "task",
        "entity_id": task_id,
        "from_state": TaskState.RUNNING.value,
        "to_state": TaskState.DONE.value,
        "attempt": attempt,
        "at": now,
    }


def created_event(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "workflow_id": row["workflow_id"],
        "entity": "task",
        "entity_id": row["id"],
        "from_state": None,
        "to_state": row["state"],
        "attempt": None,
        "at": row["created_at"],
    }


def write_events(session: Session, events: list[dict[str, Any]]) -> None:
    """Write buffered state events in one statement, then forget them."""
    if events:
        session.connection().execute(insert(EVENT), events)
        events.clear()


def set_tasks_state(
    session: Session,
    workflow_id: int,
    from_state: TaskState,
    to_state: TaskState,
    *,
    task_ids: Iterable[str] | None = None,
    **values: Any,
) -> list[str]:
    """Move every task of a workflow in `from_state` (or just `task_ids`); returns their ids."""
    if not task_can(from_state, to_state):
        raise ValueError(f"task transition {from_state} -> {to_state} is not allowed")
    now = utcnow()
    stmt = update(Task).where(Task.workflow_id == workflow_id, Task.state == from_state)
    if task_ids is not None:
        stmt = stmt.where(Task.id.in_(list(task_ids)))
    ids = [
        row[0]
        for row in session.execute(
            stmt.values(state=to_state, updated_at=now, **values)
            .returning(Task.id)
            .execution_options(synchronize_session=False)
        )
    ]
    if ids:
        session.execute(
            insert(StateEvent),
            [
                {
                    "workflow_id": workflow_id,
                    "entity": "task",
                    "entity_id": task_id,
                    "from_state": from_state,
                    "to_state": to_state,
                    "at": now,
                }
                for task_id in ids
            ],
        )
    return ids


def record_new_task(
    session: Session, task: Task | dict[str, Any], events: list[dict[str, Any]] | None = None
) -> None:
    """Insert a new task row (an object or its column values) with its creation event.

    With `events`, the creation event is buffered there for `write_events`.
    """
    row = task if isinstance(task, dict) else _row(task)
    session.connection().execute(insert(TASK), [row])
    event = created_event(row)
    if events is None:
        session.connection().execute(insert(EVENT), [event])
    else:
        events.append(event)


def record_new_tasks(
    session: Session, rows: list[dict[str, Any]], events: list[dict[str, Any]]
) -> None:
    """Insert new task rows (column values) in one statement; their creation events are
    buffered in `events` for `write_events`."""
    if rows:
        session.connection().execute(insert(TASK), [with_defaults(row) for row in rows])
        events.extend(created_event(row) for row in rows)


def record_new_tasks_last(
    session: Session,
    rows: list[dict[str, Any]],
    events: list[dict[str, Any]],
    *,
    jobs: Sequence[dict[str, Any]] = (),
    lines: Sequence[dict[str, Any]] = (),
    relaxed: bool = False,
    prepared: bool = True,
) -> None:
    """New task rows (column values) and every buffered state event, theirs included, in one
    statement on PostgreSQL (FOLD_MAX_ROWS rows at most; elsewhere record_new_tasks and
    write_events); the events are then forgotten. For a transaction's last write: only its
    COMMIT then separates the rows' creation from their publication.

    `jobs` (every column of job rows) and log `lines` (every column of log_line rows but the
    id) go in the same statement, before the rows that refer to them. With `relaxed`, the
    transaction's COMMIT does not wait for the WAL flush (synchronous_commit off for it
    alone): for writes that are made again if a crash of the database loses them.
    """
    connection = session.connection()
    foldable = len(rows) + len(jobs) + len(lines) <= FOLD_MAX_ROWS
    if connection.dialect.name != "postgresql" or not rows or not foldable:
        if jobs:
            connection.execute(insert(JOB), list(jobs))
        if lines:
            connection.execute(insert(LOG), list(lines))
        record_new_tasks(session, rows, events)
        write_events(session, events)
        return
    events.extend(created_event(row) for row in rows)
    statement = _new_rows(len(rows), len(events), len(jobs), len(lines), relaxed)
    params = {
        **_insert_params(rows, events),
        **row_params("j", jobs, JOB_KEYS),
        **row_params("l", lines, LOG_KEYS),
    }
    created = statement.execute(connection, params, enabled=prepared).one()[0]
    if created != len(rows):
        raise RuntimeError(f"{len(rows) - created} new task id(s) already exist")
    events.clear()


def task_values(task: Task) -> dict[str, Any]:
    """A task object as the column values record_new_tasks takes."""
    return _row(task)


def _row(task: Task) -> dict[str, Any]:
    """A task object as column values, with the ORM defaults the object did not set."""
    return with_defaults({column.key: getattr(task, column.key) for column in TASK.columns})


def with_defaults(row: dict[str, Any]) -> dict[str, Any]:
    """Every column of a task row: the given values, the column defaults for the others."""
    values: dict[str, Any] = {}
    for key, default, call in _task_defaults():
        value = row.get(key)
        if value is None and default is not None:
            value = default(None) if call else default
        values[key] = value
    return values


@lru_cache(maxsize=1)
def _task_defaults() -> tuple[tuple[str, Any, bool], ...]:
    """(column, default, whether the default is a function) of each task column, read once:
    with_defaults runs for every successor row of every hop."""
    found = []
    for column in TASK.columns:
        arg = getattr(column.default, "arg", None) if column.default is not None else None
        found.append((column.key, arg, callable(arg)))
    return tuple(found)
