"""Monitoring's read side: summaries, pages and graphs of an organization's workflows (no Flask).

The API (api/monitoring.py) and `carillon status` both read through here. Every query filters
on an indexed prefix (migration 0005); pages are built by the caller from the statements.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Integer, Select, and_, case, cast, exists, func, not_, or_, select
from sqlalchemy.orm import Session

from worker.db import utcnow
from worker.definitions import Definition
from worker.messaging import validation
from worker.models import Job, LogLine, Organization, Task, Trigger, Workflow
from worker.states import ACTIVE_TASK_STATES, TaskState, WorkflowState

WORKFLOW_STATES = tuple(state.value for state in WorkflowState)
TASK_STATES = tuple(state.value for state in TaskState)
ACTIVE = tuple(sorted(state.value for state in ACTIVE_TASK_STATES))
#: A job's state, derived from its tasks (jobs have no state column).
JOB_STATES = ("running", "failed", "aborted", "done")
#: Task states whose "why" the engine explains (engine.explain).
MAX_THROUGHPUT_MINUTES = 1440
MAX_BUCKETS = 120


def iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _zeros(states: Iterable[str]) -> dict[str, int]:
    return dict.fromkeys(states, 0)


# ------------------------------------------------------------------------------ summary


def summary(s: Session, org_id: int) -> dict[str, Any]:
    """Workflows and tasks of an organization by state, and its pending validations."""
    workflows = _zeros(WORKFLOW_STATES)
    for state, number in s.execute(
        select(Workflow.state, func.count())
        .where(Workflow.org_id == org_id)
        .group_by(Workflow.state)
    ):
        workflows[state] = number
    return {
        "workflows": workflows,
        "tasks": task_counts(s, org_id),
        "pendingValidations": s.execute(
            select(func.count())
            .select_from(validation)
            .where(validation.c.org_id == org_id, validation.c.state == "pending")
        ).scalar_one(),
        "generatedAt": iso(utcnow()),
    }


def task_counts(s: Session, org_id: int | None) -> dict[str, int]:
    """Tasks by state, of one organization (None: all): an index-only scan of
    ix_task_workflow_state_created grouped by workflow, joined to the organization's workflows."""
    per_workflow = (
        select(Task.workflow_id, Task.state, func.count().label("n"))
        .group_by(Task.workflow_id, Task.state)
        .subquery()
    )
    stmt = select(per_workflow.c.state, func.sum(per_workflow.c.n)).group_by(per_workflow.c.state)
    if org_id is not None:
        stmt = stmt.join(Workflow, Workflow.id == per_workflow.c.workflow_id).where(
            Workflow.org_id == org_id
        )
    counts = _zeros(TASK_STATES)
    for state, number in s.execute(stmt):
        counts[state] = int(number)
    return counts


def workflows_by_org(s: Session) -> list[tuple[str, str, int]]:
    """(organization, workflow state, count) for every organization: the CLI's overview."""
    return [
        (org, state, number)
        for org, state, number in s.execute(
            select(Organization.name, Workflow.state, func.count())
            .join(Workflow, Workflow.org_id == Organization.id)
            .group_by(Organization.name, Workflow.state)
            .order_by(Organization.name, Workflow.state)
        )
    ]


# ------------------------------------------------------------------------------ workflows


def workflows_stmt(org_id: int, state: str | None = None, q: str | None = None) -> Select[Any]:
    """An organization's workflows by internal name, optionally in a state or matching `q`
    (a case-insensitive substring of the name or the label, wildcards taken literally)."""
    stmt = select(Workflow).where(Workflow.org_id == org_id)
    if state is not None:
        stmt = stmt.where(Workflow.state == state)
    if q:
        needle = q.lower()
        stmt = stmt.where(
            or_(
                func.lower(Workflow.name).contains(needle, autoescape=True),
                func.lower(Workflow.label).contains(needle, autoescape=True),
            )
        )
    return stmt.order_by(Workflow.name)


@dataclass
class JobStats:
    """What a job's tasks say about it."""

    counts: dict[str, int]
    ended: int  # end activities done
    finished_at: dt.datetime | None

    @property
    def state(self) -> str:
        if any(self.counts.get(state) for state in ACTIVE):
            return "running"
        if self.counts.get("failed"):
            return "failed"
        if self.counts.get("aborted") and not self.ended:
            return "aborted"  # stopped, or aborted before reaching an end
        return "done"

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def job_stats(s: Session, job_ids: Sequence[str]) -> dict[str, JobStats]:
    """Counts by state of each job's tasks (ix_task_job_id), with when the last one ended."""
    found: dict[str, JobStats] = {}
    if not job_ids:
        return found
    is_end = case((and_(Task.activity_type == "end", Task.state == "done"), 1), else_=0)
    for job_id, state, number, ended, finished in s.execute(
        select(Task.job_id, Task.state, func.count(), func.sum(is_end), func.max(Task.finished_at))
        .where(Task.job_id.in_(list(job_ids)))
        .group_by(Task.job_id, Task.state)
    ):
        stats = found.setdefault(job_id, JobStats(counts={}, ended=0, finished_at=None))
        stats.counts[state] = number
        stats.ended += int(ended or 0)
        if finished is not None and (stats.finished_at is None or finished > stats.finished_at):
            stats.finished_at = finished
    return found


