"""Technical workflows for admins: list, pause/resume, reschedule, set properties, run now.

Only the `system` organization's credentials reach these routes (another organization gets
404, as for anything it does not own). Restarting or stopping a run in progress is the usual
execution command on /system/campaign/workflow/execution/<id>/commands.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from api.bodies import json_object
from api.context import caller, carillon
from api.errors import bad_request
from worker.errors import NotFound
from worker.technical import admin, install

bp = Blueprint("technical", __name__)

TECHNICAL = "/<org>/campaign/workflow/technical"


def _admin_only() -> None:
    if caller().org_name != install.SYSTEM_ORG:
        raise NotFound("technical workflows belong to the system organization")


@bp.get(TECHNICAL)
def technical_list(org: str) -> dict[str, Any]:
    """Every technical workflow with its schedule, next fires and last outcome.
    ---
    get:
      summary: List the technical workflows (system organization only)
      tags: [technical]
      responses:
        200:
          description: the fifteen technical workflows
          content:
            application/json:
              schema: {$ref: '#/components/schemas/TechnicalList'}
        404: {$ref: '#/components/responses/NotFound'}
    """
    _admin_only()
    with carillon().sessions() as s, s.begin():
        items = admin.list_all(s)
    return {"content": items, "count": {"value": len(items)}}


@bp.get(f"{TECHNICAL}/<name>")
def technical_one(org: str, name: str) -> dict[str, Any]:
    """One technical workflow.
    ---
    get:
      summary: A technical workflow (system organization only)
      tags: [technical]
      responses:
        200:
          description: the technical workflow
          content:
            application/json:
              schema: {$ref: '#/components/schemas/Technical'}
        404: {$ref: '#/components/responses/NotFound'}
    """
    _admin_only()
    with carillon().sessions() as s, s.begin():
        return admin.describe(s, name)


@bp.patch(f"{TECHNICAL}/<name>")
def technical_change(org: str, name: str) -> dict[str, Any]:
    """Pause or resume beat's fires, change the schedule or the properties; seen by beat at
    its next refresh, without a restart.
    ---
    patch:
      summary: Change a technical workflow's settings (system organization only)
      tags: [technical]
      requestBody:
        required: true
        content:
          application/json:
            schema: {$ref: '#/components/schemas/TechnicalChange'}
            example: {enabled: true, schedule: {frequency: daily, times: ['05:30']}}
      responses:
        200:
          description: the technical workflow after the change
          content:
            application/json:
              schema: {$ref: '#/components/schemas/Technical'}
        400: {$ref: '#/components/responses/BadRequest'}
        404: {$ref: '#/components/responses/NotFound'}
        422: {$ref: '#/components/responses/InvalidSetting'}
    """
    _admin_only()
    body = json_object(allowed={"enabled", "schedule", "properties"})
    if not body:
        raise bad_request("give at least one of enabled, schedule, properties")
    if "enabled" in body and not isinstance(body["enabled"], bool):
        raise bad_request("'enabled' must be true or false")
    # One transaction: a refused schedule leaves 'enabled' unchanged too.
    with carillon().sessions() as s, s.begin():
        if "enabled" in body:
            admin.set_enabled(s, name, body["enabled"])
        if "schedule" in body:
            admin.set_schedule(s, name, body["schedule"])
        if "properties" in body:
            admin.set_properties(s, name, body["properties"])
    with carillon().sessions() as s, s.begin():
        return admin.describe(s, name)


@bp.post(f"{TECHNICAL}/<name>/run")
def technical_run(org: str, name: str) -> tuple[dict[str, Any], int]:
    """Run a technical workflow now, even paused; never on top of a run in progress.
    ---
    post:
      summary: Run a technical workflow now (system organization only)
      tags: [technical]
      responses:
        202:
          description: started, or skipped with the reason
          content:
            application/json:
              schema: {$ref: '#/components/schemas/TechnicalRun'}
        404: {$ref: '#/components/responses/NotFound'}
    """
    _admin_only()
    result = admin.run_now(carillon().engine, name)
    return {
        "id": name,
        "status": result.status,
        "detail": result.detail,
        "slot": result.slot.isoformat(),
    }, 202
