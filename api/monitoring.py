"""The monitoring page's JSON API: /monitoring/api/*, read-only, authenticated like the rest.

An organization's credentials see that organization; the admin token (CARILLON_ADMIN_TOKEN)
any organization's URLs, the technical workflows and the workers. Actions go through the
existing endpoints. Queries live in worker/monitoring.py and worker/monitoring_workers.py.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlencode

from celery import Celery
from flask import Blueprint, request
from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from api import pages
from api.auth import is_admin
from api.context import caller, carillon, public_url
from api.errors import bad_request
from worker import monitoring, monitoring_workers
from worker.errors import NotFound
from worker.messaging import VALIDATION_STATES
from worker.models import Organization, Workflow
from worker.states import EXPLAINED_TASK_STATES
from worker.technical import install

bp = Blueprint("monitoring", __name__)

API = "/monitoring/api"
ORG = f"{API}/<org>"
WORKFLOW = f"{ORG}/workflows/<workflow_ref>"
#: Longest free-text filter (`q`); longer is refused rather than scanned for.
MAX_Q = 200
#: Lines counted past the requested window (see _page).
COUNT_AHEAD = 10_000
_LEVEL = re.compile(r"[A-Za-z]{1,8}")


# ------------------------------------------------------------------------------ query strings


def _text(name: str, maximum: int) -> str | None:
    """A text filter: absent, or at most `maximum` characters without control characters
    (PostgreSQL refuses NUL in strings: it must be a 400 here, not a 500 there)."""
    value = request.args.get(name)
    if value is None:
        return None
    if len(value) > maximum:
        raise bad_request(f"{name} is longer than {maximum} characters", name=name)
    if any(ord(char) < 32 for char in value):
        raise bad_request(f"{name} must not contain control characters", name=name)
    return value


def _choice(name: str, allowed: Sequence[str]) -> str | None:
    value = request.args.get(name)
    if value is not None and value not in allowed:
        raise bad_request(
            f"{name} must be one of {', '.join(allowed)}", name=name, allowed=list(allowed)
        )
    return value


def _integer(name: str, default: int, minimum: int, maximum: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    text = raw.strip()
    if not (text.isascii() and text.isdigit() and len(text) <= 6) or not (
        minimum <= int(text) <= maximum
    ):
        raise bad_request(f"{name} must be an integer between {minimum} and {maximum}", name=name)
    return int(text)


def _page(
    s: Session, stmt: Select[Any], render: Callable[[Session, Sequence[Any]], list[Any]]
) -> dict[str, Any]:
    """The contract's page: {content, count, next: {href} | null}, with api.pages' window."""
    slot = pages.window()
    # Counted up to COUNT_AHEAD lines past the window: a count of a huge list would cost
    # more than the page itself. Beyond it, `count` is a lower bound and countExact false.
    limit = slot.start + slot.count + COUNT_AHEAD
    bounded = stmt.order_by(None).limit(limit).subquery()
    total = s.execute(select(func.count()).select_from(bounded)).scalar_one()
    rows = s.execute(stmt.offset(slot.start).limit(slot.count)).all()
    found = [row[0] if len(row) == 1 else row for row in rows]
    following = None
    if slot.start + slot.count < total:
        args = [(k, v) for k, v in request.args.items(multi=True) if k != "_lineStart"]
        args.append(("_lineStart", str(slot.start + slot.count)))
        following = {"href": public_url(f"{request.path}?{urlencode(args)}")}
    return {
        "content": render(s, found),
        "count": total,
        "countExact": total < limit,
        "next": following,
    }


def _workflow(s: Session, ref: str) -> Workflow:
    if len(ref) > 100 or any(ord(char) < 32 for char in ref):
        raise NotFound("workflow not found")
    return carillon().engine.find_workflow(s, caller().org_id, ref)


# ------------------------------------------------------------------------------ who


@bp.get(f"{API}/whoami")
def whoami() -> dict[str, Any]:
    """Who the credentials are: an organization, or the admin.
    ---
    get:
      summary: The caller (organization or admin) and the organizations it may look at
      tags: [monitoring]
      responses:
        200:
          description: the caller
          content:
            application/json:
              schema: {$ref: '#/components/schemas/MonitoringWhoami'}
    """
    if is_admin():
        with carillon().sessions() as s:
            orgs = list(s.scalars(select(Organization.name).order_by(Organization.name)))
        return {"org": None, "admin": True, "orgs": orgs}
    who = caller()
    return {"org": who.org_name, "admin": False, "orgs": [who.org_name]}


# ------------------------------------------------------------------------------ organization


@bp.get(f"{ORG}/summary")
def summary(org: str) -> dict[str, Any]:
    """Workflows and tasks by state.
    ---
    get:
      summary: The organization's workflows and tasks by state, and its pending validations
      tags: [monitoring]
      responses:
        200:
          description: the summary
          content:
            application/json:
              schema: {$ref: '#/components/schemas/MonitoringSummary'}
    """
    with carillon().sessions() as s:
        return monitoring.summary(s, caller().org_id)


@bp.get(f"{ORG}/workflows")
def workflows(org: str) -> dict[str, Any]:
    """Workflows with their last and next run.
    ---
    get:
      summary: The organization's workflows by id, with last run, next run and task counts
      tags: [monitoring]
      parameters:
        - lineCount
        - lineStart
        - name: state
          in: query
          description: only workflows in this state
          schema: {type: string, enum: [edition, started, paused, finished, stopped, error]}
        - name: q
          in: query
          description: case-insensitive substring of the id or the label (at most 200 characters)
          schema: {type: string, maxLength: 200, pattern: '^[^\\x00-\\x1f]*$'}
      responses:
        200:
          description: a page of workflows
          content:
            application/json:
              schema: {$ref: '#/components/schemas/MonitoringWorkflowPage'}
        400: {$ref: '#/components/responses/BadRequest'}
    """
    state = _choice("state", monitoring.WORKFLOW_STATES)
    q = _text("q", MAX_Q)
    with carillon().sessions() as s:
        stmt = monitoring.workflows_stmt(caller().org_id, state, q)
        return _page(s, stmt, monitoring.workflow_items)


@bp.get(WORKFLOW)
def workflow(org: str, workflow_ref: str) -> dict[str, Any]:
    """A workflow's graph with each activity's state and counts.
    ---
    get:
      summary: A workflow, its activities (latest state, task counts) and transitions
      tags: [monitoring]
      responses:
        200:
          description: the workflow and its graph
          content:
            application/json:
              schema: {$ref: '#/components/schemas/MonitoringWorkflow'}
    """
    app = carillon()
    with app.sessions() as s:
        found = _workflow(s, workflow_ref)
        version = found.running_version or found.latest_version
        definition = app.engine.definition(found.id, version, s)
        return monitoring.workflow_detail(s, found, definition)


@bp.get(f"{WORKFLOW}/jobs")
def jobs(org: str, workflow_ref: str) -> dict[str, Any]:
    """A workflow's jobs, newest first.
    ---
    get:
      summary: Jobs of a workflow, newest first, with a state derived from their tasks
      tags: [monitoring]
      parameters:
        - lineCount
        - lineStart
        - name: state
          in: query
          description: only jobs in this state
          schema: {type: string, enum: [running, failed, aborted, done]}
      responses:
        200:
          description: a page of jobs
          content:
            application/json:
              schema: {$ref: '#/components/schemas/MonitoringJobPage'}
        400: {$ref: '#/components/responses/BadRequest'}
    """
    state = _choice("state", monitoring.JOB_STATES)
    with carillon().sessions() as s:
        found = _workflow(s, workflow_ref)
        return _page(s, monitoring.jobs_stmt(found.id, state), monitoring.job_items)


@bp.get(f"{WORKFLOW}/tasks")
def tasks(org: str, workflow_ref: str) -> dict[str, Any]:
    """A workflow's tasks, newest first, each pending, waiting or held one explained.
    ---
    get:
      summary: Tasks of a workflow, newest first, with why each pending, waiting or held one
        is there
      tags: [monitoring]
      parameters:
        - lineCount
        - lineStart
        - taskState
        - name: activity
          in: query
          description: this activity's only
          schema: {type: string, maxLength: 64, pattern: '^[^\\x00-\\x1f]*$'}
        - name: jobId
          in: query
          description: this job's only
          schema: {type: string, maxLength: 36, pattern: '^[^\\x00-\\x1f]*$'}
      responses:
        200:
          description: a page of tasks
          content:
            application/json:
              schema: {$ref: '#/components/schemas/MonitoringTaskPage'}
        400: {$ref: '#/components/responses/BadRequest'}
    """
    state = _choice("state", monitoring.TASK_STATES)
    activity, job_id = _text("activity", 64), _text("jobId", 36)
    app = carillon()
    with app.sessions() as s:
        found = _workflow(s, workflow_ref)
        stmt = monitoring.tasks_stmt(found.id, state, activity, job_id)
        listed = _page(s, stmt, lambda _s, rows: list(rows))
    # Outside the session: explain() opens its own (SQLite has one writer at a time).
    listed["content"] = [
        monitoring.task_item(
            row, app.engine.explain(row.id) if row.state in EXPLAINED_TASK_STATES else None
        )
        for row in listed["content"]
    ]
    return listed


@bp.get(f"{WORKFLOW}/logs")
def logs(org: str, workflow_ref: str) -> dict[str, Any]:
    """A workflow's log lines, newest first.
    ---
    get:
      summary: Log lines of a workflow, newest first
      tags: [monitoring]
      parameters:
        - lineCount
        - lineStart
        - {name: level, in: query, description: 'only this level (info, warning, error...)',
           schema: {type: string, pattern: '^[A-Za-z]{1,8}$'}}
        - name: taskId
          in: query
          description: this task's only
          schema: {type: string, maxLength: 36, pattern: '^[^\\x00-\\x1f]*$'}
        - name: q
          in: query
          description: case-insensitive substring of the message (at most 200 characters)
          schema: {type: string, maxLength: 200, pattern: '^[^\\x00-\\x1f]*$'}
      responses:
        200:
          description: a page of log lines
          content:
            application/json:
              schema: {$ref: '#/components/schemas/MonitoringLogPage'}
        400: {$ref: '#/components/responses/BadRequest'}
    """
    level = request.args.get("level")
    if level is not None and not _LEVEL.fullmatch(level):
        raise bad_request("level must be a log level such as info, warning or error", name="level")
    task_id, q = _text("taskId", 36), _text("q", MAX_Q)
    with carillon().sessions() as s:
        found = _workflow(s, workflow_ref)
        stmt = monitoring.logs_stmt(found.id, level, task_id, q)
        return _page(s, stmt, lambda _s, rows: [monitoring.log_item(row) for row in rows])


@bp.get(f"{ORG}/validations")
def validations(org: str) -> dict[str, Any]:
    """The organization's validations, oldest first.
    ---
    get:
      summary: Validations (human tasks) of the organization, oldest first
      tags: [monitoring]
      parameters:
        - lineCount
        - lineStart
        - name: state
          in: query
          description: only validations in this state
          schema: {type: string, enum: [pending, approved, rejected, timedOut, cancelled]}
      responses:
        200:
          description: a page of validations
          content:
            application/json:
              schema: {$ref: '#/components/schemas/MonitoringValidationPage'}
        400: {$ref: '#/components/responses/BadRequest'}
    """
    state = _choice("state", VALIDATION_STATES)
    with carillon().sessions() as s:
        stmt = monitoring.validations_stmt(caller().org_id, state)
        return _page(s, stmt, lambda _s, rows: [monitoring.validation_item(r) for r in rows])


@bp.get(f"{ORG}/throughput")
def throughput(org: str) -> dict[str, Any]:
    """Tasks done and failed, and triggers, over time.
    ---
    get:
      summary: Tasks done and failed and triggers accepted per time bucket (at most 120)
      tags: [monitoring]
      parameters:
        - name: minutes
          in: query
          description: the window, ending now (default 60)
          schema: {type: integer, minimum: 1, maximum: 1440}
      responses:
        200:
          description: the buckets, oldest first
          content:
            application/json:
              schema: {$ref: '#/components/schemas/MonitoringThroughput'}
        400: {$ref: '#/components/responses/BadRequest'}
    """
    minutes = _integer("minutes", 60, 1, monitoring.MAX_THROUGHPUT_MINUTES)
    with carillon().sessions() as s:
        return monitoring.throughput(s, caller().org_id, minutes)


# ------------------------------------------------------------------------------ system


@bp.get(f"{API}/technical")
def technical() -> dict[str, Any]:
    """The technical workflows (admin or system organization only).
    ---
    get:
      summary: Technical workflows with schedule, last tick and outcome (admin or system only)
      tags: [monitoring]
      responses:
        200:
          description: the technical workflows
          content:
            application/json:
              schema: {$ref: '#/components/schemas/MonitoringTechnical'}
    """
    if not is_admin() and caller().org_name != install.SYSTEM_ORG:
        raise NotFound("technical workflows belong to the system organization")
    with carillon().sessions() as s, s.begin():
        return {"content": monitoring.technical(s)}


@bp.get(f"{API}/workers")
def workers() -> dict[str, Any]:
    """Celery workers and queue depths.
    ---
    get:
      summary: Celery workers (online, active, processed, queues, load) and queue depths
      description: Workers answer a broadcast within about a second; with the broker down,
        workers is empty and every depth null.
      tags: [monitoring]
      responses:
        200:
          description: workers and queues
          content:
            application/json:
              schema: {$ref: '#/components/schemas/MonitoringWorkers'}
    """
    return monitoring_workers.snapshot(carillon().settings, _celery)


def _celery() -> Celery:
    """The Celery app to broadcast on: the dispatcher's, else one built once for the app."""
    from flask import current_app

    app = carillon()
    found = getattr(app.dispatcher, "app", None)
    if isinstance(found, Celery):
        return found
    built: Celery | None = current_app.extensions.get("carillon_monitoring_celery")
    if built is None:
        from worker.celery_app import create_celery

        built = current_app.extensions["carillon_monitoring_celery"] = create_celery(app.settings)
    return built