def _run(job: Job, stats: JobStats | None) -> dict[str, Any]:
    stats = stats or JobStats(counts={}, ended=0, finished_at=None)
    state = stats.state
    return {
        "jobId": job.id,
        "state": state,
        "startedAt": iso(job.created_at),
        "finishedAt": None if state == "running" else iso(stats.finished_at),
    }


def latest_jobs(s: Session, workflow_ids: Sequence[int]) -> dict[int, Job]:
    """The newest job of each workflow (ix_job_workflow_created)."""
    if not workflow_ids:
        return {}
    # A correlated "newest first, limit 1" per workflow is one backward index probe each,
    # where a GROUP BY would read every job of a workflow with 50,000 of them.
    newest = (
        select(Job.created_at)
        .where(Job.workflow_id == Workflow.id)
        .order_by(Job.created_at.desc())
        .limit(1)
        .scalar_subquery()
    )
    pairs = [
        (workflow_id, at)
        for workflow_id, at in s.execute(
            select(Workflow.id, newest).where(Workflow.id.in_(list(workflow_ids)))
        )
        if at is not None
    ]
    found: dict[int, Job] = {}
    if not pairs:
        return found
    for job in s.scalars(
        select(Job)
        .where(or_(*(and_(Job.workflow_id == w, Job.created_at == at) for w, at in pairs)))
        .order_by(Job.id)
    ):
        found.setdefault(job.workflow_id, job)
    return found


def next_runs(s: Session, workflow_ids: Sequence[int]) -> dict[int, dt.datetime]:
    """The earliest due time of each workflow's waiting timers (ix_task_workflow_state_created)."""
    if not workflow_ids:
        return {}
    return {
        workflow_id: due
        for workflow_id, due in s.execute(
            select(Task.workflow_id, func.min(Task.due_at))
            .where(
                Task.workflow_id.in_(list(workflow_ids)),
                Task.state == TaskState.WAITING,
                Task.due_at.is_not(None),
            )
            .group_by(Task.workflow_id)
        )
        if due is not None
    }


def workflow_items(s: Session, workflows: Sequence[Workflow]) -> list[dict[str, Any]]:
    """List entries of a page of workflows: a few grouped queries for the whole page."""
    ids = [workflow.id for workflow in workflows]
    latest = latest_jobs(s, ids)
    stats = job_stats(s, [job.id for job in latest.values()])
    due = next_runs(s, ids)
    items = []
    for workflow in workflows:
        job = latest.get(workflow.id)
        job_stat = stats.get(job.id) if job is not None else None
        items.append(
            {
                "id": workflow.name,
                "PKey": f"@{workflow.pkey}",
                "label": workflow.label,
                "state": workflow.state,
                "lastRun": _run(job, job_stat) if job is not None else None,
                "nextRun": iso(due.get(workflow.id)),
                "tasks": dict(job_stat.counts) if job_stat is not None else {},
            }
        )
    return items


def transitions(definition: Definition) -> list[dict[str, str]]:
    """The graph's edges, in definition order; a jump's target under the outlet `jump`."""
    edges: list[dict[str, str]] = []
    for name, activity in definition.activities.items():
        for outlet, targets in activity.transitions.items():
            edges.extend({"from": name, "outlet": outlet, "to": target} for target in targets)
        jump = definition.type_of(name).jump_target(activity)
        if jump:
            edges.append({"from": name, "outlet": "jump", "to": jump})
    return edges


