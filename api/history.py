"""History of an execution, paginated: its jobs, its tasks (with why each waits) and its logs."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, request
from sqlalchemy import func, select

from api import pages, render
from api.context import caller, carillon
from api.errors import ApiError
from worker.errors import NotFound
from worker.models import Job, LogLine, Task
from worker.states import EXPLAINED_TASK_STATES, TaskState

bp = Blueprint("history", __name__)

EXECUTION = "/<org>/campaign/workflow/execution/<workflow_ref>"
#: Task states an operator wants explained (engine.explain says why the task is there).
TASK_STATES = frozenset(state.value for state in TaskState)
#: Longest text filter (activity, job, level) accepted in a query string.
MAX_FILTER = 200


@bp.get(f"{EXECUTION}/jobs")
def jobs(org: str, workflow_ref: str) -> dict[str, Any]:
    """A workflow's jobs, oldest first.
    ---
    get:
      summary: Jobs of a workflow (one per start, scheduler fire or trigger), oldest first
      tags: [history]
      parameters:
        - lineCount
        - lineStart
      responses:
        200:
          description: a page of jobs
          content:
            application/json:
              schema: {$ref: '#/components/schemas/JobPage'}
        400: {$ref: '#/components/responses/BadRequest'}
        404: {$ref: '#/components/responses/NotFound'}
    """
    app, who = carillon(), caller()
    with app.sessions() as s:
        workflow = app.engine.find_workflow(s, who.org_id, workflow_ref)
        stmt = select(Job).where(Job.workflow_id == workflow.id).order_by(Job.created_at, Job.id)
        return pages.page(s, stmt, lambda row: render.job(who.org_name, workflow.pkey, row))


@bp.get(f"{EXECUTION}/jobs/<job_id>")
def job(org: str, workflow_ref: str, job_id: str) -> dict[str, Any]:
    """One job, with its tasks counted by state.
    ---
    get:
      summary: One job of a workflow
      tags: [history]
      responses:
        200:
          description: the job
          content:
            application/json:
              schema: {$ref: '#/components/schemas/Job'}
        404: {$ref: '#/components/responses/NotFound'}
    """
    app, who = carillon(), caller()
    with app.sessions() as s:
        workflow = app.engine.find_workflow(s, who.org_id, workflow_ref)
        found = s.scalars(
            select(Job).where(Job.id == job_id, Job.workflow_id == workflow.id)
        ).first()
        if found is None:
            raise NotFound(f"job '{job_id}' not found")
        counts = dict(
            s.execute(
                select(Task.state, func.count()).where(Task.job_id == job_id).group_by(Task.state)
            ).all()
        )
        return {**render.job(who.org_name, workflow.pkey, found), "tasks": counts}


@bp.get(f"{EXECUTION}/tasks")
def tasks(org: str, workflow_ref: str) -> dict[str, Any]:
    """A workflow's tasks, oldest first, each pending, waiting, held or failed one explained.
    ---
    get:
      summary: Tasks of a workflow, oldest first, with why each unfinished one is there
      tags: [history]
      parameters:
        - lineCount
        - lineStart
        - taskState
        - name: activity
          in: query
          description: this activity's only
          schema: {type: string, maxLength: 200, pattern: '^[^\\x00-\\x1f]*$'}
        - name: job
          in: query
          description: this job's only
          schema: {type: string, maxLength: 200, pattern: '^[^\\x00-\\x1f]*$'}
      responses:
        200:
          description: a page of tasks
          content:
            application/json:
              schema: {$ref: '#/components/schemas/TaskPage'}
        400: {$ref: '#/components/responses/BadRequest'}
        404: {$ref: '#/components/responses/NotFound'}
    """
    app, who = carillon(), caller()
    state = request.args.get("state")
    if state is not None and state not in TASK_STATES:
        raise ApiError(400, f"state must be one of {', '.join(sorted(TASK_STATES))}")
    activity = pages.text_filter("activity", MAX_FILTER)
    job_id = pages.text_filter("job", MAX_FILTER)
    with app.sessions() as s:
        workflow = app.engine.find_workflow(s, who.org_id, workflow_ref)
        stmt = select(Task).where(Task.workflow_id == workflow.id)
        if state is not None:
            stmt = stmt.where(Task.state == state)
        if activity is not None:
            stmt = stmt.where(Task.activity == activity)
        if job_id is not None:
            stmt = stmt.where(Task.job_id == job_id)
        listed = pages.page(s, stmt.order_by(Task.created_at, Task.id), lambda row: row)
    # Outside the session: explain() opens its own (SQLite has one writer at a time).
    listed["content"] = [
        render.task(row, app.engine.explain(row.id) if row.state in EXPLAINED_TASK_STATES else None)
        for row in listed["content"]
    ]
    return listed


@bp.get(f"{EXECUTION}/logs")
def logs(org: str, workflow_ref: str) -> dict[str, Any]:
    """A workflow's log lines, oldest first.
    ---
    get:
      summary: Log lines of a workflow, oldest first
      tags: [history]
      parameters:
        - lineCount
        - lineStart
        - name: level
          in: query
          description: only lines of this level
          schema: {type: string, maxLength: 200, pattern: '^[^\\x00-\\x1f]*$', example: warning}
      responses:
        200:
          description: a page of log lines
          content:
            application/json:
              schema: {$ref: '#/components/schemas/LogPage'}
        400: {$ref: '#/components/responses/BadRequest'}
        404: {$ref: '#/components/responses/NotFound'}
    """
    app, who = carillon(), caller()
    level = pages.text_filter("level", MAX_FILTER)
    with app.sessions() as s:
        workflow = app.engine.find_workflow(s, who.org_id, workflow_ref)
        stmt = select(LogLine).where(LogLine.workflow_id == workflow.id)
        if level is not None:
            stmt = stmt.where(LogLine.level == level)
        return pages.page(s, stmt.order_by(LogLine.id), render.log_line)
