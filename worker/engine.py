"""The only writer of workflow and task state: commands, runs, triggers, timers and repairs.

Every change is a compare-and-set in one transaction, committed before any message that
depends on it is published (the `Dispatcher` is called after commit). Celery only carries
task ids; the database says what runs next.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import math
import os
import socket
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

from sqlalchemy import Connection, and_, delete, func, insert, or_, select, update
from sqlalchemy.exc import NoResultFound
from sqlalchemy.orm import Session, sessionmaker

from worker import dbclock, definitions, finish, hop, registry
from worker.activities.base import Activity, ActivityType, Context, Outcome, SignalRequest
from worker.config import Settings
from worker.db import utcnow
from worker.definitions import Definition
from worker.errors import (
    CommandRefused,
    DefinitionError,
    NotFound,
    TooManyTriggers,
    TriggerRefused,
)
from worker.heartbeat import Heartbeat
from worker.hop import NO_SESSION, Seed
from worker.hopwire import HopWire
from worker.models import (
    Command,
    IdempotencyKey,
    Job,
    JoinArrival,
    LogLine,
    Organization,
    Task,
    Trigger,
    Workflow,
    WorkflowVersion,
    new_id,
)
from worker.outage import is_outage
from worker.signals import coerce
from worker.states import ACTIVE_TASK_STATES, TaskState, WorkflowState
from worker.transitions import (
    FOLD_MAX_ROWS,
    TASK,
    claim_locked,
    claim_task,
    complete_and_create,
    complete_task,
    record_new_task,
    record_new_tasks,
    record_new_tasks_last,
    set_task_state,
    set_tasks_state,
    set_workflow_state,
    task_values,
    with_defaults,
    write_events,
)

log = logging.getLogger(__name__)

T, W = TaskState, WorkflowState
METHODS = ("start", "pause", "resume", "stop")
DATA_SLOT_LOCK = 4_717_002  # advisory lock key of the data-activity slots
SUSPENDED_REASON = "activity suspended: release it to run"
PAUSED_REASON = "workflow paused"
ERROR_REASON = "workflow in error"
MAX_SOURCE = 255
#: The states _abort_open moves to aborted.
ABORTABLE_STATES = [T.PENDING, T.HELD, T.WAITING, T.FAILED, T.DEAD, T.RUNNING]
#: How often the tick deletes expired Idempotency-Key rows (bounded batches).
KEY_SWEEP_EVERY = dt.timedelta(seconds=60)


class Dispatcher(Protocol):
    """Publishes work after commit; the Celery implementation lives in worker.tasks."""

    def dispatch(
        self,
        definition: Definition,
        rows: list[tuple[str, str]],
        seeds: Mapping[str, dict[str, Any]] | None = None,
    ) -> None:
        """Publish a new canvas segment for each pending (activity, task id), its first run
        with the task's seed (worker.hop) when `seeds` has one."""

    def apply_commands(self, workflow_id: int) -> None:
        """Ask a worker to apply the workflow's recorded commands."""


class HeldLink(Protocol):
    """Messages built and held until the state they follow from committed."""

    #: Whether the segments asked for are held (else the engine publishes them after commit).
    segments: bool

    def send(self) -> None:
        """Let it go (its predecessor's state committed)."""

    def drop(self) -> None:
        """Discard it (its predecessor wrote nothing)."""


class Follower(Protocol):
    """The chain a run_activity message carries on (worker.follow.NextLink on Celery)."""

    def hold(
        self,
        seeds: Mapping[str, dict[str, Any]],
        segments: Sequence[tuple[Definition, str, str]] = (),
    ) -> HeldLink | None:
        """Build the chain's next message with its seed and the `segments` (definition,
        activity, task id) to publish, without sending them; None when they cannot be held
        (the link is then published after the task, as Celery does, the segments after
        commit)."""


@dataclass
class RunResult:
    """What happened to one run_activity message."""

    status: str  # done | failed | skipped | fenced | missing
    continue_chain: bool = False
    #: Seeds (worker.hop) of the chained successors this run created, by task id: the
    #: task wrapper puts them in the chain's next message.
    seeds: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class _Effects:
    """Work to do once the transaction that decided it has committed."""

    publish: list[tuple[Definition, str, str]] = field(default_factory=list)
    signals: list[SignalRequest] = field(default_factory=list)
    #: State events of the hot path, written in one statement before commit.
    events: list[dict[str, Any]] = field(default_factory=list)
    commands: set[int] = field(default_factory=set)
    seeds: dict[str, dict[str, Any]] = field(default_factory=dict)


class _Fenced(Exception):
    """A newer attempt owns the task; roll back whatever this one did."""


class _NoDataSlot(Exception):
    """CARILLON_MAX_RUNNING_WORKFLOWS workflows already run data activities."""


class _ActivityFailed(Exception):
    """Roll back the activity's effects, then record the failure."""


@dataclass(frozen=True)
class _Claimed:
    task_id: str
    workflow_id: int
    job_id: str
    activity: str
    version: int
    vars: dict[str, Any]
    counts: dict[str, Any]
    attempt: int
    inputs: dict[str, Any]
    #: Times the task parked before, and why it runs again ("woken", "due"), read by the
    #: claim itself: a later read in the run's transaction would take SQLite's write lock.
    parked: int = 0
    wake: str | None = None
    #: Set while the task is only locked (claim_task lock_only): what claim_locked needs to
    #: take the claim for real, emptied once taken or folded into the completion.
    locked: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class _SeededPlan:
    """What a seeded run decided, before its one statement writes it (Engine._run_seeded)."""

    outcome: Outcome
    vars: dict[str, Any]
    counts: dict[str, Any]
    rows: list[dict[str, Any]]
    logs: list[dict[str, Any]]
    effects: _Effects
    created: dict[str, str]


def _outflow(ctx: Context, outcome: Outcome) -> tuple[dict[str, Any], dict[str, Any]]:
    """The vars and counts a completed task passes on: its own, updated by its outcome's."""
    out_vars = {**ctx.vars, **outcome.vars} if outcome.vars else ctx.vars
    out_counts = {**ctx.counts, **outcome.counts} if outcome.counts else ctx.counts
    return out_vars, out_counts


def _log_rows(
    workflow_id: int,
    job_id: str | None,
    task_id: str | None,
    activity: str | None,
    logs: list[tuple[str, str]],
    at: dt.datetime | None,
) -> list[dict[str, Any]]:
    """A run's log lines as log_line rows (`created_at` left out when `at` is None)."""
    rows = []
    for level, message in logs:
        row: dict[str, Any] = {
            "workflow_id": workflow_id,
            "job_id": job_id,
            "task_id": task_id,
            "activity": activity,
            "level": level,
            "message": message[:4000],
        }
        if at is not None:
            row["created_at"] = at
        rows.append(row)
    return rows


def _wake_reason(fired: int, due_at: dt.datetime | None) -> str | None:
    """Why a parked task runs again: wake() clears due_at, the tick leaves it set."""
    if not fired:
        return None
    return "due" if due_at is not None else "woken"


def _crash_once(failpoint: str) -> None:
    """Test-only failpoint `name@marker-file`: die once, as a crash between commit and publish."""
    _name, _, marker = failpoint.partition("@")
    if marker and os.path.exists(marker):
        return
    if marker:
        with open(marker, "w") as done:
            done.write(str(os.getpid()))
    os._exit(1)


