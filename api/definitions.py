"""Workflow definitions: list, create, read, save a new version, delete."""

from __future__ import annotations

from typing import Any

from flask import Blueprint
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api import pages, render
from api.bodies import json_object
from api.context import Caller, caller, carillon, public_url
from api.errors import ApiError, bad_request
from worker import catalog
from worker.errors import NotFound
from worker.models import (
    Command,
    Organization,
    Workflow,
    WorkflowVersion,
)
from worker.states import WorkflowState

bp = Blueprint("definitions", __name__)

DEFINITIONS = "/<org>/campaign/workflow/definitions"
ONE = f"{DEFINITIONS}/<definition_id>"
#: A workflow in these states runs tasks: deleting it would pull rows from under a worker.
RUNNING_STATES = frozenset({WorkflowState.STARTED, WorkflowState.PAUSED})


def _href(org: str, name: str) -> str:
    return public_url(f"/{org}/campaign/workflow/definitions/{name}")


def _detail(s: Session, org: str, workflow: Workflow) -> dict[str, Any]:
    body = s.execute(
        select(WorkflowVersion.body).where(
            WorkflowVersion.workflow_id == workflow.id,
            WorkflowVersion.version == workflow.latest_version,
        )
    ).scalar_one()
    return {**render.workflow_summary(org, workflow), "definition": body}


def _organization(s: Session, who: Caller) -> Organization:
    org = s.get(Organization, who.org_id)
    if org is None:  # deleted between authentication and now
        raise NotFound("no such resource")
    return org


@bp.get(DEFINITIONS)
def list_definitions(org: str) -> dict[str, Any]:
    """The organization's workflows, by internal name.
    ---
    get:
      summary: Workflows of the organization, sorted by internal name
      tags: [definitions]
      parameters:
        - lineCount
        - lineStart
      responses:
        200:
          description: a page of workflows
          content:
            application/json:
              schema: {$ref: '#/components/schemas/WorkflowPage'}
        400: {$ref: '#/components/responses/BadRequest'}
    """
    app, who = carillon(), caller()
    with app.sessions() as s:
        stmt = select(Workflow).where(Workflow.org_id == who.org_id).order_by(Workflow.name)
        return pages.page(s, stmt, lambda row: render.workflow_summary(who.org_name, row))


@bp.post(DEFINITIONS)
def create_definition(org: str) -> tuple[dict[str, Any], int, dict[str, str]]:
    """Validate and save a new workflow (version 1).
    ---
    post:
      summary: Create a workflow from a definition (validated when saved)
      tags: [definitions]
      requestBody:
        required: true
        content:
          application/json:
            schema: {$ref: '#/components/schemas/Definition'}
      responses:
        201:
          description: saved
          headers:
            Location: {description: the definition's URL, schema: {type: string}}
          content:
            application/json:
              schema: {$ref: '#/components/schemas/WorkflowDefinition'}
        400: {$ref: '#/components/responses/BadRequest'}
        409: {$ref: '#/components/responses/Conflict'}
        422: {$ref: '#/components/responses/InvalidDefinition'}
    """
    body = json_object()
    app, who = carillon(), caller()
    name = body.get("id")
    try:
        with app.sessions() as s, s.begin():
            org_row = _organization(s, who)
            if isinstance(name, str):
                exists = s.execute(
                    select(Workflow.id).where(Workflow.org_id == who.org_id, Workflow.name == name)
                ).first()
                if exists is not None:
                    raise _exists(who.org_name, name)
            workflow = catalog.save_definition(s, org_row, body)
            detail = _detail(s, who.org_name, workflow)
    except IntegrityError:  # a concurrent POST of the same id won the race
        raise _exists(who.org_name, str(name)) from None
    href = _href(who.org_name, workflow.name)
    return detail, 201, {"Location": href}


def _exists(org: str, name: str) -> ApiError:
    return ApiError(
        409,
        f"workflow '{name}' already exists; PUT it to save a new version",
        code="alreadyExists",
        details={"href": _href(org, name)},
    )


@bp.get(ONE)
def get_definition(org: str, definition_id: str) -> dict[str, Any]:
    """A workflow and the definition of its latest version.
    ---
    get:
      summary: A workflow with its latest definition
      tags: [definitions]
      responses:
        200:
          description: the workflow
          content:
            application/json:
              schema: {$ref: '#/components/schemas/WorkflowDefinition'}
        404: {$ref: '#/components/responses/NotFound'}
    """
    app, who = carillon(), caller()
    with app.sessions() as s:
        workflow = app.engine.find_workflow(s, who.org_id, definition_id)
        return _detail(s, who.org_name, workflow)


@bp.put(ONE)
def put_definition(org: str, definition_id: str) -> dict[str, Any]:
    """Save a new version; a started workflow runs its current version until restarted.
    ---
    put:
      summary: Save a new version of a workflow's definition
      description: >
        The body's `id` must be the workflow's or absent (400 otherwise). A started workflow
        keeps running the version it was started with until it is started again.
      tags: [definitions]
      requestBody:
        required: true
        content:
          application/json:
            schema: {$ref: '#/components/schemas/DefinitionUpdate'}
      responses:
        200:
          description: saved as the newest version
          content:
            application/json:
              schema: {$ref: '#/components/schemas/WorkflowDefinition'}
        400: {$ref: '#/components/responses/BadRequest'}
        404: {$ref: '#/components/responses/NotFound'}
        422: {$ref: '#/components/responses/InvalidDefinition'}
    """
    body = json_object()
    app, who = carillon(), caller()
    with app.sessions() as s, s.begin():
        workflow = app.engine.find_workflow(s, who.org_id, definition_id)
        given = body.setdefault("id", workflow.name)
        if given != workflow.name:
            raise bad_request(
                f"the body's id {given!r} is not the workflow's ('{workflow.name}')",
                expected=workflow.name,
            )
        saved = catalog.save_definition(s, _organization(s, who), body)
        return _detail(s, who.org_name, saved)


@bp.delete(ONE)
def delete_definition(org: str, definition_id: str) -> tuple[str, int]:
    """Delete a workflow with its versions, jobs, tasks, triggers, commands and logs.
    ---
    delete:
      summary: Delete a workflow that is not started or paused
      tags: [definitions]
      responses:
        204: {description: deleted}
        404: {$ref: '#/components/responses/NotFound'}
        409: {$ref: '#/components/responses/Conflict'}
    """
    app, who = carillon(), caller()
    with app.sessions() as s, s.begin():
        found = app.engine.find_workflow(s, who.org_id, definition_id)
        workflow = s.scalars(
            select(Workflow)
            .where(Workflow.id == found.id)
            .with_for_update()
            .execution_options(populate_existing=True)
        ).one()
        if workflow.state in RUNNING_STATES:
            raise ApiError(
                409,
                f"the workflow is {workflow.state}; stop it before deleting it",
                code="commandRefused",
                details={"state": workflow.state},
            )
        pending = s.execute(
            select(Command.id).where(Command.workflow_id == workflow.id, Command.state == "pending")
        ).first()
        if pending is not None:
            raise ApiError(
                409, "a command is waiting to be applied; retry in a moment", code="commandRefused"
            )
        catalog.delete_workflow(s, workflow.id)
    app.engine.forget(workflow.id)
    return "", 204
