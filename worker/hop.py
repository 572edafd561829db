"""A seeded hop: a pure quick activity claimed, completed and continued in one statement.

When a quick activity completes on PostgreSQL and Celery's chain goes on to its successor,
the successor's message carries a `Seed`: the row the completion just wrote for it (workflow,
version, job, activity, vars, counts, inputs). The worker that takes the message can then
run a pure activity (worker.activities.base.ActivityType.pure: its outcome comes from those
values alone) before claiming anything, and write everything in one autocommit statement:

- the task goes pending -> done, only if its row still holds exactly what the seed says and
  its workflow is started (otherwise nothing is written and the engine takes its usual path,
  which holds, aborts, skips or re-runs the task as the row says);
- its successors' rows, its state events and its log lines are inserted only if it did.

One round trip instead of four (BEGIN, claim, completion, COMMIT) on the engine's hottest
path; the planner is spared too (worker.prepared). Nothing leaves the database before the
statement commits, so a crash anywhere leaves the task pending, as before.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    JSON,
    Connection,
    Integer,
    String,
    Text,
    and_,
    bindparam,
    cast,
    exists,
    func,
    insert,
    literal_column,
    null,
    select,
    tuple_,
    union_all,
    update,
)
from sqlalchemy.sql.selectable import CTE

from worker import finish
from worker.db import json_text
from worker.prepared import PreparedStatement, execute_together
from worker.states import TaskState, WorkflowState
from worker.transitions import (
    EVENT,
    EVENT_KEYS,
    LOG,
    LOG_KEYS,
    TASK,
    TASK_KEYS,
    WORKFLOW,
    relaxed_commit,
    row_binds,
    row_params,
)

#: A seed larger than this (serialised) is not sent: the successor claims as usual. Vars
#: travel in the message then, and a broker message is no place for a large document.
MAX_SEED_BYTES = 16_384
#: What a seed holds: the task row's columns a pure activity runs on (its fence, too).
SEED_KEYS = ("workflow_id", "version", "job_id", "activity", "vars", "counts", "inputs")
#: Most successor rows and log lines one hop statement writes.
MAX_ROWS, MAX_LOGS = 16, 8
#: What a plain successor row (_plain) holds of its own; the rest is the completed task's
#: (workflow, job, version, parent, vars and counts passed on, the hop's time) or a default.
PLAIN_KEYS = ("id", "activity", "activity_type", "inputs")
#: The defaults of a plain successor row.
_PLAIN_DEFAULTS: dict[str, Any] = {
    "state": TaskState.PENDING.value,
    "attempt": 0,
    "outlets": None,
    "progress": None,
    "reason": None,
    "error": None,
    "started_at": None,
    "finished_at": None,
    "heartbeat_at": None,
    "due_at": None,
    "fired": 0,
    "last_trigger_at": None,
    "worker": None,
    "attempt_base": 0,
}


class _NoSession:
    """The `ctx.session` of a seeded run: a pure activity that touches it fails, and the
    engine runs it again the usual way, with a session."""

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(f"a pure activity used the database (session.{name})")


NO_SESSION: Any = _NoSession()


@dataclass(frozen=True)
class Seed:
    """What a pending task's row holds, as its predecessor wrote it."""

    workflow_id: int
    version: int
    job_id: str
    activity: str
    vars: dict[str, Any]
    counts: dict[str, Any]
    inputs: dict[str, Any] | None

    @classmethod
    def of_row(cls, row: dict[str, Any]) -> dict[str, Any] | None:
        """The seed of a new task row, as a message carries it; None when too large."""
        seed = {key: row[key] for key in SEED_KEYS}
        try:
            size = len(json.dumps(seed))
        except (TypeError, ValueError, RecursionError):
            return None
        return seed if size <= MAX_SEED_BYTES else None

    @classmethod
    def parse(cls, raw: Any) -> Seed | None:
        """A seed from a message, or None when it is not one (the usual claim runs then).

        The row is the authority: a seed that does not match it changes nothing.
        """
        if not isinstance(raw, dict) or set(raw) != set(SEED_KEYS):
            return None
        ids_ok = all(
            type(raw[key]) is int and 0 < raw[key] < 2**31 for key in ("workflow_id", "version")
        )
        names_ok = all(
            isinstance(raw[key], str) and 0 < len(raw[key]) <= 64 for key in ("job_id", "activity")
        )
        values_ok = isinstance(raw["vars"], dict) and isinstance(raw["counts"], dict)
        if not (ids_ok and names_ok and values_ok):
            return None
        if raw["inputs"] is not None and not isinstance(raw["inputs"], dict):
            return None
        return cls(
            raw["workflow_id"],
            raw["version"],
            raw["job_id"],
            raw["activity"],
            raw["vars"],
            raw["counts"],
            raw["inputs"],
        )

    def fence(self) -> dict[str, Any] | None:
        """The hop statement's fence parameters: the row must hold these values exactly (its
        JSON columns keep the text they were written with); None if they cannot be written."""
        try:
            texts = [_json_text(value) for value in (self.vars, self.counts, self.inputs)]
        except (TypeError, ValueError, RecursionError):  # not JSON, NaN, nested too deep
            return None
        return {
            "h_workflow_id": self.workflow_id,
            "h_version": self.version,
            "h_job_id": self.job_id,
            "h_activity": self.activity,
            "h_vars": texts[0],
            "h_counts": texts[1],
            "h_inputs": texts[2],
        }