class Engine:
    """Applies the execution model of DESIGN section 4 on the database."""

    def __init__(
        self,
        settings: Settings,
        session_factory: sessionmaker[Session],
        dispatcher: Dispatcher,
        *,
        worker_name: str | None = None,
    ) -> None:
        self.settings = settings
        self.session = session_factory
        self.dispatcher = dispatcher
        self.worker_name = worker_name or f"{socket.gethostname()}:{os.getpid()}"
        self.heartbeat = Heartbeat(session_factory, max(0.5, settings.lease_seconds / 3))
        self._definitions: dict[tuple[int, int], Definition] = {}
        self._orgs: dict[int, int] = {}
        self._next_key_sweep = utcnow()
        self._seeds_on: bool | None = None
        self._wire: HopWire | None = None

    @contextmanager
    def _transaction(self, effects: _Effects) -> Iterator[Session]:
        """A session in a transaction that writes the buffered state events before commit."""
        with self.session() as s, s.begin():
            yield s
            write_events(s, effects.events)

    # ----------------------------------------------------------------- definitions

    def forget(self, workflow_id: int) -> None:
        """Drop a deleted workflow's cached definitions."""
        for key in [key for key in self._definitions if key[0] == workflow_id]:
            self._definitions.pop(key, None)

    def definition(self, workflow_id: int, version: int, s: Session | None = None) -> Definition:
        """A version's parsed definition, cached: versions never change once saved.

        Pass the open session when inside a transaction: on SQLite a second connection
        would wait for the first one's write lock forever.
        """
        key = (workflow_id, version)
        found = self._definitions.get(key)
        if found is None:
            stmt = select(WorkflowVersion.body).where(
                WorkflowVersion.workflow_id == workflow_id, WorkflowVersion.version == version
            )
            if s is not None:
                body = s.execute(stmt).scalar_one()
            else:
                with self.session() as own:
                    body = own.execute(stmt).scalar_one()
            found = self._definitions[key] = definitions.parse(body)
        return found

    # ----------------------------------------------------------------- running a task

    def run(
        self,
        task_id: str,
        chained: dict[str, str] | None = None,
        seed: Any = None,
        follow: Follower | None = None,
    ) -> RunResult:
        """Claim, execute and complete one task; idempotent for duplicate messages.

        With the `seed` its predecessor sent, a pure quick activity may take the seeded hop
        (worker.hop); whatever that cannot do, the usual claim below does. `follow`, the
        chain the message carries on, lets a seeded hop build the next message while its
        statement runs (worker.follow).
        """
        chained = chained or {}
        if seed is not None and self._seeding():
            parsed = Seed.parse(seed)
            seeded = self._run_seeded(task_id, chained, parsed, follow) if parsed else None
            if seeded is not None:
                return seeded
        effects = _Effects()
        error: Exception | None = None
        try:
            with self._transaction(effects) as s:
                # Leases are judged by the database's clock: a worker whose clock runs ahead
                # must not see a live task's heartbeat as stale (F10).
                now = dbclock.now(s)
                # On PostgreSQL the claim only locks the row: a quick activity then writes it
                # once, claim and completion together (transitions._LOCK).
                lock_only = s.get_bind().dialect.name == "postgresql"
                claimed = self._claim(s, task_id, now, effects.events, lock_only=lock_only)
                if claimed is None:
                    return self._refuse_claim(s, task_id)
                definition = self.definition(claimed.workflow_id, claimed.version, s)
                kind = definition.type_of(claimed.activity)
                # Warm the cache now: a query in the run's own transaction before the activity
                # starts would take SQLite's write lock for the activity's whole duration.
                self._org_of(s, claimed.workflow_id)
                if not kind.quick or kind.data:
                    # Its running state is committed (heartbeat, reaper) or counted (data slots).
                    self._take_claim(s, claimed)
                if kind.data:
                    self._check_data_slot(s, claimed.workflow_id)
                if not kind.quick:
                    write_events(s, effects.events)
                else:
                    # Claim, run and complete in one transaction: no effect outside the database.
                    ctx = self._context(claimed, definition, now, s)
                    try:
                        outcome = kind.run(ctx)
                    except Exception as exc:  # the claim commits; the failure is recorded below
                        if is_outage(exc):
                            raise  # nothing commits: the task stays pending, the message retries
                        error = exc
                        self._take_claim(s, claimed)  # _fail moves it on from running
                    else:
                        more = self._complete(
                            s, claimed, definition, outcome, ctx, chained, effects
                        )
                    write_events(s, effects.events)
        except _NoDataSlot as full:
            # The claim was rolled back: the task stays pending and the tick publishes it again.
            with self.session() as s, s.begin():
                s.execute(
                    update(Task)
                    .where(Task.id == task_id, Task.state == T.PENDING)
                    .values(reason=str(full), updated_at=utcnow())
                )
            return RunResult("queued")
        if kind.quick:
            if error is not None:
                return self._fail(claimed, definition, error, ctx.logs)
            self._after_commit(effects)
            return RunResult("done", more, effects.seeds)
        return self._run_claimed(claimed, definition, chained)

    def _seeding(self) -> bool:
        """Whether seeded hops are on: PostgreSQL, and CARILLON_SEEDED_HOPS not 0."""
        if self._seeds_on is None:
            bind = self.session.kw.get("bind")
            self._seeds_on = bool(
                self.settings.seeded_hops and bind is not None and bind.dialect.name == "postgresql"
            )
        return self._seeds_on

    def _run_seeded(
        self, task_id: str, chained: dict[str, str], seed: Seed, follow: Follower | None = None
    ) -> RunResult | None:
        """A pure quick activity run from its seed and written in one statement (worker.hop);
        None, with nothing written, whenever the usual claim must decide instead: another type
        of activity, an outcome that is more than "done, go on", or a row that is no longer
        what the seed says (already run, held, aborted, its workflow paused...)."""
        try:
            definition = self.definition(seed.workflow_id, seed.version)
            kind = definition.type_of(seed.activity)
        except (NoResultFound, KeyError, DefinitionError):
            return None
        if not (kind.pure and kind.quick) or kind.data:
            return None
        fence = seed.fence()  # serialises the seed's values: only for a run that may use it
        if fence is None:
            return None
        bind = self.session.kw["bind"]
        started = dbclock.now(bind)
        try:
            plan = self._seeded_plan(task_id, chained, seed, definition, started)
        except Exception:  # the usual run records a failure (or finds the run passes)
            log.debug("task %s: no seeded hop", task_id, exc_info=True)
            return None
        if plan is None:
            return None
        outcome, rows, effects = plan.outcome, plan.rows, plan.effects
        now = max(dbclock.now(bind), started)
        lines = [{**line, "created_at": now} for line in plan.logs]  # stamped at the write
        if len(rows) > hop.MAX_ROWS or len(lines) > hop.MAX_LOGS:
            return None
        # No successor: the workflow may finish, in the same round trip; that takes several
        # prepared statements in one query (without them, the usual path finishes it).
        finishing = not rows
        if finishing and not self.settings.prepared_statements:
            return None
        completion = hop.Completion(
            started, now, self.worker_name, list(outcome.outlets), plan.vars, plan.counts, lines
        )
        # The successors are created when the hop writes them, by the database's clock, as
        # its own completion is (and their rows are then plain ones: worker.hop._plain).
        for row in rows:
            row["created_at"] = row["updated_at"] = now
            if row["finished_at"] is not None:
                row["finished_at"] = now
        # Decided before the write (it depends on the plan alone): the chain's next message
        # can then be built while the statement runs.
        continue_chain = self._chain_on(definition, plan.created, chained, rows, effects)
        try:
            if finishing:
                with self._autocommit() as connection:
                    done, _ = hop.claim_complete_and_finish(connection, task_id, fence, completion)
                held = None
            else:
                full_rows = [with_defaults(row) for row in rows]
                publishes = continue_chain or bool(effects.publish)
                done, held = self._write_hop(
                    task_id,
                    fence,
                    completion,
                    full_rows,
                    follow if publishes else None,
                    effects,
                )
        except Exception as exc:
            if is_outage(exc):
                raise  # retried as any claim would be: nothing was written
            # Nothing was written either (one transaction); the usual path says what is wrong.
            log.warning("task %s: seeded hop refused (%s); claiming as usual", task_id, exc)
            return None
        if not done:
            return None
        log.debug("task %s: seeded hop", task_id)
        if held is not None:
            if self.settings.failpoint.startswith("after_commit_before_publish"):
                _crash_once(self.settings.failpoint)
            held.send()
            if held.segments:
                effects.publish.clear()  # sent with the link
        effects.signals.extend(outcome.signals)
        self._after_commit(effects)
        return RunResult("done", continue_chain, effects.seeds)

    def _write_hop(
        self,
        task_id: str,
        fence: dict[str, Any],
        completion: hop.Completion,
        rows: list[dict[str, Any]],
        follow: Follower | None,
        effects: _Effects,
    ) -> tuple[bool, HeldLink | None]:
        """Write a seeded hop with successors: (whether it wrote, what it publishes held
        until now, if `follow` could hold it).

        With a follower, the statement goes out on this process's hop wire, and the chain's
        next message and the segments of `effects` are built while PostgreSQL runs it
        (worker.follow): they wait for the answer, and are dropped if it wrote nothing.
        """
        wire = self._hop_wire() if follow is not None else None
        if wire is None or follow is None:
            with self._autocommit() as connection:
                written = hop.claim_complete_and_create(
                    connection,
                    task_id,
                    fence,
                    completion,
                    rows,
                    prepared=self.settings.prepared_statements,
                )
            return written, None
        statement, params = hop.create_statement(task_id, fence, completion, rows)
        pending = wire.send(statement, params)
        try:
            held = follow.hold(effects.seeds, effects.publish)
        except BaseException:
            wire.close()  # its answer is never read: the connection is not reused
            raise
        try:
            row = pending.row()
        except BaseException:
            if held is not None:
                held.drop()
            raise
        written = bool(row and row[0])
        if not written and held is not None:
            held.drop()
            held = None
        return written, held

    def _hop_wire(self) -> HopWire | None:
        """This process's hop wire (worker.hopwire): PostgreSQL through psycopg2 with
        prepared statements on, else None (the statement then goes through the pool)."""
        if self._wire is None:
            bind = self.session.kw.get("bind")
            if (
                not self.settings.prepared_statements
                or bind is None
                or bind.dialect.name != "postgresql"
                or bind.dialect.driver != "psycopg2"
            ):
                return None
            self._wire = HopWire(bind)
        return self._wire

    def _seeded_plan(
        self,
        task_id: str,
        chained: dict[str, str],
        seed: Seed,
        definition: Definition,
        started: dt.datetime,
    ) -> _SeededPlan | None:
        """Run the activity on its seed and lay out what its completion writes (no successor
        rows: an end, which may finish the workflow); None when the usual path must (a park,
        a termination, a pause, a join, successors that do not run)."""
        claimed = _Claimed(
            task_id,
            seed.workflow_id,
            seed.job_id,
            seed.activity,
            seed.version,
            seed.vars,
            seed.counts,
            1,
            seed.inputs or {},
        )
        activity = definition.activity(seed.activity)
        no_session = cast(Session, NO_SESSION)
        org_id = self._org_of(None, seed.workflow_id)
        ctx = self._context(claimed, definition, started, no_session, org_id)
        outcome = definition.type_of(seed.activity).run(ctx)
        if outcome.park is not None or outcome.terminate:
            return None
        targets = self._targets(definition, activity, outcome.outlets)
        if targets is None or any(definition.type_of(t).joins for t in targets):
            return None  # pauses and joins read or change more than this task
        effects = _Effects()
        rows: list[dict[str, Any]] = []
        out_vars, out_counts = _outflow(ctx, outcome)
        created = self._successors(
            no_session,
            definition,
            claimed,
            activity,
            targets,
            outcome,
            out_vars,
            out_counts,
            chained,
            effects,
            rows,
        )
        if rows and not any(state in ACTIVE_TASK_STATES for state in created.values()):
            return None  # successors that do not run (disabled...): the usual path looks
        logs = _log_rows(seed.workflow_id, seed.job_id, task_id, activity.name, ctx.logs, None)
        return _SeededPlan(outcome, out_vars, out_counts, rows, logs, effects, created)

    @contextmanager
    def _autocommit(self) -> Iterator[Connection]:
        """A pooled connection in autocommit mode: each statement its own transaction, with
        no BEGIN and COMMIT round trips. The driver's flag is flipped directly: SQLAlchemy's
        isolation_level option asks the server (two round trips per checkout here)."""
        with self.session.kw["bind"].connect() as connection:
            driver = connection.connection.dbapi_connection
            driver.autocommit = True
            try:
                yield connection
            finally:
                if connection.connection.dbapi_connection is driver:  # not invalidated
                    driver.autocommit = False

    def _check_data_slot(self, s: Session, workflow_id: int) -> None:
        """At most CARILLON_MAX_RUNNING_WORKFLOWS workflows run data activities at once."""
        if s.get_bind().dialect.name == "postgresql":
            # Serialise data claims, so two cannot both see the last free slot.
            s.execute(select(func.pg_advisory_xact_lock(DATA_SLOT_LOCK)))
        data_types = registry.data_types()
        busy = s.execute(
            select(func.count(func.distinct(Task.workflow_id))).where(
                Task.state == T.RUNNING,
                Task.activity_type.in_(data_types),
                Task.workflow_id != workflow_id,
            )
        ).scalar_one()
        limit = self.settings.max_running_workflows
        if busy >= limit:
            raise _NoDataSlot(
                f"queued: {busy} workflow(s) run data activities (CARILLON_MAX_RUNNING_WORKFLOWS"
                f"={limit}); it runs when one finishes"
            )

    def _context(
        self,
        claimed: _Claimed,
        definition: Definition,
        now: dt.datetime,
        s: Session,
        org_id: int | None = None,
    ) -> Context:
        return Context(
            task_id=claimed.task_id,
            workflow_id=claimed.workflow_id,
            job_id=claimed.job_id,
            activity=definition.activity(claimed.activity),
            vars=dict(claimed.vars),
            counts=dict(claimed.counts),
            attempt=claimed.attempt,
            now=now,
            session=s,
            org_id=self._org_of(s, claimed.workflow_id) if org_id is None else org_id,
            inputs=dict(claimed.inputs),
            settings=self.settings,
            progress_sink=functools.partial(self.heartbeat.set_progress, claimed.task_id),
            parked=claimed.parked,
            wake=claimed.wake,
        )

    def _org_of(self, s: Session | None, workflow_id: int) -> int:
        """A workflow's organization, cached: it never changes (read in `s`, or a session of
        its own when None)."""
        found = self._orgs.get(workflow_id)
        if found is None:
            statement = select(Workflow.org_id).where(Workflow.id == workflow_id)
            if s is None:
                with self.session() as own:
                    found = own.execute(statement).scalar_one()
            else:
                found = s.execute(statement).scalar_one()
            self._orgs[workflow_id] = found
        return found

    def _run_claimed(
        self, claimed: _Claimed, definition: Definition, chained: dict[str, str]
    ) -> RunResult:
        """Run a claimed task in its own transaction, its lease kept fresh by the heartbeat."""
        kind = definition.type_of(claimed.activity)
        effects = _Effects()
        error: Exception | None = None
        logs: list[tuple[str, str]] = []
        continue_chain = False
        self.heartbeat.add(claimed.task_id, claimed.attempt)
        try:
            with self._transaction(effects) as s:
                ctx = self._context(claimed, definition, utcnow(), s)
                logs = ctx.logs
                try:
                    outcome = kind.run(ctx)
                except Exception as exc:
                    if is_outage(exc):
                        raise  # the database went away, the activity did not fail
                    error = exc
                    raise _ActivityFailed from exc
                continue_chain = self._complete(
                    s, claimed, definition, outcome, ctx, chained, effects
                )
                write_events(s, effects.events)
        except _ActivityFailed:
            assert error is not None
            return self._fail(claimed, definition, error, logs)
        except _Fenced:
            return RunResult("fenced")
        except Exception as exc:
            if is_outage(exc):
                self._release_after_outage(claimed)
            raise
        finally:
            self.heartbeat.discard(claimed.task_id)
        self._after_commit(effects)
        return RunResult("done", continue_chain, effects.seeds)

    def _take_claim(self, s: Session, claimed: _Claimed) -> None:
        """Write the claim of a task that is only locked so far (no-op once written)."""
        if claimed.locked:
            lock = claimed.locked
            claim_locked(
                s,
                claimed.task_id,
                claimed.attempt,
                lock["now"],
                lock["stale"],
                self.worker_name,
                self.settings.max_attempts,
            )
            lock.clear()

    def _release_after_outage(self, claimed: _Claimed) -> None:
        """running -> pending for a run the database dropped (its work rolled back), not
        counted against CARILLON_MAX_ATTEMPTS; if the database is still away, the reaper
        does it once the lease runs out (and then it counts)."""
        try:
            with self.session() as s, s.begin():
                set_task_state(
                    s,
                    claimed.task_id,
                    claimed.workflow_id,
                    T.RUNNING,
                    T.PENDING,
                    attempt=claimed.attempt,
                    reason="re-enqueued: the database was unavailable",
                    attempt_base=TASK.c.attempt_base + 1,
                )
        except Exception as exc:
            if not is_outage(exc):
                raise
            log.warning(
                "task %s: database still unavailable; the reaper will retry it", claimed.task_id
            )

    def _claim(
        self,
        s: Session,
        task_id: str,
        now: dt.datetime,
        events: list[dict[str, Any]] | None = None,
        *,
        lock_only: bool = False,
    ) -> _Claimed | None:
        stale = now - dt.timedelta(seconds=self.settings.lease_seconds)
        row = claim_task(
            s,
            task_id,
            now,
            stale,
            self.worker_name,
            events,
            self.settings.max_attempts,
            lock_only=lock_only,
            prepared=self.settings.prepared_statements,
        )
        if row is None:
            return None
        return _Claimed(
            task_id,
            row.workflow_id,
            row.job_id,
            row.activity,
            row.version,
            row.vars or {},
            row.counts or {},
            row.attempt,
            row.inputs or {},
            parked=(row.fired or 0) if row.attempt > 1 else 0,
            wake=_wake_reason(row.fired, row.due_at) if row.attempt > 1 else None,
            locked={"now": now, "stale": stale} if lock_only else {},
        )

    def _refuse_claim(self, s: Session, task_id: str) -> RunResult:
        """A message whose task cannot run now: hold it, abort it, or drop a duplicate."""
        row = s.execute(
            select(Task.state, Task.workflow_id, Workflow.state.label("wf_state"))
            .join(Workflow, Workflow.id == Task.workflow_id)
            .where(Task.id == task_id)
        ).first()
        if row is None:
            return RunResult("missing")
        if row.state == T.PENDING:
            if row.wf_state in (W.PAUSED, W.ERROR):
                reason = PAUSED_REASON if row.wf_state == W.PAUSED else ERROR_REASON
                set_task_state(s, task_id, row.workflow_id, T.PENDING, T.HELD, reason=reason)
            elif row.wf_state != W.STARTED:
                set_task_state(
                    s,
                    task_id,
                    row.workflow_id,
                    T.PENDING,
                    T.ABORTED,
                    reason=f"workflow {row.wf_state}",
                    finished_at=utcnow(),
                )
        return RunResult("skipped")

    def _complete(
        self,
        s: Session,
        claimed: _Claimed,
        definition: Definition,
        outcome: Outcome,
        ctx: Context,
        chained: dict[str, str],
        effects: _Effects,
    ) -> bool:
        """Record the outcome and create the successors, fenced by the attempt; True to chain on."""
        out_vars, out_counts = _outflow(ctx, outcome)
        if outcome.park is not None:
            self._take_claim(s, claimed)
            self._park(s, claimed, outcome, out_vars, out_counts, ctx, effects)
            return False
        activity = definition.activity(claimed.activity)
        targets = (
            None if outcome.terminate else self._targets(definition, activity, outcome.outlets)
        )
        # The common case, successors that are plain tasks, writes the completion together
        # with their rows and the events (one round trip on PostgreSQL). Joins read the
        # database, ends and pauses change the workflow: those complete first, as written.
        folded = targets is not None and not any(definition.type_of(t).joins for t in targets)
        outlets = list(outcome.outlets)
        if not folded:
            self._take_claim(s, claimed)
        if not folded and not complete_task(
            s,
            claimed.task_id,
            claimed.workflow_id,
            claimed.attempt,
            outlets=outlets,
            vars=out_vars,
            counts=out_counts,
            events=effects.events,
        ):
            raise _Fenced
        self._write_logs(
            s, claimed.workflow_id, claimed.job_id, claimed.task_id, activity.name, ctx.logs
        )
        effects.signals.extend(outcome.signals)
        if outcome.terminate:
            self._terminate(s, claimed.workflow_id, claimed.task_id, activity.name)
            return False
        if targets is None:
            self._log(
                s,
                claimed.workflow_id,
                claimed.job_id,
                claimed.task_id,
                activity.name,
                "warning",
                "a fired outlet has no transition: workflow paused",
            )
            self._pause(s, self._workflow(s, claimed.workflow_id))
            return False
        rows: list[dict[str, Any]] | None = [] if folded else None
        created = self._successors(
            s,
            definition,
            claimed,
            activity,
            targets,
            outcome,
            out_vars,
            out_counts,
            chained,
            effects,
            rows,
        )
        claiming: tuple[dt.datetime, str] | None = None
        if rows is not None and claimed.locked:
            if len(rows) <= FOLD_MAX_ROWS:  # the claim goes into the completion's UPDATE
                claiming = (claimed.locked["now"], self.worker_name)
                claimed.locked.clear()
            else:
                self._take_claim(s, claimed)
        if rows is not None and not complete_and_create(
            s,
            claimed.task_id,
            claimed.workflow_id,
            claimed.attempt,
            outlets=outlets,
            vars=out_vars,
            counts=out_counts,
            rows=rows,
            events=effects.events,
            claiming=claiming,
            prepared=self.settings.prepared_statements,
        ):
            raise _Fenced
        continue_chain = self._chain_on(definition, created, chained, rows, effects)
        if not any(state in ACTIVE_TASK_STATES for state in created.values()):
            self._maybe_finish(s, claimed.workflow_id)
        return continue_chain

    def _successors(
        self,
        s: Session,
        definition: Definition,
        claimed: _Claimed,
        activity: Activity,
        targets: list[str],
        outcome: Outcome,
        out_vars: dict[str, Any],
        out_counts: dict[str, Any],
        chained: dict[str, str],
        effects: _Effects,
        rows: list[dict[str, Any]] | None,
    ) -> dict[str, str]:
        """The successors of a completed task (`_activate` with what the claim read)."""
        return self._activate(
            s,
            definition,
            claimed.workflow_id,
            claimed.job_id,
            claimed.version,
            claimed.task_id,
            activity.name,
            targets,
            out_vars,
            out_counts,
            chained,
            effects,
            inputs=self._inputs_for(activity, outcome, claimed.inputs),
            passed=claimed.inputs,
            rows=rows,
        )

    def _chain_on(
        self,
        definition: Definition,
        created: dict[str, str],
        chained: dict[str, str],
        rows: list[dict[str, Any]] | None,
        effects: _Effects,
    ) -> bool:
        """Whether Celery's chain goes on to the successors just created; if not, they are
        published after commit. If it does, their seeds go along (from `rows`, when given)."""
        pending_chained = {tid for tid, state in created.items() if state == T.PENDING} & set(
            chained.values()
        )
        continue_chain = bool(chained) and pending_chained == set(chained.values())
        if not continue_chain:
            # Celery will not publish these: the chain stops here, so we do.
            names = {tid: name for name, tid in chained.items()}
            effects.publish.extend((definition, names[t], t) for t in pending_chained)
        for row in rows or ():
            if row["id"] in pending_chained:
                self._seed(row, effects)
        return continue_chain

    def _seed(self, row: dict[str, Any], effects: _Effects) -> None:
        """Keep the seed (worker.hop) of a new pending task for the message that runs it."""
        if self._seeding():
            seed = Seed.of_row(row)
            if seed is not None:
                effects.seeds[row["id"]] = seed

    def _park(
        self,
        s: Session,
        claimed: _Claimed,
        outcome: Outcome,
        vars: dict[str, Any],
        counts: dict[str, Any],
        ctx: Context,
        effects: _Effects,
    ) -> None:
        """running -> waiting for the attempt that owns the task, until woken or due.

        `fired` counts the parks: it tells the next run it was parked, and the reaper that
        those runs were not lost workers.
        """
        park = outcome.park
        assert park is not None
        if not set_task_state(
            s,
            claimed.task_id,
            claimed.workflow_id,
            T.RUNNING,
            T.WAITING,
            attempt=claimed.attempt,
            events=effects.events,
            due_at=park.due_at,
            reason=park.reason[:2000],
            fired=TASK.c.fired + 1,
            vars=vars,
            counts=counts,
        ):
            raise _Fenced
        self._write_logs(
            s, claimed.workflow_id, claimed.job_id, claimed.task_id, claimed.activity, ctx.logs
        )

    @staticmethod
    def _inputs_for(
        activity: Activity, outcome: Outcome, own: dict[str, Any]
    ) -> dict[str, dict[str, Any]]:
        """Inputs of each successor: what its outlet carries, else this task's own inputs.

        Carried descriptors are keyed by this activity's name, or `name.outlet` when several
        of its outlets carry something to the same successor (two segments into a union).
        """
        if not outcome.outputs:
            return {}
        carried_to: dict[str, list[str]] = {}
        for outlet in outcome.outlets:
            if outcome.outputs.get(outlet) is not None:
                for target in activity.transitions.get(outlet, ()):
                    carried_to.setdefault(target, []).append(outlet)
        found: dict[str, dict[str, Any]] = {}
        for outlet in outcome.outlets:
            for target in activity.transitions.get(outlet, ()):
                outlets = carried_to.get(target)
                if not outlets:
                    found.setdefault(target, own)
                elif len(outlets) == 1:
                    found[target] = {activity.name: dict(outcome.outputs[outlets[0]])}
                else:
                    found[target] = {
                        f"{activity.name}.{name}": dict(outcome.outputs[name]) for name in outlets
                    }
        return found

    def _targets(
        self, definition: Definition, activity: Activity, outlets: Iterable[str]
    ) -> list[str] | None:
        """Successors of the fired outlets; None when an outlet has no transition."""
        kind = definition.type_of(activity.name)
        allowed = kind.outlets(activity)
        targets: list[str] = []
        for outlet in outlets:
            found = activity.transitions.get(outlet, ())
            if not found and outlet in allowed:
                return None
            targets.extend(found)
        jump = kind.jump_target(activity)
        if jump:
            targets.append(jump)
        return targets

    def _fail(
        self,
        claimed: _Claimed,
        definition: Definition,
        error: Exception,
        logs: list[tuple[str, str]],
    ) -> RunResult:
        message = f"{type(error).__name__}: {error}"[:2000]
        effects = _Effects()
        with self._transaction(effects) as s:
            if not set_task_state(
                s,
                claimed.task_id,
                claimed.workflow_id,
                T.RUNNING,
                T.FAILED,
                attempt=claimed.attempt,
                finished_at=utcnow(),
                error=message,
            ):
                return RunResult("fenced")
            self._write_logs(
                s, claimed.workflow_id, claimed.job_id, claimed.task_id, claimed.activity, logs
            )
            self._log(
                s,
                claimed.workflow_id,
                claimed.job_id,
                claimed.task_id,
                claimed.activity,
                "error",
                message,
            )
            self._apply_error_policy(
                s,
                definition,
                claimed.workflow_id,
                claimed.job_id,
                claimed.task_id,
                claimed.activity,
                message,
            )
        self._after_commit(effects)
        return RunResult("failed")

    def _apply_error_policy(
        self,
        s: Session,
        definition: Definition,
        workflow_id: int,
        job_id: str,
        task_id: str,
        activity: str,
        message: str,
    ) -> None:
        workflow = self._workflow(s, workflow_id, lock=True)
        if definition.error_policy(activity) == "ignore":
            set_task_state(
                s, task_id, workflow_id, T.FAILED, T.ABORTED, reason=f"error ignored: {message}"
            )
            recent = s.execute(
                select(Task.state, Task.error)
                .where(Task.workflow_id == workflow_id, Task.finished_at.is_not(None))
                .order_by(Task.finished_at.desc())
                .limit(definition.consecutive_errors)
            ).all()
            streak = 0
            for row in recent:
                if row.state == T.DONE or row.error is None:
                    break
                streak += 1
            if streak < definition.consecutive_errors:
                self._maybe_finish(s, workflow_id)
                return
            message = f"{streak} consecutive errors (threshold {definition.consecutive_errors})"
        if set_workflow_state(
            s, workflow, W.ERROR, from_states=[W.STARTED], error_message=message[:2000]
        ):
            self._log(
                s,
                workflow_id,
                job_id,
                task_id,
                activity,
                "error",
                f"workflow suspended in error: {message}",
            )

    # ----------------------------------------------------------------- creating tasks

    def _activate(
        self,
        s: Session,
        definition: Definition,
        workflow_id: int,
        job_id: str,
        version: int,
        parent_id: str | None,
        from_activity: str,
        targets: list[str],
        vars: dict[str, Any],
        counts: dict[str, Any],
        chained: dict[str, str],
        effects: _Effects,
        *,
        inputs: Mapping[str, dict[str, Any]] | None = None,
        passed: dict[str, Any] | None = None,
        rows: list[dict[str, Any]] | None = None,
    ) -> dict[str, str]:
        """Create the successors' rows (or join arrivals); returns {task id: state}.

        `inputs` gives some targets what their transition carries; the others get
        `passed` (the predecessor's own inputs) unchanged. With `rows`, the new task rows
        are appended there for the caller to write (no join among the targets then).
        """
        created: dict[str, str] = {}
        # A target reached by several fired outlets runs once, with everything they carry.
        for target in dict.fromkeys(targets):
            target_inputs = (inputs or {}).get(target, passed or {})
            if definition.type_of(target).joins:
                joined = self._arrive(
                    s,
                    definition,
                    workflow_id,
                    job_id,
                    version,
                    parent_id,
                    from_activity,
                    target,
                    vars,
                    counts,
                    chained.get(target),
                    effects,
                    target_inputs,
                )
                if joined:
                    created[joined[0]] = joined[1]
                continue
            task_id, state = self._create_task(
                s,
                definition,
                workflow_id,
                job_id,
                version,
                target,
                vars,
                counts,
                parent_id,
                chained.get(target),
                effects,
                inputs=target_inputs,
                rows=rows,
            )
            created[task_id] = state
        return created

    def _create_task(
        self,
        s: Session,
        definition: Definition,
        workflow_id: int,
        job_id: str,
        version: int,
        activity_name: str,
        vars: dict[str, Any],
        counts: dict[str, Any],
        parent_id: str | None,
        chained_id: str | None,
        effects: _Effects,
        *,
        listener_entry: bool = False,
        inputs: dict[str, Any] | None = None,
        rows: list[dict[str, Any]] | None = None,
    ) -> tuple[str, str]:
        """A successor's row (written now, or appended to `rows` for the caller to write)."""
        activity = definition.activity(activity_name)
        kind = definition.type_of(activity_name)
        now = utcnow()
        due_at: dt.datetime | None = None
        reason: str | None
        if activity.execution == "disabled":
            state, reason = T.ABORTED, "activity disabled"
        elif activity.execution == "suspended":
            state, reason = T.HELD, SUSPENDED_REASON
        else:
            activation = kind.activate(activity, now, vars)
            state, reason, due_at = (
                TaskState(activation.state),
                activation.reason,
                activation.due_at,
            )
        task_id = chained_id if (chained_id and state == T.PENDING) else new_id()
        row = {
            "id": task_id,
            "workflow_id": workflow_id,
            "job_id": job_id,
            "parent_id": parent_id,
            "activity": activity_name,
            "activity_type": activity.type,
            "version": version,
            "state": state,
            "attempt": 0,
            "vars": vars,
            "counts": counts,
            "outlets": None,
            "inputs": inputs or None,
            "progress": None,
            "reason": reason,
            "error": None,
            "created_at": now,
            "updated_at": now,
            "started_at": None,
            "finished_at": now if state in (T.ABORTED, T.DONE) else None,
            "heartbeat_at": None,
            "due_at": due_at,
            "fired": 0,
            "last_trigger_at": None,
            "worker": None,
        }
        if rows is None:
            record_new_task(s, row, effects.events)
        else:
            rows.append(row)
        if state == T.PENDING and not chained_id:
            effects.publish.append((definition, activity_name, task_id))
            self._seed(row, effects)
        return task_id, state

    def _arrive(
        self,
        s: Session,
        definition: Definition,
        workflow_id: int,
        job_id: str,
        version: int,
        from_task_id: str | None,
        from_activity: str,
        join: str,
        vars: dict[str, Any],
        counts: dict[str, Any],
        chained_id: str | None,
        effects: _Effects,
        inputs: dict[str, Any] | None = None,
    ) -> tuple[str, str] | None:
        """Record a branch reaching an and-join; create the join's task when all have arrived."""
        s.add(
            JoinArrival(
                job_id=job_id,
                join_activity=join,
                from_activity=from_activity,
                from_task_id=from_task_id or new_id(),
                vars={"vars": vars, "counts": counts, "inputs": inputs or {}},
            )
        )
        s.flush()
        # Serialise arrivals of one workflow so two last branches cannot both miss each other.
        self._workflow(s, workflow_id, lock=True)
        arrivals = s.scalars(
            select(JoinArrival)
            .where(
                JoinArrival.job_id == job_id,
                JoinArrival.join_activity == join,
                JoinArrival.consumed_by.is_(None),
            )
            .order_by(JoinArrival.id)
        ).all()
        first_by_branch: dict[str, JoinArrival] = {}
        for arrival in arrivals:
            first_by_branch.setdefault(arrival.from_activity, arrival)
        if len(first_by_branch) < definition.inbound_counts()[join]:
            return None
        merged_vars: dict[str, Any] = {}
        merged_counts: dict[str, Any] = {}
        merged_inputs: dict[str, Any] = {}
        for arrival in first_by_branch.values():
            merged_vars.update(arrival.vars.get("vars", {}))
            merged_counts.update(arrival.vars.get("counts", {}))
            merged_inputs.update(arrival.vars.get("inputs", {}))
        task_id, state = self._create_task(
            s,
            definition,
            workflow_id,
            job_id,
            version,
            join,
            merged_vars,
            merged_counts,
            from_task_id,
            chained_id,
            effects,
            inputs=merged_inputs,
        )
        s.execute(
            update(JoinArrival)
            .where(JoinArrival.id.in_([a.id for a in first_by_branch.values()]))
            .values(consumed_by=task_id)
        )
        return task_id, state

    # ----------------------------------------------------------------- workflow helpers

    def _workflow(self, s: Session, workflow_id: int, *, lock: bool = False) -> Workflow:
        stmt = select(Workflow).where(Workflow.id == workflow_id)
        if lock:
            # FOR NO KEY UPDATE, not FOR UPDATE: inserting a task or job takes FOR KEY SHARE on
            # its workflow through the foreign key, and two transactions that did so and then
            # asked FOR UPDATE deadlocked (seen under load). This mode serialises the lockers
            # among themselves without conflicting with foreign-key checks.
            stmt = stmt.with_for_update(key_share=True)
        workflow = s.scalars(stmt.execution_options(populate_existing=True)).one()
        return workflow

    def _maybe_finish(self, s: Session, workflow_id: int) -> None:
        """Finish a started workflow that has no task left running, pending or waiting."""
        finish.maybe_finish(s, workflow_id, utcnow())

    def _terminate(self, s: Session, workflow_id: int, task_id: str, activity: str) -> None:
        """An end activity that stops everything else: abort the rest, finish the workflow."""
        now = utcnow()
        self._abort_open(s, workflow_id, f"terminated by end activity '{activity}'", now)
        workflow = self._workflow(s, workflow_id, lock=True)
        set_workflow_state(s, workflow, W.FINISHED, from_states=[W.STARTED], ended_at=now)
        self._log(
            s, workflow_id, None, task_id, activity, "info", "workflow finished by its end activity"
        )

    def _abort_open(self, s: Session, workflow_id: int, reason: str, now: dt.datetime) -> bool:
        """Abort every unfinished task of a workflow (their types release what they hold);
        whether there was any."""
        # One indexed read instead of six UPDATEs when nothing is open, the usual start (the
        # previous run finished): five round trips fewer before a start commits.
        if (
            s.execute(
                select(Task.id)
                .where(Task.workflow_id == workflow_id, Task.state.in_(ABORTABLE_STATES))
                .limit(1)
            ).first()
            is None
        ):
            return False
        aborted: list[str] = []
        for state in (T.PENDING, T.HELD, T.WAITING, T.FAILED, T.DEAD):
            aborted += set_tasks_state(
                s, workflow_id, state, T.ABORTED, reason=reason, finished_at=now
            )
        # A running execution is fenced out: its attempt moves on, so its completion, failure
        # and heartbeat match no row (its effects roll back with it) and a delivery stops at
        # its next batch. Left running, it finished into whatever run came next: a stop then
        # start let the old run's delivery send its whole audience again (F14).
        aborted += set_tasks_state(
            s,
            workflow_id,
            T.RUNNING,
            T.ABORTED,
            reason=reason,
            finished_at=now,
            attempt=Task.attempt + 1,
        )
        self._cancel(s, aborted, reason)
        return True

    @staticmethod
    def _cancel(s: Session, task_ids: list[str], reason: str) -> None:
        """Call ActivityType.cancel for the tasks whose type overrides it (validations...)."""
        cancellable = [
            name
            for name in registry.names()
            if type(registry.get(name)).cancel is not ActivityType.cancel
        ]
        if not task_ids or not cancellable:
            return
        by_type: dict[str, list[str]] = {}
        for start in range(0, len(task_ids), 500):  # bounded IN lists
            for task_id, type_name in s.execute(
                select(Task.id, Task.activity_type).where(
                    Task.id.in_(task_ids[start : start + 500]),
                    Task.activity_type.in_(cancellable),
                )
            ):
                by_type.setdefault(type_name, []).append(task_id)
        for type_name, ids in by_type.items():
            registry.get(type_name).cancel(s, ids, reason)

    def _log(
        self,
        s: Session,
        workflow_id: int,
        job_id: str | None,
        task_id: str | None,
        activity: str | None,
        level: str,
        message: str,
    ) -> None:
        s.add(
            LogLine(
                workflow_id=workflow_id,
                job_id=job_id,
                task_id=task_id,
                activity=activity,
                level=level,
                message=message[:4000],
                created_at=utcnow(),
            )
        )

    def _write_logs(
        self,
        s: Session,
        workflow_id: int,
        job_id: str,
        task_id: str,
        activity: str,
        logs: list[tuple[str, str]],
    ) -> None:
        if logs:
            s.execute(
                insert(LogLine), _log_rows(workflow_id, job_id, task_id, activity, logs, utcnow())
            )

    def _after_commit(self, effects: _Effects) -> None:
        if effects.publish and self.settings.failpoint.startswith("after_commit_before_publish"):
            _crash_once(self.settings.failpoint)
        by_definition: dict[int, tuple[Definition, list[tuple[str, str]]]] = {}
        for definition, activity, task_id in effects.publish:
            by_definition.setdefault(id(definition), (definition, []))[1].append(
                (activity, task_id)
            )
        # The state is committed: a broker that refuses the message now (down, out of memory)
        # delays the work, it loses nothing. The tick publishes pending tasks and commands
        # again, so the caller (an API request, a worker's task) must not fail for it.
        for definition, rows in by_definition.values():
            seeds = {tid: effects.seeds[tid] for _, tid in rows if tid in effects.seeds}
            try:
                self.dispatcher.dispatch(definition, rows, seeds)
            except Exception as exc:
                log.warning("could not publish %d task(s); the tick will: %s", len(rows), exc)
        for workflow_id in effects.commands:
            try:
                self.dispatcher.apply_commands(workflow_id)
            except Exception as exc:
                log.warning("could not publish commands of %s; the tick will: %s", workflow_id, exc)
        for request in effects.signals:
            try:
                self.trigger_by_name(
                    request.workflow, request.activity, "workflow", dict(request.parameters)
                )
            except Exception as exc:  # another workflow's refusal must not fail this one
                log.warning("signal %s/%s refused: %s", request.workflow, request.activity, exc)

    # ----------------------------------------------------------------- commands

    def find_workflow(
        self, s: Session, org_id: int | None, ref: str, *, lock: bool = False
    ) -> Workflow:
        """A workflow by internal name or PKey (with or without '@'), within an organization.

        With `lock`, read fresh and locked as _workflow(lock=True) does, in the same statement.
        """
        pkey = ref[1:] if ref.startswith("@") else ref
        stmt = select(Workflow).where(or_(Workflow.name == ref, Workflow.pkey == pkey))
        if org_id is not None:
            stmt = stmt.where(Workflow.org_id == org_id)
        if lock:
            stmt = stmt.with_for_update(key_share=True).execution_options(populate_existing=True)
        found = s.scalars(stmt).first()
        if found is None:
            raise NotFound(f"workflow '{ref}' not found")
        return found

    @staticmethod
    def command_target(state: str, method: str) -> str:
        """The state `method` leads to from `state`, or CommandRefused saying why."""
        if method not in METHODS:
            raise CommandRefused(f"unknown method '{method}'; use one of {', '.join(METHODS)}")
        if method == "start":
            if state == W.STARTED:
                raise CommandRefused("the workflow is already started")
            return W.STARTED
        if method == "pause":
            if state != W.STARTED:
                raise CommandRefused(f"only a started workflow can be paused; it is {state}")
            return W.PAUSED
        if method == "resume":
            if state not in (W.PAUSED, W.ERROR):
                raise CommandRefused(
                    f"only a paused or failed workflow can be resumed; it is {state}"
                )
            return W.STARTED
        if state not in (W.STARTED, W.PAUSED, W.ERROR):
            raise CommandRefused(f"the workflow is not running; it is {state}")
        return W.STOPPED

    def submit_command(self, org_id: int | None, ref: str, method: str) -> int:
        """Record a command after checking it applies to the state it will find; returns its id."""
        return self._submit(org_id, ref, method)[0]

    def _submit(self, org_id: int | None, ref: str, method: str) -> tuple[int, int]:
        """submit_command's work: (the command's id, its workflow's id)."""
        with self.session() as s, s.begin():
            workflow = self.find_workflow(s, org_id, ref, lock=True)
            projected = workflow.state
            for pending in s.scalars(
                select(Command.method)
                .where(Command.workflow_id == workflow.id, Command.state == "pending")
                .order_by(Command.id)
            ):
                projected = self.command_target(projected, pending)
            self.command_target(projected, method)
            command = Command(
                workflow_id=workflow.id, method=method, state="pending", created_at=utcnow()
            )
            s.add(command)
            s.flush()
            return command.id, workflow.id

    def apply_commands(self, workflow_id: int) -> list[Command]:
        """Apply the workflow's pending commands in order; each in its own transaction."""
        applied: list[Command] = []
        while True:
            effects = _Effects()
            with self._transaction(effects) as s:
                workflow = self._workflow(s, workflow_id, lock=True)
                # Two: whether another one waits is known without another transaction.
                pending = s.scalars(
                    select(Command)
                    .where(Command.workflow_id == workflow_id, Command.state == "pending")
                    .order_by(Command.id)
                    .limit(2)
                ).all()
                if not pending:
                    break
                command = pending[0]
                command.applied_at = utcnow()
                try:
                    self.command_target(workflow.state, command.method)
                except CommandRefused as exc:
                    command.state, command.message = "refused", exc.message
                else:
                    # Marked before it is applied, so that it is written with the command's
                    # first writes: a start's new tasks are the last write before commit.
                    command.state, command.message = "applied", None
                    self._apply(s, workflow, command.method, effects)
                applied.append(command)
            self._after_commit(effects)
            if len(pending) == 1:
                # None other was pending under the lock; one recorded since then waited for
                # it, and whoever recorded it applies it (the API asks a worker, the CLI
                # applies it itself; the tick sweeps the rest).
                break
        return applied

    def command(self, org_id: int | None, ref: str, method: str) -> Command:
        """Submit and apply at once (the CLI's way); raises CommandRefused when refused.

        The tick may apply the command first (it sweeps pending commands): either way the
        outcome recorded on the command row is the answer.
        """
        command_id, workflow_id = self._submit(org_id, ref, method)
        applied = {found.id: found for found in self.apply_commands(workflow_id)}
        command = applied.get(command_id)
        if command is None:  # applied by another (the tick, a worker) before this call
            with self.session() as s:
                command = s.get(Command, command_id)
        assert command is not None and command.state != "pending"  # applied under the lock
        if command.state == "refused":
            raise CommandRefused(command.message or "refused")
        return command

    def _apply(self, s: Session, workflow: Workflow, method: str, effects: _Effects) -> None:
        if method == "start" and workflow.state == W.PAUSED:
            method = "resume"
        if method == "start":
            self._start(s, workflow, effects)
        elif method == "pause":
            self._pause(s, workflow)
        elif method == "resume":
            self._resume(s, workflow, effects)
        else:
            self._stop(s, workflow)

    def _start(self, s: Session, workflow: Workflow, effects: _Effects) -> None:
        now = utcnow()
        aborted = self._abort_open(s, workflow.id, "workflow restarted", now)
        version = workflow.latest_version
        definition = self.definition(workflow.id, version, s)
        set_workflow_state(
            s,
            workflow,
            W.STARTED,
            events=effects.events,
            running_version=version,
            started_at=now,
            ended_at=None,
            error_message=None,
        )
        # The job, the log line and the events go with the new tasks, in one statement.
        job: dict[str, Any] = {
            "id": new_id(),
            "workflow_id": workflow.id,
            "version": version,
            "origin": "start",
            "origin_activity": None,
            "source": None,
            "vars": {},
            "created_at": now,
        }
        (line,) = _log_rows(
            workflow.id,
            job["id"],
            None,
            None,
            [("info", f"workflow started (version {version})")],
            now,
        )
        s.flush()  # nothing should be left, but the new tasks must be the last write
        rows: list[dict[str, Any]] = []
        states = [
            self._create_task(
                s,
                definition,
                workflow.id,
                job["id"],
                version,
                entry.name,
                {},
                {},
                None,
                None,
                effects,
                rows=rows,
            )[1]
            for entry in definition.entries()
        ]
        runs = any(state in ACTIVE_TASK_STATES for state in states)
        record_new_tasks_last(
            s,
            rows,
            effects.events,
            jobs=[job],
            lines=[line],
            # A start that aborted nothing need not wait for the WAL flush: if a crash of the
            # database loses it, its command is pending again (recorded by its own commit)
            # and the tick applies it; its first messages find no task and change nothing.
            relaxed=runs and not aborted,
            prepared=self.settings.prepared_statements,
        )
        if not runs:
            self._maybe_finish(s, workflow.id)

    def _pause(self, s: Session, workflow: Workflow) -> None:
        if set_workflow_state(s, workflow, W.PAUSED, from_states=[W.STARTED]):
            set_tasks_state(s, workflow.id, T.PENDING, T.HELD, reason=PAUSED_REASON)
            self._log(s, workflow.id, None, None, None, "info", "workflow paused")

    def _resume(self, s: Session, workflow: Workflow, effects: _Effects) -> None:
        set_workflow_state(
            s, workflow, W.STARTED, from_states=[W.PAUSED, W.ERROR], error_message=None
        )
        version = workflow.running_version or workflow.latest_version
        definition = self.definition(workflow.id, version, s)
        held = s.execute(
            select(Task.id, Task.activity, Task.version, Task.state)
            .where(
                Task.workflow_id == workflow.id,
                or_(
                    and_(
                        Task.state == T.HELD,
                        or_(Task.reason.is_(None), Task.reason != SUSPENDED_REASON),
                    ),
                    Task.state.in_([T.FAILED, T.DEAD]),
                ),
            )
            .order_by(Task.created_at)
        ).all()
        for row in held:
            from_state = TaskState(row.state)
            # Resuming runs dead tasks again too, with their attempts reset (as requeue).
            forgive: dict[str, Any] = {
                "attempt_base": TASK.c.attempt - func.coalesce(TASK.c.fired, 0)
            }
            if set_task_state(
                s,
                row.id,
                workflow.id,
                from_state,
                T.PENDING,
                reason=None,
                **(forgive if from_state == T.DEAD else {}),
            ):
                effects.publish.append(
                    (self.definition(workflow.id, row.version, s), row.activity, row.id)
                )
        self._log(
            s,
            workflow.id,
            None,
            None,
            None,
            "info",
            f"workflow resumed ({len(held)} task(s) released)",
        )
        for trigger in s.scalars(
            select(Trigger)
            .where(Trigger.workflow_id == workflow.id, Trigger.state == "queued")
            .order_by(Trigger.created_at)
        ).all():
            try:
                trigger.job_id = self._fire_signal(
                    s,
                    workflow,
                    definition,
                    trigger.activity,
                    trigger.source,
                    trigger.parameters,
                    effects,
                )
                trigger.state = "accepted"
            except TriggerRefused as exc:
                trigger.state = "dropped"
                self._log(
                    s,
                    workflow.id,
                    None,
                    None,
                    trigger.activity,
                    "warning",
                    f"queued trigger dropped: {exc.message}",
                )
        self._maybe_finish(s, workflow.id)

    def _stop(self, s: Session, workflow: Workflow) -> None:
        now = utcnow()
        set_workflow_state(
            s, workflow, W.STOPPED, from_states=[W.STARTED, W.PAUSED, W.ERROR], ended_at=now
        )
        self._abort_open(s, workflow.id, "workflow stopped", now)
        s.execute(
            update(Trigger)
            .where(Trigger.workflow_id == workflow.id, Trigger.state == "queued")
            .values(state="dropped")
        )
        self._log(s, workflow.id, None, None, None, "info", "workflow stopped")

    # ----------------------------------------------------------------- signals

    def trigger_by_name(
        self, workflow_name: str, activity: str, source: str, parameters: dict[str, Any]
    ) -> Trigger:
        return self.trigger(None, workflow_name, activity, source, parameters)

    def trigger(
        self,
        org_id: int | None,
        ref: str,
        activity: str,
        source: Any,
        parameters: Any,
    ) -> Trigger:
        """Accept (or queue, while paused) a trigger of an external signal; returns the row."""
        if not isinstance(source, str) or not source.strip():
            raise TriggerRefused("'source' is mandatory and must be a non-empty string")
        if len(source) > MAX_SOURCE:
            raise TriggerRefused(f"'source' is longer than {MAX_SOURCE} characters")
        effects = _Effects()
        with self._transaction(effects) as s:
            # Found and locked in one statement (FOR NO KEY UPDATE, as _workflow takes it).
            workflow = self.find_workflow(s, org_id, ref, lock=True)
            if workflow.state not in (W.STARTED, W.PAUSED):
                raise TriggerRefused(
                    f"the workflow is not started (it is {workflow.state})", status=409
                )
            definition = self.definition(workflow.id, workflow.running_version or 1, s)
            name = self._signal_name(definition, activity)
            declared = definition.activity(name).options.get("parameters", {})
            values = coerce(declared, parameters)
            # The minimum interval by the database's clock: API hosts' clocks may disagree.
            now = dbclock.now(s)
            interval = self.settings.signal_min_interval
            if interval:
                last = s.execute(
                    select(func.max(Trigger.created_at)).where(
                        Trigger.workflow_id == workflow.id,
                        Trigger.activity == name,
                        Trigger.state != "dropped",
                    )
                ).scalar()
                if last is not None and (elapsed := (now - last).total_seconds()) < interval:
                    raise TooManyTriggers(
                        f"signal '{name}' was triggered {int(elapsed)} s ago; at most one "
                        f"trigger every {interval} s",
                        retry_after=max(1, math.ceil(interval - elapsed)),
                    )
            trigger = Trigger(
                id=new_id(),
                workflow_id=workflow.id,
                activity=name,
                source=source,
                parameters=values,
                created_at=now,
                state="queued" if workflow.state == W.PAUSED else "accepted",
            )
            if trigger.state == "accepted":
                # Its job id known before the row is written: one INSERT, no UPDATE after.
                trigger.job_id = self._fire_signal(
                    s, workflow, definition, name, source, values, effects
                )
            s.add(trigger)
            if trigger.state != "accepted":
                self._log(
                    s,
                    workflow.id,
                    None,
                    None,
                    name,
                    "info",
                    f"trigger from '{source}' queued until the workflow is resumed",
                )
        self._after_commit(effects)
        return trigger

    @staticmethod
    def _signal_name(definition: Definition, ref: str) -> str:
        """The signal activity named `ref` (its name, or its PKey `@name`)."""
        name = ref[1:] if ref.startswith("@") else ref
        activity = definition.activities.get(name)
        if activity is None:
            raise NotFound(f"signal activity '{name}' not found")
        if activity.type != "externalSignal":
            raise TriggerRefused(f"activity '{name}' is not an external signal")
        return name

    def _fire_signal(
        self,
        s: Session,
        workflow: Workflow,
        definition: Definition,
        name: str,
        source: str,
        values: dict[str, Any],
        effects: _Effects,
    ) -> str:
        """Start a job at an entry signal, or wake a signal waiting mid-graph; return the job."""
        version = workflow.running_version or workflow.latest_version
        now = utcnow()
        activity = definition.activity(name)
        targets = list(activity.transitions.get("done", ()))
        # The new task rows go in one INSERT and the events in one more (at commit), unless a
        # join is among the targets (_arrive reads and writes as it goes).
        rows: list[dict[str, Any]] | None = (
            None if any(definition.type_of(t).joins for t in targets) else []
        )
        if definition.inbound_counts()[name] == 0:
            job = Job(
                id=new_id(),
                workflow_id=workflow.id,
                version=version,
                origin="signal",
                origin_activity=name,
                source=source,
                vars=dict(values),
                created_at=now,
            )
            s.add(job)
            s.flush()
            task = Task(
                id=new_id(),
                workflow_id=workflow.id,
                job_id=job.id,
                activity=name,
                activity_type=activity.type,
                version=version,
                state=T.DONE,
                attempt=1,
                vars=dict(values),
                counts={},
                outlets=["done"],
                created_at=now,
                updated_at=now,
                started_at=now,
                finished_at=now,
                reason=f"triggered by '{source}'",
            )
            if rows is None:
                record_new_task(s, task, effects.events)
            else:
                rows.append(task_values(task))
            job_id, task_id, vars = job.id, task.id, dict(values)
        else:
            waiting = s.execute(
                select(Task.id, Task.job_id, Task.vars)
                .where(
                    Task.workflow_id == workflow.id, Task.activity == name, Task.state == T.WAITING
                )
                .order_by(Task.created_at)
                .limit(1)
            ).first()
            if waiting is None:
                raise TriggerRefused(f"signal '{name}' is not waiting for a trigger", status=409)
            vars = {**(waiting.vars or {}), **values}
            set_task_state(
                s,
                waiting.id,
                workflow.id,
                T.WAITING,
                T.DONE,
                vars=vars,
                outlets=["done"],
                finished_at=now,
                reason=f"triggered by '{source}'",
                events=effects.events,
            )
            job_id, task_id = waiting.job_id, waiting.id
        self._log(s, workflow.id, job_id, task_id, name, "info", f"signal triggered by '{source}'")
        self._activate(
            s,
            definition,
            workflow.id,
            job_id,
            version,
            task_id,
            name,
            targets,
            vars,
            {},
            {},
            effects,
            rows=rows,
        )
        if rows:
            record_new_tasks(s, rows, effects.events)
        return job_id

    # ----------------------------------------------------------------- the tick

    def tick(self) -> dict[str, int]:
        """Apply lost commands, fire due timers, reap dead runs, republish lost messages."""
        report = {"commands": 0, "timers": 0, "reaped": 0, "republished": 0}
        with self.session() as s:
            # Heartbeats and timers are judged by the database's clock, whichever host ticks.
            now = dbclock.now(s)
            pending_commands = s.scalars(
                select(Command.workflow_id).where(Command.state == "pending").distinct()
            ).all()
            due = s.execute(
                select(Task.id, Task.workflow_id, Task.version)
                .join(Workflow, Workflow.id == Task.workflow_id)
                .where(Task.state == T.WAITING, Task.due_at <= now, Workflow.state == W.STARTED)
                .order_by(Task.due_at)
                .limit(500)
            ).all()
            stale = (
                s.execute(
                    select(Task.id)
                    .where(
                        Task.state == T.RUNNING,
                        Task.heartbeat_at < now - dt.timedelta(seconds=self.settings.lease_seconds),
                    )
                    .limit(500)
                )
                .scalars()
                .all()
            )
            lost = s.execute(
                select(Task.id, Task.workflow_id, Task.version, Task.activity)
                .join(Workflow, Workflow.id == Task.workflow_id)
                .where(
                    Task.state == T.PENDING,
                    Workflow.state == W.STARTED,
                    Task.updated_at < now - dt.timedelta(seconds=self.settings.republish_seconds),
                )
                .limit(500)
            ).all()
        for workflow_id in pending_commands:
            report["commands"] += len(self.apply_commands(workflow_id))
        for row in due:
            report["timers"] += self._fire_timer(row.id, row.workflow_id, row.version)
        for task_id in stale:
            report["reaped"] += self._reap(task_id)
        for lost_row in lost:
            report["republished"] += self._republish(
                lost_row.id, lost_row.workflow_id, lost_row.version, lost_row.activity
            )
        if self._next_key_sweep <= now:
            self._next_key_sweep = now + KEY_SWEEP_EVERY
            report["idempotencyKeysExpired"] = self.expire_idempotency_keys(now)
        return report

    def expire_idempotency_keys(self, now: dt.datetime, batch: int = 1000) -> int:
        """Delete at most `batch` Idempotency-Key rows past their 24 hours; returns how many."""
        with self.session() as s, s.begin():
            old = (
                select(IdempotencyKey.org_id, IdempotencyKey.key)
                .where(IdempotencyKey.expires_at < now)
                .limit(batch)
            )
            rows = s.execute(old).all()
            for org_id, key in rows:
                s.execute(
                    delete(IdempotencyKey).where(
                        IdempotencyKey.org_id == org_id,
                        IdempotencyKey.key == key,
                        IdempotencyKey.expires_at < now,
                    )
                )
        return len(rows)

    def _fire_timer(self, task_id: str, workflow_id: int, version: int) -> int:
        definition = self.definition(workflow_id, version)
        effects = _Effects()
        with self._transaction(effects) as s:
            row = s.execute(
                select(Task.activity, Task.due_at, Task.fired, Task.job_id, Task.vars).where(
                    Task.id == task_id, Task.state == T.WAITING
                )
            ).first()
            if row is None or row.due_at is None:
                return 0
            activity = definition.activity(row.activity)
            kind = definition.type_of(row.activity)
            if not kind.listener:  # a wait: its time has come
                if set_task_state(s, task_id, workflow_id, T.WAITING, T.PENDING, reason=None):
                    effects.publish.append((definition, row.activity, task_id))
            else:
                fired = self._fire_schedule(
                    s,
                    definition,
                    workflow_id,
                    version,
                    task_id,
                    activity,
                    row.due_at,
                    row.fired,
                    effects,
                )
                if not fired:
                    return 0
        self._after_commit(effects)
        return 1

    def _fire_schedule(
        self,
        s: Session,
        definition: Definition,
        workflow_id: int,
        version: int,
        task_id: str,
        activity: Activity,
        due_at: dt.datetime,
        fired: int,
        effects: _Effects,
    ) -> bool:
        """One scheduler fire: move the timer forward by CAS (never twice per slot), start a job."""
        kind = definition.type_of(activity.name)
        now = utcnow()
        next_due = kind.next_listener_fire(activity, max(now, due_at), fired + 1)
        moved = s.execute(
            update(Task)
            .where(Task.id == task_id, Task.state == T.WAITING, Task.due_at == due_at)
            .values(
                due_at=next_due,
                fired=fired + 1,
                updated_at=now,
                reason=f"next fire at {next_due.isoformat()}" if next_due else None,
            )
            .returning(Task.id)
            .execution_options(synchronize_session=False)
        ).first()
        if moved is None:
            return False
        job = Job(
            id=new_id(),
            workflow_id=workflow_id,
            version=version,
            origin="scheduler",
            origin_activity=activity.name,
            vars={},
            created_at=now,
        )
        s.add(job)
        s.flush()
        fire = Task(
            id=new_id(),
            workflow_id=workflow_id,
            job_id=job.id,
            activity=activity.name,
            activity_type=activity.type,
            version=version,
            state=T.DONE,
            attempt=1,
            vars={},
            counts={},
            outlets=["done"],
            created_at=now,
            updated_at=now,
            started_at=now,
            finished_at=now,
            reason=f"fire due at {due_at.isoformat()}",
        )
        record_new_task(s, fire)
        self._log(
            s,
            workflow_id,
            job.id,
            fire.id,
            activity.name,
            "info",
            f"scheduler fired (slot {due_at.isoformat()})",
        )
        self._activate(
            s,
            definition,
            workflow_id,
            job.id,
            version,
            fire.id,
            activity.name,
            list(activity.transitions.get("done", ())),
            {},
            {},
            {},
            effects,
        )
        if next_due is None:
            set_task_state(
                s,
                task_id,
                workflow_id,
                T.WAITING,
                T.DONE,
                finished_at=now,
                reason="schedule expired",
            )
            self._maybe_finish(s, workflow_id)
        return True

    def _reap(self, task_id: str) -> int:
        """A running task whose worker stopped beating: run it again, or, once it lost its
        worker CARILLON_MAX_ATTEMPTS times (a poison activity: OOM, os._exit, a segfault),
        make it dead and suspend its workflow in error until an operator requeues it."""
        effects = _Effects()
        with self._transaction(effects) as s:
            now = dbclock.now(s)
            row = s.execute(
                select(
                    Task.workflow_id,
                    Task.version,
                    Task.activity,
                    Task.attempt,
                    Task.job_id,
                    Task.fired,
                    Task.attempt_base,
                ).where(
                    Task.id == task_id,
                    Task.state == T.RUNNING,
                    Task.heartbeat_at < now - dt.timedelta(seconds=self.settings.lease_seconds),
                )
            ).first()
            if row is None:
                return 0
            definition = self.definition(row.workflow_id, row.version, s)
            # Runs that parked (fired, for a non-listener task) ended well: not lost workers.
            # Requeued attempts (attempt_base) are forgiven by the operator who requeued.
            lost = row.attempt - (row.fired or 0) - (row.attempt_base or 0)
            cap = self.settings.max_attempts
            if lost >= cap:
                message = (
                    f"poison: its worker was lost on every attempt (attempts {lost}/{cap}); "
                    "the task is dead until an operator requeues it"
                )
                if set_task_state(
                    s,
                    task_id,
                    row.workflow_id,
                    T.RUNNING,
                    T.DEAD,
                    attempt=row.attempt,
                    error=message,
                    finished_at=now,
                ):
                    self._log(
                        s, row.workflow_id, row.job_id, task_id, row.activity, "error", message
                    )
                    workflow = self._workflow(s, row.workflow_id, lock=True)
                    if set_workflow_state(
                        s, workflow, W.ERROR, from_states=[W.STARTED], error_message=message
                    ):
                        self._log(
                            s,
                            row.workflow_id,
                            row.job_id,
                            task_id,
                            row.activity,
                            "error",
                            f"workflow suspended in error: task {task_id} is dead ({message})",
                        )
                        log.error(
                            "workflow %s in error: task %s (%s) is dead, attempts %d/%d",
                            row.workflow_id,
                            task_id,
                            row.activity,
                            lost,
                            cap,
                        )
            elif set_task_state(
                s,
                task_id,
                row.workflow_id,
                T.RUNNING,
                T.PENDING,
                attempt=row.attempt,
                reason="re-enqueued: its worker was lost",
            ):
                self._log(
                    s,
                    row.workflow_id,
                    row.job_id,
                    task_id,
                    row.activity,
                    "warning",
                    f"attempt {row.attempt} lost its worker; running it again",
                )
                effects.publish.append((definition, row.activity, task_id))
        self._after_commit(effects)
        return 1

    def _republish(self, task_id: str, workflow_id: int, version: int, activity: str) -> int:
        """Publish a pending task again: its message may be lost (duplicates are harmless)."""
        with self.session() as s, s.begin():
            touched = s.execute(
                update(Task)
                .where(Task.id == task_id, Task.state == T.PENDING)
                .values(updated_at=utcnow())
                .returning(Task.id)
                .execution_options(synchronize_session=False)
            ).first()
        if touched is not None:
            self.dispatcher.dispatch(self.definition(workflow_id, version), [(activity, task_id)])
            return 1
        return 0

    # ----------------------------------------------------------------- beyond the platform

    def retry(self, task_id: str) -> None:
        """Run a failed task again (the workflow leaves `error` if it was there)."""
        self._run_again(
            task_id,
            T.FAILED,
            "only a failed task can be retried",
            "retried by an operator",
            reason=None,
        )

    def requeue(self, task_id: str) -> str:
        """Run a dead task again with its attempts reset (the workflow leaves `error`).

        The fencing token (`attempt`) keeps growing: only the count against
        CARILLON_MAX_ATTEMPTS starts over. Returns the task's new state, `pending`.
        """
        self._run_again(
            task_id,
            T.DEAD,
            "only a dead task can be requeued",
            "requeued by an operator after {attempt} attempt(s); attempts reset",
            reason="requeued by an operator",
            error=None,
            finished_at=None,
            attempt_base=TASK.c.attempt - func.coalesce(TASK.c.fired, 0),
        )
        return T.PENDING.value

    def _run_again(
        self, task_id: str, from_state: TaskState, refusal: str, log_line: str, **values: Any
    ) -> None:
        """`from_state` -> pending, published after commit, for an operator's retry or requeue;
        `log_line` may name the task's `{attempt}`."""
        effects = _Effects()
        with self._transaction(effects) as s:
            task = self._task(s, task_id)
            workflow = self._workflow(s, task.workflow_id, lock=True)
            if task.state != from_state:
                raise CommandRefused(f"{refusal}; it is {task.state}")
            if workflow.state == W.ERROR:
                set_workflow_state(
                    s, workflow, W.STARTED, from_states=[W.ERROR], error_message=None
                )
            if workflow.state != W.STARTED:
                raise CommandRefused(f"the workflow is {workflow.state}; resume it first")
            if not set_task_state(s, task_id, task.workflow_id, from_state, T.PENDING, **values):
                raise CommandRefused(f"the task is no longer {from_state}")
            self._log(
                s,
                task.workflow_id,
                task.job_id,
                task_id,
                task.activity,
                "info",
                log_line.format(attempt=task.attempt),
            )
            effects.publish.append(
                (self.definition(task.workflow_id, task.version, s), task.activity, task_id)
            )
        self._after_commit(effects)

    def skip(self, task_id: str) -> None:
        """Mark a failed, dead, held, waiting or pending task done without running it; go on."""
        effects = _Effects()
        with self._transaction(effects) as s:
            task = self._task(s, task_id)
            workflow = self._workflow(s, task.workflow_id, lock=True)
            if task.state not in (T.FAILED, T.DEAD, T.HELD, T.WAITING, T.PENDING):
                raise CommandRefused(f"a {task.state} task cannot be skipped")
            if workflow.state == W.ERROR:
                set_workflow_state(
                    s, workflow, W.STARTED, from_states=[W.ERROR], error_message=None
                )
            definition = self.definition(task.workflow_id, task.version, s)
            activity = definition.activity(task.activity)
            set_task_state(
                s,
                task_id,
                task.workflow_id,
                TaskState(task.state),
                T.DONE,
                outlets=["done"],
                finished_at=utcnow(),
                reason="skipped by an operator",
            )
            targets = self._targets(definition, activity, ["done"]) or []
            self._cancel(s, [task_id], "skipped by an operator")
            self._log(
                s,
                task.workflow_id,
                task.job_id,
                task_id,
                task.activity,
                "info",
                "skipped by an operator",
            )
            self._activate(
                s,
                definition,
                task.workflow_id,
                task.job_id,
                task.version,
                task_id,
                task.activity,
                targets,
                task.vars,
                task.counts,
                {},
                effects,
                passed=task.inputs or {},
            )
            self._maybe_finish(s, task.workflow_id)
        self._after_commit(effects)

    def rerun_from(self, org_id: int | None, ref: str, activity: str) -> str:
        """Run `activity` again in its latest job, with the vars it last ran with."""
        effects = _Effects()
        with self._transaction(effects) as s:
            workflow = self._workflow(s, self.find_workflow(s, org_id, ref).id, lock=True)
            if workflow.state in (W.EDITION, W.PAUSED):
                raise CommandRefused(f"the workflow is {workflow.state}; it cannot rerun now")
            version = workflow.running_version or workflow.latest_version
            definition = self.definition(workflow.id, version, s)
            if activity not in definition.activities:
                raise NotFound(f"activity '{activity}' not found")
            last = s.scalars(
                select(Task)
                .where(Task.workflow_id == workflow.id, Task.activity == activity)
                .order_by(Task.created_at.desc())
                .limit(1)
            ).first()
            if last is None:
                raise CommandRefused(f"activity '{activity}' has never run in this workflow")
            if workflow.state != W.STARTED:  # reopen a finished, stopped or failed workflow
                set_workflow_state(s, workflow, W.STARTED, error_message=None, ended_at=None)
            task_id, _state = self._create_task(
                s,
                definition,
                workflow.id,
                last.job_id,
                version,
                activity,
                last.vars,
                last.counts,
                last.parent_id,
                None,
                effects,
                inputs=last.inputs,
            )
            self._log(
                s,
                workflow.id,
                last.job_id,
                task_id,
                activity,
                "info",
                "rerun from this activity by an operator",
            )
        self._after_commit(effects)
        return task_id

    def release(self, task_id: str) -> None:
        """Let a task of a suspended activity run."""
        effects = _Effects()
        with self._transaction(effects) as s:
            task = self._task(s, task_id)
            if task.state != T.HELD or task.reason != SUSPENDED_REASON:
                raise CommandRefused("only a task of a suspended activity can be released")
            set_task_state(s, task_id, task.workflow_id, T.HELD, T.PENDING, reason=None)
            effects.publish.append(
                (self.definition(task.workflow_id, task.version, s), task.activity, task_id)
            )
        self._after_commit(effects)

    def wake(
        self,
        task_id: str,
        *,
        by: str = "an operator",
        effect: Callable[[Session], None] | None = None,
    ) -> str:
        """Wake a waiting task (an activity that parked, or a wait ended early): it runs
        again, and an activity that parked sees `Context.wake == "woken"`. Returns the
        task's new state.

        `pending`, published after commit, while its workflow is started; `held` while the
        workflow is paused or in error, so that resume runs it (a wake is kept, like a
        trigger queued while paused). `effect(session)` runs in the same transaction once
        the task is known to be waiting: what the waker records (a decision) commits with
        the wake or not at all. A second wake finds the task no longer waiting and is
        refused, so a wake never runs a task twice. CommandRefused when the task is not
        waiting, waits for triggers or a schedule (listeners), or its workflow is closed.
        """
        effects = _Effects()
        with self._transaction(effects) as s:
            task = self._task(s, task_id)
            workflow = self._workflow(s, task.workflow_id, lock=True)
            definition = self.definition(task.workflow_id, task.version, s)
            if task.state != T.WAITING:
                raise CommandRefused(f"only a waiting task can be woken; it is {task.state}")
            if definition.type_of(task.activity).listener:
                raise CommandRefused(
                    f"'{task.activity}' waits for triggers or its schedule; it cannot be woken"
                )
            if workflow.state == W.STARTED:
                to_state, reason = T.PENDING, None
            elif workflow.state in (W.PAUSED, W.ERROR):
                to_state = T.HELD
                reason = PAUSED_REASON if workflow.state == W.PAUSED else ERROR_REASON
            else:
                raise CommandRefused(f"the workflow is {workflow.state}; nothing can be woken")
            # due_at cleared: the next run tells "woken" from "due" by it (see _wake_reason).
            if not set_task_state(
                s,
                task_id,
                task.workflow_id,
                T.WAITING,
                to_state,
                events=effects.events,
                due_at=None,
                reason=reason,
            ):
                raise CommandRefused("the task is no longer waiting (its timer fired first?)")
            if effect is not None:
                effect(s)
            later = "" if to_state == T.PENDING else "; it runs when the workflow is resumed"
            self._log(
                s,
                task.workflow_id,
                task.job_id,
                task_id,
                task.activity,
                "info",
                f"woken by {by}{later}",
            )
            if to_state == T.PENDING:
                effects.publish.append((definition, task.activity, task_id))
        self._after_commit(effects)
        return to_state

    def explain(self, task_id: str, queue_depth: Callable[[str], int | None] | None = None) -> str:
        """Why a task is where it is, in one sentence for an operator."""
        with self.session() as s:
            task = self._task(s, task_id)
            workflow = self._workflow(s, task.workflow_id)
        if task.state == T.WAITING:
            if task.due_at is not None:
                return f"{task.reason or 'waiting'}; the timer is due at {task.due_at.isoformat()}"
            if task.fired and task.activity_type != "externalSignal":
                return f"{task.reason or 'parked'}; no timer: it runs again when it is woken"
            return (
                f"waiting for signal '{task.activity}': POST a trigger to "
                f"{self.trigger_href(workflow, task.activity)}"
            )
        if task.state == T.HELD:
            if task.reason == SUSPENDED_REASON:
                return f"activity '{task.activity}' is suspended; release the task to run it"
            return f"held because the workflow is {workflow.state}; resume it to continue"
        if task.state == T.PENDING:
            if workflow.state != W.STARTED:
                return f"pending, but the workflow is {workflow.state}"
            definition = self.definition(task.workflow_id, task.version)
            from worker.canvas import queue_for  # the canvas module imports celery

            queue = queue_for(definition, task.activity)
            depth = queue_depth(queue) if queue_depth else None
            backlog = (
                f"queue {queue} holds {depth} message(s)"
                if depth is not None
                else (f"queued on {queue}")
            )
            return (
                f"pending since {task.updated_at.isoformat()}: {backlog}; a worker must consume it"
            )
        if task.state == T.RUNNING:
            return (
                f"running on {task.worker} (attempt {task.attempt}), heartbeat {task.heartbeat_at}"
            )
        if task.state == T.FAILED:
            return f"failed: {task.error}; resume or retry to run it again"
        if task.state == T.DEAD:
            return f"dead: {task.error}; fix the activity, then requeue the task"
        return f"{task.state}{': ' + task.reason if task.reason else ''}"

    def trigger_href(self, workflow: Workflow, activity: str, s: Session | None = None) -> str:
        """The absolute URL to POST a trigger of `activity` to (DESIGN section 6).

        Pass the open session when inside one (SQLite has one writer at a time)."""
        stmt = select(Organization.name).where(Organization.id == workflow.org_id)
        if s is not None:
            org = s.execute(stmt).scalar_one()
        else:
            with self.session() as own:
                org = own.execute(stmt).scalar_one()
        return (
            f"{self.settings.public_url}/{org}/campaign/workflow/execution/@{workflow.pkey}"
            f"/activities/activity/@{activity}/trigger"
        )

    def _task(self, s: Session, task_id: str) -> Task:
        task = s.get(Task, task_id)
        if task is None:
            raise NotFound(f"task '{task_id}' not found")
        return task