def workflow_detail(s: Session, workflow: Workflow, definition: Definition) -> dict[str, Any]:
    """A workflow with its graph: each activity's latest state and its tasks by state."""
    counts: dict[str, dict[str, int]] = {}
    for name, state, number in s.execute(
        select(Task.activity, Task.state, func.count())
        .where(Task.workflow_id == workflow.id)
        .group_by(Task.activity, Task.state)
    ):
        counts.setdefault(name, {})[state] = number
    activities = []
    for name, activity in definition.activities.items():
        # One indexed probe per activity (ix_task_workflow_activity_created).
        latest = s.execute(
            select(Task.state)
            .where(Task.workflow_id == workflow.id, Task.activity == name)
            .order_by(Task.created_at.desc(), Task.id.desc())
            .limit(1)
        ).scalar()
        found = counts.get(name, {})
        activities.append(
            {
                "name": name,
                "type": activity.type,
                "label": activity.label,
                "state": latest,
                "counts": found,
                "executions": sum(found.values()),
            }
        )
    item = workflow_items(s, [workflow])[0]
    return {
        **item,
        "version": workflow.running_version or workflow.latest_version,
        "errorMessage": workflow.error_message,
        "activities": activities,
        "transitions": transitions(definition),
    }


# ------------------------------------------------------------------------------ history


def _job_state_condition(state: str) -> Any:
    """SQL for JobStats.state == `state`, as EXISTS probes on the job's tasks."""

    def having(*states: str, end: bool = False) -> Any:
        stmt = select(Task.id).where(Task.job_id == Job.id, Task.state.in_(states))
        if end:
            stmt = stmt.where(Task.activity_type == "end")
        return exists(stmt)

    active, failed = having(*ACTIVE), having("failed")
    settled = and_(not_(active), not_(failed))
    if state == "running":
        return active
    if state == "failed":
        return and_(not_(active), failed)
    aborted = and_(having("aborted"), not_(having("done", end=True)))
    if state == "aborted":
        return and_(settled, aborted)
    return and_(settled, not_(aborted))


def jobs_stmt(workflow_id: int, state: str | None = None) -> Select[Any]:
    """A workflow's jobs, newest first (ix_job_workflow_created)."""
    stmt = select(Job).where(Job.workflow_id == workflow_id)
    if state is not None:
        stmt = stmt.where(_job_state_condition(state))
    return stmt.order_by(Job.created_at.desc(), Job.id.desc())


def job_items(s: Session, jobs: Sequence[Job]) -> list[dict[str, Any]]:
    stats = job_stats(s, [job.id for job in jobs])
    items = []
    for job in jobs:
        found = stats.get(job.id)
        run = _run(job, found)
        items.append(
            {
                "id": job.id,
                "state": run["state"],
                "startedAt": run["startedAt"],
                "finishedAt": run["finishedAt"],
                "tasks": found.total if found is not None else 0,
                "counts": dict(found.counts) if found is not None else {},
                "origin": job.origin,
                "originActivity": job.origin_activity,
            }
        )
    return items


def tasks_stmt(
    workflow_id: int,
    state: str | None = None,
    activity: str | None = None,
    job_id: str | None = None,
) -> Select[Any]:
    """A workflow's tasks, newest first (ix_task_workflow_created and its siblings)."""
    stmt = select(Task).where(Task.workflow_id == workflow_id)
    if state is not None:
        stmt = stmt.where(Task.state == state)
    if activity is not None:
        stmt = stmt.where(Task.activity == activity)
    if job_id is not None:
        stmt = stmt.where(Task.job_id == job_id)
    return stmt.order_by(Task.created_at.desc(), Task.id.desc())


def duration_ms(task: Task) -> int | None:
    if task.started_at is None or task.finished_at is None:
        return None
    return round((task.finished_at - task.started_at).total_seconds() * 1000)


def task_item(task: Task, why: str | None) -> dict[str, Any]:
    return {
        "id": task.id,
        "jobId": task.job_id,
        "activity": task.activity,
        "type": task.activity_type,
        "state": task.state,
        "createdAt": iso(task.created_at),
        "startedAt": iso(task.started_at),
        "finishedAt": iso(task.finished_at),
        "dueAt": iso(task.due_at),
        "durationMs": duration_ms(task),
        "executions": task.attempt,
        "abortReason": task.reason if task.state == TaskState.ABORTED else None,
        "reason": task.reason,
        "error": task.error,
        "vars": task.vars or {},
        "counts": task.counts or {},
        "progress": task.progress,
        "why": why,
    }


def logs_stmt(
    workflow_id: int,
    level: str | None = None,
    task_id: str | None = None,
    q: str | None = None,
) -> Select[Any]:
    """A workflow's log lines, newest first (ix_log_line_workflow, _level, ix_log_line_task).

    `q` is a case-insensitive substring of the message: it reads every line of the workflow
    that the other filters leave, so it is the one filter whose cost grows with the log."""
    stmt = select(LogLine).where(LogLine.workflow_id == workflow_id)
    if level is not None:
        stmt = stmt.where(LogLine.level == level)
    if task_id is not None:
        stmt = stmt.where(LogLine.task_id == task_id)
    if q:
        stmt = stmt.where(func.lower(LogLine.message).contains(q.lower(), autoescape=True))
    return stmt.order_by(LogLine.id.desc())