def _json_text(value: Any) -> str:
    """`value` as the JSON columns' serializer writes it (worker.db.json_text); NaN and
    infinities refused."""
    if value is None or (not value and type(value) is dict):
        return json_text(value)
    return json.dumps(value, allow_nan=False)


@dataclass(frozen=True)
class Completion:
    """What a hop writes of its own task: claimed at `started` and done at `now` by `worker`,
    with these outlets, vars and counts, and these log lines."""

    started: dt.datetime
    now: dt.datetime
    worker: str
    outlets: list[str]
    vars: dict[str, Any]
    counts: dict[str, Any]
    logs: list[dict[str, Any]]


def claim_complete_and_create(
    connection: Connection,
    task_id: str,
    fence: dict[str, Any],
    done: Completion,
    rows: list[dict[str, Any]],
    *,
    prepared: bool = True,
) -> bool:
    """pending -> done with `rows` and the log lines, in one statement on an autocommit
    `connection`, if the row still matches `fence`; False (nothing written) otherwise. The
    state events are the usual path's: claimed, done, each new row created.

    `rows` must be complete task rows (every TASK_KEYS column). A successor id that already
    exists fails the whole statement (nothing written): it cannot, while the task is pending.
    """
    statement, params = create_statement(task_id, fence, done, rows)
    (written,) = statement.execute(connection, params, enabled=prepared).one()
    return bool(written)


def create_statement(
    task_id: str, fence: dict[str, Any], done: Completion, rows: list[dict[str, Any]]
) -> tuple[PreparedStatement, dict[str, Any]]:
    """claim_complete_and_create's statement and parameters, for a caller that sends it
    itself (worker.hopwire); its one row's one column is 1 if it wrote, else 0."""
    plain = all(_plain(row, task_id, fence, done) for row in rows)
    statement = _hop(len(rows), len(done.logs), plain)
    return statement, _hop_params(task_id, fence, done, rows, plain)


def claim_complete_and_finish(
    connection: Connection, task_id: str, fence: dict[str, Any], done: Completion
) -> tuple[bool, bool]:
    """(done, finished): a task with no successor completed as claim_complete_and_create does,
    then its workflow finished if no task of it is active any more, in one round trip.

    Three prepared statements in one query, one transaction (worker.prepared.execute_together):
    the hop; the workflow's row lock (FOR NO KEY UPDATE, as worker.finish takes it); the
    finish, whose snapshot is taken once the lock is granted, so two branches ending at once
    cannot both see the other still running. The lock and the finish do nothing unless the
    hop completed the task.
    """
    finish_params = {
        "workflow_id": fence["h_workflow_id"],
        "task_id": task_id,
        "now": done.now,
        "worker": done.worker,
    }
    written, finished = execute_together(
        connection,
        [
            (_hop(0, len(done.logs)), _hop_params(task_id, fence, done, [])),
            (_FINISH_LOCK, finish_params),
            (_FINISH_IF_IDLE, finish_params),
        ],
    )
    return bool(written), bool(finished)


def _plain(row: dict[str, Any], task_id: str, fence: dict[str, Any], done: Completion) -> bool:
    """Whether a successor row is what a plain one is (the usual successor of a quick
    activity): pending, with the defaults, created by this hop at its time, in the completed
    task's workflow, job and version, with the vars and counts it passes on. Its statement
    then sends PLAIN_KEYS alone: a parameter costs its conversion here and its parsing on the
    server, 26 of them per row otherwise."""
    return (
        row["workflow_id"] == fence["h_workflow_id"]
        and row["job_id"] == fence["h_job_id"]
        and row["version"] == fence["h_version"]
        and row["parent_id"] == task_id
        and row["created_at"] == done.now
        and row["updated_at"] == done.now
        and (row["vars"] is done.vars or row["vars"] == done.vars)
        and (row["counts"] is done.counts or row["counts"] == done.counts)
        and all(row[key] == value for key, value in _PLAIN_DEFAULTS.items())
    )


