"""The `validation` activity: a user or group approves or rejects, else its timeout fires.

First run: the pending validation row is created and the task parks (Outcome.park) until a
decision wakes it (worker.validations.decide) or its timeout is due. Next run: the outlet of
the decision (`approved`, `rejected`) or `timeout`, with the decision in the vars.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from sqlalchemy.orm import Session

from worker import durations, expressions, validations
from worker.activities.base import Activity, ActivityType, Context, Option, Outcome, Park
from worker.errors import ActivityError, DefinitionError, ScheduleError
from worker.registry import register

OUTLETS = frozenset({"approved", "rejected", "timeout"})
MAX_INSTRUCTIONS = 4000


def _name(value: Any) -> str | None:
    if not value.strip():
        return "must not be empty"
    if len(value) > validations.MAX_NAME:
        return f"at most {validations.MAX_NAME} characters"
    return None


def _subject(value: Any) -> str | None:
    if not value.strip():
        return "must not be empty"
    if len(value) > validations.MAX_SUBJECT:
        return f"at most {validations.MAX_SUBJECT} characters"
    return None


def _instructions(value: Any) -> str | None:
    return f"at most {MAX_INSTRUCTIONS} characters" if len(value) > MAX_INSTRUCTIONS else None


@register
class Validation(ActivityType):
    """A human task: `assignee` and/or `group` approve or reject; `timeout` (`1d 8h`) optional."""

    name = "validation"
    family = "human"
    # Database writes only: claimed, run and parked (or completed) in one transaction.
    quick = True
    deciding = True
    # A rejection may loop back to an earlier step: a human decision separates the rounds.
    breaks_loops = True
    options = {
        "subject": Option((str,), required=True, check=_subject),
        "assignee": Option((str,), check=_name),
        "group": Option((str,), check=_name),
        "timeout": Option((str,)),
        "instructions": Option((str,), check=_instructions),
    }

    def validate(self, activity: Activity) -> None:
        super().validate(activity)
        problem = _who_and_timeout_problem(activity.options)
        if problem:
            raise DefinitionError(problem, activity=activity.name)

    def outlets(self, activity: Activity) -> frozenset[str]:
        return OUTLETS

    def run(self, ctx: Context) -> Outcome:
        return ask(ctx, ctx.activity.options, ctx.session)

    def cancel(self, session: Session, task_ids: list[str], reason: str) -> None:
        validations.cancel(session, task_ids, reason)


REQUEST_KEYS = frozenset({"subject", "assignee", "group", "timeout", "instructions"})


def request_problem(options: Any) -> str | None:
    """What is wrong with a validation request given as one object (a delivery's
    `validation` option), in one sentence; None when it is acceptable."""
    if not isinstance(options, dict):
        return "must be an object with 'assignee' and/or 'group'"
    unknown = sorted(str(key)[:40] for key in options if key not in REQUEST_KEYS)
    if unknown:
        return f"unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(REQUEST_KEYS))})"
    checks = {"subject": _subject, "assignee": _name, "group": _name, "instructions": _instructions}
    for key, value in options.items():
        if not isinstance(value, str):
            return f"'{key}' must be a string"
        problem = checks[key](value) if key in checks else None
        if problem:
            return f"'{key}' {problem}"
    return _who_and_timeout_problem(options)


def _who_and_timeout_problem(options: Mapping[str, Any]) -> str | None:
    if "assignee" not in options and "group" not in options:
        return "give 'assignee', 'group' or both: someone must decide"
    timeout = options.get("timeout")
    if timeout is not None and not expressions.find_placeholders(timeout):
        try:
            durations.parse_duration(timeout, option="timeout")
        except ScheduleError as exc:
            return exc.message
    return None


def ask(ctx: Context, options: Mapping[str, Any], s: Session) -> Outcome:
    """The validation step of a task: ask (park), wait again, or give the decision's outlet
    (`approved`, `rejected`, `timeout`) with the decision in the vars. `s` writes the row."""
    row = validations.for_task(s, ctx.task_id)
    if row is None:
        return _request(ctx, options, s)
    state = row["state"]
    if state in ("approved", "rejected"):
        comment = f": {row['comment']}" if row["comment"] else ""
        ctx.log(f"{state} by {row['decidedBy']}{comment}")
        return _decided(state, state, row["comment"], row["decidedBy"])
    if state == "pending":
        due = row["dueAt"]
        if ctx.wake == "due" or (due is not None and due <= ctx.now):
            validations.time_out(s, row["id"], ctx.now)
            ctx.log(f"no decision before {due.isoformat() if due else 'the timeout'}")
            return _decided("timeout", "timedOut", "", "")
        # Woken without a decision (an operator's wake): wait again for the same one.
        return Outcome(park=Park(_reason(row["assignee"], row["group"]), due))
    if state == "timedOut":
        return _decided("timeout", "timedOut", "", "")
    raise ActivityError(f"validation @{row['pkey']} is {state}; it cannot continue")


def _request(ctx: Context, raw: Mapping[str, Any], s: Session) -> Outcome:
    options = expressions.substitute(dict(raw), ctx.vars)
    subject = _text(options.get("subject"))
    assignee = _text(options.get("assignee")).strip()
    group = _text(options.get("group")).strip()
    if not assignee and not group:
        raise ActivityError("'assignee' and 'group' are both empty once vars are read")
    if len(assignee) > validations.MAX_NAME or len(group) > validations.MAX_NAME:
        raise ActivityError(f"'assignee' and 'group' are at most {validations.MAX_NAME} chars")
    due_at = _due(options.get("timeout"), ctx.now)
    validations.create(
        s,
        org_id=ctx.org_id,
        workflow_id=ctx.workflow_id,
        job_id=ctx.job_id,
        task_id=ctx.task_id,
        activity=ctx.activity.name,
        subject=subject,
        assignee=assignee,
        group=group,
        due_at=due_at,
    )
    who = assignee or f"group {group}"
    if assignee and group:
        who = f"{assignee} (group {group})"
    until = f", due at {due_at.isoformat()}" if due_at else ", no timeout"
    ctx.log(f"validation requested from {who}{until}")
    return Outcome(park=Park(_reason(assignee, group), due_at))


def _decided(outlet: str, decision: str, comment: str, decided_by: str) -> Outcome:
    return Outcome(
        outlets=(outlet,),
        vars={
            "validationDecision": decision,
            "validationComment": comment,
            "validationDecidedBy": decided_by,
        },
    )


def _reason(assignee: str, group: str) -> str:
    who = " or ".join(part for part in (assignee, f"group {group}" if group else "") if part)
    return f"waiting for validation by {who}"


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _due(timeout: Any, now: dt.datetime) -> dt.datetime | None:
    if timeout is None:
        return None
    try:
        return now + durations.parse_duration(_text(timeout), option="timeout")
    except ScheduleError as exc:
        raise ActivityError(exc.message) from None
