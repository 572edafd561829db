"""Finishing a workflow whose last task is done: lock, look, finish, in three statements.

Two branches that end at once must not both see the other still running (and neither
finish): whoever may finish takes the workflow's row lock first, then looks for an active
task in a statement of its own, whose snapshot is taken after the lock was granted. The
finish then writes the workflow's state, its event and its log line; on PostgreSQL in one
statement. Core statements built once: this runs at the end of every job.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    String,
    bindparam,
    cast,
    func,
    insert,
    literal,
    literal_column,
    null,
    select,
    update,
)
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.util import identity_key
from sqlalchemy.sql.selectable import CTE

from worker.models import Workflow
from worker.states import ACTIVE_TASK_STATES, WorkflowState
from worker.transitions import EVENT, EVENT_KEYS, LOG, LOG_KEYS, TASK, WORKFLOW

MESSAGE = "workflow finished"
STARTED, FINISHED = WorkflowState.STARTED.value, WorkflowState.FINISHED.value

#: FOR NO KEY UPDATE, not FOR UPDATE: inserting a task or job takes FOR KEY SHARE on its
#: workflow through the foreign key; this mode serialises the finishers without conflicting.
#: LOCK, ACTIVE and FINISH are also the seeded finishing hop's (worker.hop), with its fence.
LOCK = (
    select(WORKFLOW.c.state)
    .where(WORKFLOW.c.id == bindparam("workflow_id"))
    .with_for_update(key_share=True)
)
ACTIVE = (
    select(TASK.c.id)
    .where(
        TASK.c.workflow_id == bindparam("workflow_id"),
        # Constants in the text, not an expanding parameter: the finishing hop prepares it.
        TASK.c.state.in_(
            [literal_column(f"'{state}'") for state in sorted(s.value for s in ACTIVE_TASK_STATES)]
        ),
    )
    .limit(1)
)
FINISH = (
    update(WORKFLOW)
    .where(WORKFLOW.c.id == bindparam("workflow_id"), WORKFLOW.c.state == STARTED)
    .values(state=FINISHED, updated_at=bindparam("now"), ended_at=bindparam("now"))
    .returning(WORKFLOW.c.id)
)


def finish_with_record(update_statement: Any) -> tuple[CTE, list[CTE]]:
    """PostgreSQL: `update_statement` (a finishing UPDATE of workflow returning its id, with
    a `now` parameter) as a CTE, and the CTEs writing its event and its log line."""
    finished = update_statement.cte("finished")
    now = bindparam("now", type_=WORKFLOW.c.updated_at.type)
    event = insert(EVENT).from_select(
        list(EVENT_KEYS),
        select(
            finished.c.id,
            literal("workflow"),
            cast(finished.c.id, String),
            literal(STARTED),
            literal(FINISHED),
            null(),
            now,
        ),
    )
    line = insert(LOG).from_select(
        list(LOG_KEYS),
        select(finished.c.id, null(), null(), null(), literal("info"), literal(MESSAGE), now),
    )
    return finished, [event.cte("finished_event"), line.cte("finished_line")]


def _finish_in_one() -> Any:
    """PostgreSQL: the update, its event and its log line in one statement."""
    finished, records = finish_with_record(FINISH)
    return select(func.count()).select_from(finished).add_cte(*records)


_FINISH_IN_ONE = _finish_in_one()


def maybe_finish(session: Session, workflow_id: int, now: dt.datetime) -> bool:
    """started -> finished when no task of the workflow is pending, running, waiting or held;
    True if it finished. Keeps a Workflow object of the session, if any, up to date."""
    params = {"workflow_id": workflow_id, "now": now}
    if session.execute(LOCK, params).scalar_one() != STARTED:
        return False
    if session.execute(ACTIVE, params).first() is not None:
        return False
    if session.get_bind().dialect.name == "postgresql":
        finished = bool(session.execute(_FINISH_IN_ONE, params).scalar_one())
    else:
        finished = session.execute(FINISH, params).first() is not None
        if finished:
            session.execute(
                insert(EVENT),
                {
                    "workflow_id": workflow_id,
                    "entity": "workflow",
                    "entity_id": str(workflow_id),
                    "from_state": STARTED,
                    "to_state": FINISHED,
                    "attempt": None,
                    "at": now,
                },
            )
            session.execute(
                insert(LOG),
                {
                    "workflow_id": workflow_id,
                    "job_id": None,
                    "task_id": None,
                    "activity": None,
                    "level": "info",
                    "message": MESSAGE,
                    "created_at": now,
                },
            )
    loaded = session.identity_map.get(identity_key(Workflow, workflow_id))
    if finished and loaded is not None:
        for key, value in (("state", FINISHED), ("updated_at", now), ("ended_at", now)):
            set_committed_value(loaded, key, value)
    return finished