def _hop_params(
    task_id: str,
    fence: dict[str, Any],
    done: Completion,
    rows: list[dict[str, Any]],
    plain: bool = False,
) -> dict[str, Any]:
    """The hop statement's parameters (rows and lines numbered as _hop names them)."""
    if len(rows) > MAX_ROWS or len(done.logs) > MAX_LOGS:
        raise ValueError("too many rows for one hop statement")
    params: dict[str, Any] = {
        **fence,
        "h_task_id": task_id,
        "h_started": done.started,
        "h_now": done.now,
        "h_worker": done.worker,
        "h_outlets": done.outlets,
        "h_out_vars": done.vars,
        "h_out_counts": done.counts,
    }
    params.update(row_params("t", rows, PLAIN_KEYS if plain else TASK_KEYS))
    params.update(row_params("l", done.logs, LOG_KEYS))
    return params


def _sql(text: str, type_: Any = None) -> Any:
    """A constant written into the statement, not a parameter: every parameter is a literal
    that each EXECUTE sends and PostgreSQL parses again."""
    return literal_column(text, type_)


@lru_cache(maxsize=64)
def _hop(n_rows: int, n_logs: int, plain: bool = False) -> PreparedStatement:
    """The hop statement for one shape, built and prepared once (`plain`: every successor
    row is a plain one, its other columns written from the completion, see _plain)."""
    # The row is found by its id alone; what the seed says of it is compared as one row
    # value, which no index serves. As separate equalities, PostgreSQL's generic plan of
    # this statement took the (workflow, activity, created) index and read every task of
    # that activity in the workflow on every hop: thousands for a signal triggered
    # thousands of times, and more with each trigger.
    fenced = tuple_(
        TASK.c.state,
        TASK.c.attempt,
        TASK.c.workflow_id,
        TASK.c.version,
        TASK.c.job_id,
        TASK.c.activity,
        cast(TASK.c.vars, Text),
        cast(TASK.c.counts, Text),
        cast(TASK.c.inputs, Text),
    )
    seeded = tuple_(
        _sql(f"'{TaskState.PENDING.value}'"),
        _sql("0"),
        bindparam("h_workflow_id", type_=TASK.c.workflow_id.type),
        bindparam("h_version", type_=TASK.c.version.type),
        bindparam("h_job_id", type_=TASK.c.job_id.type),
        bindparam("h_activity", type_=TASK.c.activity.type),
        bindparam("h_vars", type_=Text),
        bindparam("h_counts", type_=Text),
        bindparam("h_inputs", type_=Text),
    )
    # The workflow is the seed's (the fence checks that it is the task's): its state is read
    # once by that id (an InitPlan), not joined to the task row by row.
    started = (
        exists()
        .where(
            WORKFLOW.c.id == bindparam("h_workflow_id", type_=TASK.c.workflow_id.type),
            WORKFLOW.c.state == _sql(f"'{WorkflowState.STARTED.value}'"),
        )
        .correlate_except(WORKFLOW)
    )
    claimable = and_(
        TASK.c.id == bindparam("h_task_id"), fenced.is_not_distinct_from(seeded), started
    )
    done = (
        update(TASK)
        .where(claimable)
        .values(
            state=_sql(f"'{TaskState.DONE.value}'"),
            attempt=_sql("1"),
            started_at=bindparam("h_started"),
            heartbeat_at=bindparam("h_started"),
            worker=bindparam("h_worker"),
            reason=null(),
            updated_at=bindparam("h_now"),
            finished_at=bindparam("h_now"),
            outlets=bindparam("h_outlets", type_=TASK.c.outlets.type),
            vars=bindparam("h_out_vars", type_=TASK.c.vars.type),
            counts=bindparam("h_out_counts", type_=TASK.c.counts.type),
        )
        # As the claim does (worker.transitions._CLAIM_RELAXED): no wait for the WAL flush.
        .returning(
            TASK.c.workflow_id,
            relaxed_commit(),
        )
        .cte("done")
    )
    # Each insert selects from `done`: nothing unless the task was done, and a row that
    # cannot be written (an id taken) fails the whole statement. Nothing reads them back.
    insert_row = _insert_plain if plain else _insert_row
    created = [insert_row(f"t{i}", done).cte(f"created{i}") for i in range(n_rows)]
    lines = [_insert_if_done(LOG, LOG_KEYS, f"l{i}", done).cte(f"line{i}") for i in range(n_logs)]
    written = select(func.count()).select_from(done)
    events = _events(done, n_rows, plain)
    name = f"carillon_hop_{n_rows}_{n_logs}{'_plain' if plain else ''}"
    return PreparedStatement(name, written.add_cte(*created, events, *lines))


