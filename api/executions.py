"""Workflow executions: state and activities, execution commands, external-signal triggers."""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint
from sqlalchemy import and_, func, select

from api import render
from api.bodies import json_object
from api.context import caller, carillon, execution_path, public_url
from api.errors import bad_request
from api.idempotency import idempotent
from worker.engine import METHODS
from worker.errors import NotFound
from worker.models import Task, Workflow

log = logging.getLogger(__name__)

bp = Blueprint("executions", __name__)

EXECUTION = "/<org>/campaign/workflow/execution/<workflow_ref>"
TRIGGER = f"{EXECUTION}/activities/activity/<activity_ref>/trigger"


@bp.get(EXECUTION)
def execution(org: str, workflow_ref: str) -> dict[str, Any]:
    """A workflow's execution: state and every activity of the version it runs.
    ---
    get:
      summary: Execution state of a workflow, with the trigger URL of each external signal
      tags: [executions]
      responses:
        200:
          description: the workflow and its activities
          content:
            application/json:
              schema: {$ref: '#/components/schemas/Execution'}
        404: {$ref: '#/components/responses/NotFound'}
    """
    app, who = carillon(), caller()
    with app.sessions() as s:
        workflow = app.engine.find_workflow(s, who.org_id, workflow_ref)
        version = workflow.running_version or workflow.latest_version
        definition = app.engine.definition(workflow.id, version, s)
        counts: dict[str, dict[str, int]] = {}
        for name, state, number in s.execute(
            select(Task.activity, Task.state, func.count())
            .where(Task.workflow_id == workflow.id, Task.version == version)
            .group_by(Task.activity, Task.state)
        ):
            counts.setdefault(name, {})[state] = number
        newest = (
            select(Task.activity, func.max(Task.created_at).label("at"))
            .where(Task.workflow_id == workflow.id, Task.version == version)
            .group_by(Task.activity)
            .subquery()
        )
        latest = {
            row.activity: row
            for row in s.scalars(
                select(Task)
                .join(
                    newest, and_(Task.activity == newest.c.activity, Task.created_at == newest.c.at)
                )
                .where(Task.workflow_id == workflow.id, Task.version == version)
            )
        }
    # Outside the session: the cached definition and rows are all that is needed now.
    activities: dict[str, Any] = {}
    for name, activity in definition.activities.items():
        last = latest.get(name)
        entry: dict[str, Any] = {
            "PKey": f"@{name}",
            "type": activity.type,
            "state": last.state if last is not None else "idle",
            "tasks": counts.get(name, {}),
            "lastRun": render.iso(last.started_at or last.created_at) if last else None,
            "vars": (last.vars or {}) if last is not None else {},
        }
        if activity.type == "externalSignal":
            entry["trigger"] = {"href": app.engine.trigger_href(workflow, name)}
        activities[name] = entry
    return {
        **render.workflow_summary(who.org_name, workflow),
        "version": version,
        "activities": {"activity": activities},
    }


@bp.post(f"{EXECUTION}/commands")
@idempotent
def command(org: str, workflow_ref: str) -> tuple[dict[str, Any], int, dict[str, str]]:
    """Record an execution command; a worker applies it asynchronously, in order.
    ---
    post:
      summary: Start, pause, resume or stop a workflow
      tags: [executions]
      parameters: [idempotencyKey]
      requestBody:
        required: true
        content:
          application/json:
            schema: {$ref: '#/components/schemas/CommandRequest'}
            example: {method: start}
      responses:
        202:
          description: recorded; applied asynchronously
          content:
            application/json:
              schema: {$ref: '#/components/schemas/Command'}
        400: {$ref: '#/components/responses/BadRequest'}
        404: {$ref: '#/components/responses/NotFound'}
        409: {$ref: '#/components/responses/Conflict'}
        422: {$ref: '#/components/responses/IdempotencyKeyReused'}
    """
    body = json_object(allowed={"method"})
    method = body.get("method")
    if not isinstance(method, str) or method not in METHODS:
        raise bad_request(f"'method' must be one of {', '.join(METHODS)}", allowed=list(METHODS))
    app, who = carillon(), caller()
    with app.sessions() as s:
        workflow = app.engine.find_workflow(s, who.org_id, workflow_ref)
        workflow_id, pkey = workflow.id, workflow.pkey
    command_id = app.engine.submit_command(who.org_id, f"@{pkey}", method)
    try:
        app.dispatcher.apply_commands(workflow_id)
    except Exception:  # the command is recorded: the tick sweeps pending commands
        log.warning("could not publish apply_commands for workflow %s", workflow_id, exc_info=True)
    href = public_url(execution_path(who.org_name, pkey))
    return (
        {"id": command_id, "method": method, "state": "pending", "workflow": {"href": href}},
        202,
        {"Location": href},
    )


