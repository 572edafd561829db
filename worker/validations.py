"""Validation rows (human tasks): create, find, list, describe, decide, time out, cancel.

A row is `pending` while its task is parked; then exactly one of `approved`, `rejected`
(a decision), `timedOut` (the task's timer fired first) or `cancelled` (the workflow was
stopped or restarted, or the task skipped). A decision and the wake of the task commit in one
transaction (Engine.wake's `effect`), and the wake only succeeds while the task waits, so a
decision and a timeout can never both win. The API and the CLI both decide through `decide`.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import TYPE_CHECKING, Any

from sqlalchemy import RowMapping, Select, insert, select, update
from sqlalchemy.exc import NoResultFound
from sqlalchemy.orm import Session

from worker import expressions
from worker.db import utcnow
from worker.errors import CommandRefused, NotFound
from worker.messaging import VALIDATION_STATES, validation
from worker.models import Organization, Task, Workflow, new_id

if TYPE_CHECKING:
    from worker.engine import Engine

#: What a caller asks for, and the state it leads to.
DECISIONS = {"approve": "approved", "reject": "rejected"}
MAX_COMMENT = 4000
#: Users, assignees and groups are names of at most this many characters (the columns').
MAX_NAME = 128
MAX_SUBJECT = 255
_PKEY = re.compile(r"@?([0-9a-f-]{1,64})")


class DecisionRefused(CommandRefused):
    """Raised when a validation cannot be decided now: already decided, timed out, cancelled."""

    code = "decisionRefused"


def check_decision(decision: Any, comment: Any, user: Any) -> str | None:
    """What is wrong with a decision request, in one sentence; None when it is acceptable."""
    if not isinstance(decision, str) or decision not in DECISIONS:
        return "'decision' must be 'approve' or 'reject'"
    if comment is not None and not isinstance(comment, str):
        return "'comment' must be a string"
    if comment is not None and len(comment) > MAX_COMMENT:
        return f"'comment' is longer than {MAX_COMMENT} characters"
    if decision == "reject" and not (comment or "").strip():
        return "a rejection needs a 'comment' saying why"
    if not isinstance(user, str) or not user.strip():
        return "'user' (who decides) must be a non-empty string"
    if len(user) > MAX_NAME:
        return f"'user' is longer than {MAX_NAME} characters"
    return None


# -------------------------------------------------------------------- the activity's side


def _keyed(found: RowMapping) -> dict[str, Any]:
    """A row by its columns' keys (camelCase): results are named by the database's names."""
    return {column.key: found[column] for column in validation.c}


def for_task(s: Session, task_id: str) -> dict[str, Any] | None:
    """The validation a task created, if it did."""
    found = s.execute(select(validation).where(validation.c.task_id == task_id)).mappings().first()
    return None if found is None else _keyed(found)


def create(
    s: Session,
    *,
    org_id: int,
    workflow_id: int,
    job_id: str,
    task_id: str,
    activity: str,
    subject: str,
    assignee: str,
    group: str,
    due_at: dt.datetime | None,
) -> dict[str, Any]:
    """Insert the pending row of a task (one per task: the column is unique)."""
    s.execute(
        insert(validation).values(
            org_id=org_id,
            pkey=new_id(),
            workflow_id=workflow_id,
            job_id=job_id,
            task_id=task_id,
            activity=activity,
            subject=subject[:MAX_SUBJECT],
            assignee=assignee,
            group=group,
            state="pending",
            dueAt=due_at,
            created=utcnow(),
        )
    )
    found = for_task(s, task_id)
    assert found is not None
    return found


def time_out(s: Session, row_id: int, now: dt.datetime) -> bool:
    """pending -> timedOut; False when it was no longer pending."""
    done = s.execute(
        update(validation)
        .where(validation.c.id == row_id, validation.c.state == "pending")
        .values(state="timedOut", decidedAt=now)
        .returning(validation.c.id)
    ).first()
    return done is not None


def cancel(s: Session, task_ids: list[str], reason: str) -> None:
    """Pending validations of tasks that ended without a decision can no longer be decided."""
    s.execute(
        update(validation)
        .where(validation.c.task_id.in_(task_ids), validation.c.state == "pending")
        .values(state="cancelled", comment=reason[:MAX_COMMENT], decidedAt=utcnow())
    )


# -------------------------------------------------------------------- the API's and CLI's side


def find(s: Session, org_id: int | None, ref: str) -> dict[str, Any]:
    """A validation by PKey (`@...`), within an organization; NotFound otherwise."""
    match = _PKEY.fullmatch(ref) if isinstance(ref, str) else None
    if match is None:
        raise NotFound(f"validation '{str(ref)[:80]}' not found")
    stmt = select(validation).where(validation.c.pkey == match.group(1))
    if org_id is not None:
        stmt = stmt.where(validation.c.org_id == org_id)
    found = s.execute(stmt).mappings().first()
    if found is None:
        raise NotFound(f"validation '{ref}' not found")
    return _keyed(found)


def list_ids(
    org_id: int | None,
    *,
    state: str | None = None,
    assignee: str | None = None,
    group: str | None = None,
    org_name: str | None = None,
) -> Select[Any]:
    """The ids of the matching validations, oldest first (the API pages over them)."""
    if state is not None and state not in VALIDATION_STATES:
        raise ValueError(f"state must be one of {', '.join(VALIDATION_STATES)}")
    stmt = select(validation.c.id)
    if org_id is not None:
        stmt = stmt.where(validation.c.org_id == org_id)
    if org_name is not None:
        stmt = stmt.join(Organization, Organization.id == validation.c.org_id).where(
            Organization.name == org_name
        )
    if state is not None:
        stmt = stmt.where(validation.c.state == state)
    if assignee is not None:
        stmt = stmt.where(validation.c.assignee == assignee)
    if group is not None:
        stmt = stmt.where(validation.c.group == group)
    return stmt.order_by(validation.c.created, validation.c.id)


def describe(engine: Engine, s: Session, ids: list[int]) -> list[dict[str, Any]]:
    """The validations `ids`, in that order, with their workflow and instructions."""
    if not ids:
        return []
    rows = s.execute(
        select(
            validation,
            Workflow.name.label("workflowName"),
            Workflow.pkey.label("workflowPKey"),
            Organization.name.label("orgName"),
            Task.vars.label("taskVars"),
            Task.version.label("taskVersion"),
        )
        .join(Organization, Organization.id == validation.c.org_id)
        .outerjoin(Workflow, Workflow.id == validation.c.workflow_id)
        .outerjoin(Task, Task.id == validation.c.task_id)
        .where(validation.c.id.in_(ids))
    ).mappings()
    by_id = {row[validation.c.id]: {**row, **_keyed(row)} for row in rows}
    return [_described(engine, s, by_id[i]) for i in ids if i in by_id]


def _described(engine: Engine, s: Session, row: dict[str, Any]) -> dict[str, Any]:
    return {
        "PKey": f"@{row['pkey']}",
        "state": row["state"],
        "subject": row["subject"],
        "instructions": _instructions(engine, s, row),
        "assignee": row["assignee"],
        "group": row["group"],
        "dueAt": _iso(row["dueAt"]),
        "created": _iso(row["created"]),
        "decidedBy": row["decidedBy"],
        "decidedAt": _iso(row["decidedAt"]),
        "comment": row["comment"],
        "org": row["orgName"],
        "workflow": row["workflowName"],
        "workflowPKey": row["workflowPKey"],
        "activity": row["activity"],
        "job": row["job_id"],
        "task": row["task_id"],
    }


def _instructions(engine: Engine, s: Session, row: dict[str, Any]) -> str | None:
    """The activity's `instructions` with the task's vars: read from its definition, which
    never changes, so the row does not copy them (None once the task's history is purged)."""
    if row["taskVersion"] is None or row["workflowName"] is None:
        return None
    try:
        definition = engine.definition(row["workflow_id"], row["taskVersion"], s)
    except NoResultFound:
        return None
    activity = definition.activities.get(row["activity"])
    text = activity.options.get("instructions") if activity is not None else None
    if not isinstance(text, str):
        return None
    rendered = expressions.substitute(text, row["taskVars"] or {})
    return "" if rendered is None else str(rendered)[:MAX_COMMENT]


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def decide(
    engine: Engine,
    org_id: int | None,
    ref: str,
    decision: str,
    comment: str | None,
    user: str,
) -> dict[str, Any]:
    """Approve or reject a pending validation and wake its task; returns the decided row.

    NotFound (another organization's too), DecisionRefused (409) when it is not pending or
    its task no longer waits (its timeout fired first), ValueError on a malformed request
    (callers check it first with check_decision).
    """
    problem = check_decision(decision, comment, user)
    if problem:
        raise ValueError(problem)
    with engine.session() as s:
        row = find(s, org_id, ref)
    _refuse_closed(row)
    to_state = DECISIONS[decision]
    user = user.strip()

    def record(s: Session) -> None:
        done = s.execute(
            update(validation)
            .where(validation.c.id == row["id"], validation.c.state == "pending")
            .values(state=to_state, comment=comment or "", decidedBy=user, decidedAt=utcnow())
            .returning(validation.c.id)
        ).first()
        if done is None:
            raise DecisionRefused("the validation was decided at the same time by someone else")

    try:
        engine.wake(row["task_id"], by=f"{user} ({to_state})", effect=record)
    except DecisionRefused:
        raise
    except (CommandRefused, NotFound) as exc:
        # The row is pending but its task does not wait: a timeout or a stop got there first.
        with engine.session() as s:
            _refuse_closed(find(s, org_id, ref))
        raise DecisionRefused(
            f"the validation can no longer be decided: {exc.message}", details={"state": "pending"}
        ) from None
    with engine.session() as s:
        return describe(engine, s, [row["id"]])[0]


def _refuse_closed(row: dict[str, Any]) -> None:
    if row["state"] == "pending":
        return
    state = row["state"]
    if state in ("approved", "rejected"):
        message = f"the validation was already {state} by {row['decidedBy'] or 'someone'}"
    elif state == "timedOut":
        message = "the validation timed out; it can no longer be decided"
    else:
        message = f"the validation was cancelled ({row['comment'] or 'its task ended'})"
    raise DecisionRefused(message, details={"state": state})