def _events(done: CTE, n_rows: int, plain: bool) -> CTE:
    """The state events, from the statement's values: the claim and the completion of the
    task (attempt 1), then each successor's creation, as the usual path records them."""
    text, number = String(16), Integer()

    def event(task_id: Any, from_state: Any, to_state: Any, attempt: Any, at: Any) -> Any:
        return select(
            done.c.workflow_id,
            _sql("'task'", String(8)),
            task_id,
            from_state,
            to_state,
            attempt,
            at,
        )

    task_id = bindparam("h_task_id", type_=TASK.c.id.type)
    started = bindparam("h_started", type_=TASK.c.started_at.type)
    now = bindparam("h_now", type_=TASK.c.finished_at.type)

    def creation(index: int) -> Any:
        """A successor's creation: a plain one is pending from the hop's time (_insert_plain)."""
        row_id = bindparam(f"t{index}_id", type_=TASK.c.id.type)
        state = (
            _sql(f"'{TaskState.PENDING.value}'", text)
            if plain
            else bindparam(f"t{index}_state", type_=TASK.c.state.type)
        )
        at = now if plain else bindparam(f"t{index}_created_at", type_=TASK.c.created_at.type)
        return event(row_id, cast(null(), text), state, cast(null(), number), at)

    parts = [
        event(
            task_id, _sql("'pending'", text), _sql("'running'", text), _sql("1", number), started
        ),
        event(task_id, _sql("'running'", text), _sql("'done'", text), _sql("1", number), now),
        *(creation(index) for index in range(n_rows)),
    ]
    return insert(EVENT).from_select(list(EVENT_KEYS), union_all(*parts)).cte("logged")


def _insert_row(prefix: str, done: CTE) -> Any:
    """A successor row of bound values, inserted only if the task was done."""
    return _insert_if_done(TASK, TASK_KEYS, prefix, done)


def _insert_plain(prefix: str, done: CTE) -> Any:
    """A plain successor row (_plain): PLAIN_KEYS bound, the rest from the completion's
    parameters and the defaults; inserted only if the task was done."""
    own = row_binds(TASK, PLAIN_KEYS, prefix)
    now = bindparam("h_now", type_=TASK.c.created_at.type)
    passed_on = {
        "workflow_id": bindparam("h_workflow_id", type_=TASK.c.workflow_id.type),
        "job_id": bindparam("h_job_id", type_=TASK.c.job_id.type),
        "parent_id": bindparam("h_task_id", type_=TASK.c.parent_id.type),
        "version": bindparam("h_version", type_=TASK.c.version.type),
        "vars": bindparam("h_out_vars", type_=TASK.c.vars.type),
        "counts": bindparam("h_out_counts", type_=TASK.c.counts.type),
        "created_at": now,
        "updated_at": now,
    }
    defaults = {key: _constant(key, value) for key, value in _PLAIN_DEFAULTS.items()}
    values = {**own, **passed_on, **defaults}
    row = select(*(values[key] for key in TASK_KEYS)).select_from(done)
    return insert(TASK).from_select(list(TASK_KEYS), row)


def _constant(key: str, value: Any) -> Any:
    """A default of _PLAIN_DEFAULTS written into the statement, as a bound value would be
    written: None is SQL NULL, but JSON null in a JSON column (SQLAlchemy's JSON type)."""
    if value is None:
        return _sql("'null'") if isinstance(TASK.c[key].type, JSON) else null()
    if isinstance(value, int):
        return _sql(str(value), Integer)
    return _sql(f"'{value}'", String)


def _insert_if_done(table: Any, keys: tuple[str, ...], prefix: str, done: CTE) -> Any:
    """INSERT of one row of bound values, selected from `done`: no row unless it updated."""
    values = select(*row_binds(table, keys, prefix).values()).select_from(done)
    return insert(table).from_select(list(keys), values)


def _finishing_statements() -> tuple[PreparedStatement, PreparedStatement]:
    """The lock and the finish of claim_complete_and_finish: worker.finish's own, for the
    task the hop completed (done at `now`, attempt 1, by `worker`: only this hop writes that)."""
    done_by_this_hop = exists().where(
        TASK.c.id == bindparam("task_id"),
        TASK.c.state == _sql(f"'{TaskState.DONE.value}'"),
        TASK.c.attempt == _sql("1"),
        TASK.c.finished_at == bindparam("now", type_=TASK.c.finished_at.type),
        TASK.c.worker == bindparam("worker", type_=TASK.c.worker.type),
    )
    lock = finish.LOCK.where(done_by_this_hop)
    finishing = finish.FINISH.where(done_by_this_hop, ~finish.ACTIVE.exists())
    finished, records = finish.finish_with_record(finishing)
    report = select(
        select(done_by_this_hop).scalar_subquery(),
        select(func.count()).select_from(finished).scalar_subquery(),
    ).add_cte(*records)
    return (
        PreparedStatement("carillon_hop_finish_lock", lock),
        PreparedStatement("carillon_hop_finish", report),
    )


_FINISH_LOCK, _FINISH_IF_IDLE = _finishing_statements()