@bp.post(TRIGGER)
@bp.post(f"{TRIGGER}/")
@idempotent
def trigger(
    org: str, workflow_ref: str, activity_ref: str
) -> tuple[dict[str, Any], int, dict[str, str]]:
    """Trigger an external signal: start a job whose vars are the typed parameters.
    ---
    post:
      summary: Trigger an external-signal activity (at most once per signal per interval)
      tags: [executions]
      parameters: [idempotencyKey]
      requestBody:
        required: true
        content:
          application/json:
            schema: {$ref: '#/components/schemas/TriggerRequest'}
            example:
              source: API
              parameters: {audience: audience, test: 'true', attribute: '2019-04-03 08:17:19.100Z'}
      responses:
        202:
          description: accepted (a job started) or queued (the workflow is paused)
          content:
            application/json:
              schema: {$ref: '#/components/schemas/TriggerAccepted'}
        400: {$ref: '#/components/responses/BadRequest'}
        404: {$ref: '#/components/responses/NotFound'}
        409: {$ref: '#/components/responses/Conflict'}
        422: {$ref: '#/components/responses/IdempotencyKeyReused'}
        429: {$ref: '#/components/responses/TooManyRequests'}
    """
    body = json_object(allowed={"source", "parameters"})
    app, who = carillon(), caller()
    found = app.engine.trigger(
        who.org_id, workflow_ref, activity_ref, body.get("source"), body.get("parameters")
    )
    with app.sessions() as s:
        pkey = s.execute(select(Workflow.pkey).where(Workflow.id == found.workflow_id)).scalar_one()
    job = None
    if found.job_id is not None:
        job = {"id": found.job_id, "href": render.job_href(who.org_name, pkey, found.job_id)}
    workflow_href = public_url(execution_path(who.org_name, pkey))
    headers = {"Location": job["href"]} if job else {}
    return (
        {
            "id": found.id,
            "state": found.state,
            "activity": found.activity,
            "job": job,
            "workflow": {"href": workflow_href},
        },
        202,
        headers,
    )


@bp.post(f"{EXECUTION}/tasks/<task_id>/requeue")
def requeue(org: str, workflow_ref: str, task_id: str) -> tuple[dict[str, Any], int]:
    """Run a dead task again, its attempts reset; the workflow leaves `error`.
    ---
    post:
      summary: Requeue a dead task (one whose worker was lost CARILLON_MAX_ATTEMPTS times)
      description: Fix what killed the worker first (the activity, its input, memory). The
        task goes back to pending with its attempt count reset, and its workflow from
        error to started. Only a dead task can be requeued (409 otherwise); retry a failed
        one with `carillon workflow retry`, or resume the workflow.
      tags: [executions]
      responses:
        202:
          description: the task is pending again; a worker runs it
          content:
            application/json:
              schema: {$ref: '#/components/schemas/Requeued'}
        404: {$ref: '#/components/responses/NotFound'}
        409: {$ref: '#/components/responses/Conflict'}
    """
    app, who = carillon(), caller()
    with app.sessions() as s:
        workflow = app.engine.find_workflow(s, who.org_id, workflow_ref)
        pkey = workflow.pkey
        owner = s.execute(select(Task.workflow_id).where(Task.id == task_id)).scalar()
    if owner != workflow.id:  # another workflow's task, or none: nothing to see here
        raise NotFound(f"task '{task_id}' not found in this workflow")
    state = app.engine.requeue(task_id)
    return (
        {
            "id": task_id,
            "state": state,
            "workflow": {"href": public_url(execution_path(who.org_name, pkey))},
        },
        202,
    )