def log_item(line: LogLine) -> dict[str, Any]:
    return {
        "id": line.id,
        "at": iso(line.created_at),
        "level": line.level,
        "activity": line.activity,
        "taskId": line.task_id,
        "jobId": line.job_id,
        "message": line.message,
    }


# ------------------------------------------------------------------------------ validations


def validations_stmt(org_id: int, state: str | None = None) -> Select[Any]:
    """An organization's validations, oldest first (ix_validation_org_state), with the
    workflow's internal name."""
    stmt = (
        select(validation, Workflow.name.label("workflowName"))
        .outerjoin(Workflow, Workflow.id == validation.c.workflow_id)
        .where(validation.c.org_id == org_id)
    )
    if state is not None:
        stmt = stmt.where(validation.c.state == state)
    return stmt.order_by(validation.c.created, validation.c.id)


def validation_item(row: Any) -> dict[str, Any]:
    found = row._mapping
    return {
        "id": found["pkey"],
        "PKey": f"@{found['pkey']}",
        "workflowId": found["workflowName"],
        "activity": found["activity"],
        "subject": found["subject"],
        "assignee": found["assignee"],
        "group": found["group"],
        "state": found["state"],
        "createdAt": iso(found["created"]),
        "dueAt": iso(found["dueAt"]),
        "taskId": found["task_id"],
        "jobId": found["job_id"],
    }


# ------------------------------------------------------------------------------ technical


def technical(s: Session, now: dt.datetime | None = None) -> list[dict[str, Any]]:
    """The technical workflows as admins see them (worker.technical.admin), in one shape."""
    from worker.technical import admin, install

    items = []
    for found in admin.list_all(s, now):
        fires = found.get("nextFires") or []
        items.append(
            {
                "name": found["id"],
                "label": install.ACTIVITIES.get(found["id"], ("", found["id"]))[1],
                "enabled": found["enabled"],
                "schedule": found["schedule"],
                "state": found["state"],
                "lastTick": found["lastSlot"],
                "lastOutcome": found["lastOutcome"] or None,
                "nextRun": fires[0] if fires else None,
            }
        )
    return items


# ------------------------------------------------------------------------------ throughput


def bucket_seconds(minutes: int) -> int:
    """One minute, or coarser (whole minutes) so that a window holds at most MAX_BUCKETS."""
    return 60 * max(1, math.ceil(minutes / MAX_BUCKETS))


def throughput(
    s: Session, org_id: int, minutes: int, now: dt.datetime | None = None
) -> dict[str, Any]:
    """Tasks done and failed, and triggers accepted, per time bucket over the last `minutes`."""
    size = bucket_seconds(minutes)
    now = now or utcnow()
    count = math.ceil(minutes * 60 / size)
    last = math.floor(now.timestamp() / size)
    first = last - count + 1
    since = dt.datetime.fromtimestamp(first * size, dt.UTC)
    buckets = {
        first + i: {"t": iso(dt.datetime.fromtimestamp((first + i) * size, dt.UTC)), **_ZERO}
        for i in range(count)
    }
    dialect = s.get_bind().dialect.name
    finished = _bucket(Task.finished_at, size, dialect)
    for index, state, number in s.execute(
        select(finished, Task.state, func.count())
        .join(Workflow, Workflow.id == Task.workflow_id)
        .where(
            Task.finished_at >= since,
            Task.state.in_(("done", "failed")),
            Workflow.org_id == org_id,
        )
        .group_by(finished, Task.state)
    ):
        if int(index) in buckets:
            buckets[int(index)][state] += number
    created = _bucket(Trigger.created_at, size, dialect)
    for index, number in s.execute(
        select(created, func.count())
        .join(Workflow, Workflow.id == Trigger.workflow_id)
        .where(Trigger.created_at >= since, Trigger.state != "dropped", Workflow.org_id == org_id)
        .group_by(created)
    ):
        if int(index) in buckets:
            buckets[int(index)]["triggers"] += number
    return {"bucketSeconds": size, "buckets": list(buckets.values())}


_ZERO = {"done": 0, "failed": 0, "triggers": 0}


def _bucket(column: Any, size: int, dialect: str) -> Any:
    """The bucket number of a timestamp: seconds since the epoch, divided by `size`."""
    if dialect == "sqlite":  # stored as naive UTC text
        return cast(func.strftime("%s", column), Integer) / size
    return cast(func.floor(func.extract("epoch", column) / size), Integer)
