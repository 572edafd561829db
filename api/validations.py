"""Validations (human tasks): list them, read one, approve or reject it."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, request

from api import pages
from api.bodies import json_object
from api.context import caller, carillon, execution_path, public_url
from api.errors import bad_request
from worker import validations
from worker.messaging import VALIDATION_STATES

bp = Blueprint("validations", __name__)

VALIDATIONS = "/<org>/campaign/workflow/validation"
ONE = f"{VALIDATIONS}/<validation_ref>"
DECISION_KEYS = frozenset({"decision", "comment", "user"})


def _rendered(org: str, found: dict[str, Any]) -> dict[str, Any]:
    href = public_url(f"/{org}/campaign/workflow/validation/{found['PKey']}")
    workflow = None
    if found["workflowPKey"] is not None:
        workflow = {
            "id": found["workflow"],
            "PKey": f"@{found['workflowPKey']}",
            "href": public_url(execution_path(org, found["workflowPKey"])),
        }
    hidden = {"org", "workflow", "workflowPKey"}
    return {
        **{key: value for key, value in found.items() if key not in hidden},
        "href": href,
        "workflow": workflow,
        "decision": {"href": f"{href}/decision"},
    }


def _name_filter(name: str) -> str | None:
    return pages.text_filter(name, validations.MAX_NAME)


@bp.get(VALIDATIONS)
def validation_list(org: str) -> dict[str, Any]:
    """The organization's validations, oldest first.
    ---
    get:
      summary: Validations (human tasks) of the organization, oldest first
      tags: [validations]
      parameters:
        - lineCount
        - lineStart
        - name: state
          in: query
          description: only validations in this state
          schema: {type: string, enum: [pending, approved, rejected, timedOut, cancelled]}
        - name: assignee
          in: query
          description: only those of this user
          schema: {type: string, maxLength: 128, pattern: '^[^\\x00-\\x1f]*$'}
        - name: group
          in: query
          description: only those of this group
          schema: {type: string, maxLength: 128, pattern: '^[^\\x00-\\x1f]*$'}
      responses:
        200:
          description: a page of validations
          content:
            application/json:
              schema: {$ref: '#/components/schemas/ValidationPage'}
        400: {$ref: '#/components/responses/BadRequest'}
    """
    state = request.args.get("state")
    if state is not None and state not in VALIDATION_STATES:
        raise bad_request(f"state must be one of {', '.join(VALIDATION_STATES)}", name="state")
    assignee, group = _name_filter("assignee"), _name_filter("group")
    app, who = carillon(), caller()
    with app.sessions() as s:
        stmt = validations.list_ids(who.org_id, state=state, assignee=assignee, group=group)
        listed = pages.page(s, stmt, lambda row_id: row_id)
        found = validations.describe(app.engine, s, listed["content"])
    listed["content"] = [_rendered(who.org_name, item) for item in found]
    return listed


@bp.get(ONE)
def validation(org: str, validation_ref: str) -> dict[str, Any]:
    """One validation.
    ---
    get:
      summary: One validation (human task)
      tags: [validations]
      responses:
        200:
          description: the validation
          content:
            application/json:
              schema: {$ref: '#/components/schemas/Validation'}
    """
    app, who = carillon(), caller()
    with app.sessions() as s:
        row = validations.find(s, who.org_id, validation_ref)
        found = validations.describe(app.engine, s, [row["id"]])[0]
    return _rendered(who.org_name, found)


@bp.post(f"{ONE}/decision")
def decision(org: str, validation_ref: str) -> dict[str, Any]:
    """Approve or reject a pending validation; its workflow continues on that outlet.
    ---
    post:
      summary: Approve or reject a pending validation (a rejection needs a comment)
      tags: [validations]
      requestBody:
        required: true
        content:
          application/json:
            schema: {$ref: '#/components/schemas/DecisionRequest'}
            example: {decision: reject, comment: the offer ends on Friday, user: alice}
      responses:
        200:
          description: decided; the validation as it is now
          content:
            application/json:
              schema: {$ref: '#/components/schemas/Validation'}
        409: {$ref: '#/components/responses/Conflict'}
    """
    body = json_object(allowed=DECISION_KEYS)
    problem = validations.check_decision(
        body.get("decision"), body.get("comment"), body.get("user")
    )
    if problem:
        raise bad_request(problem)
    app, who = carillon(), caller()
    found = validations.decide(
        app.engine,
        who.org_id,
        validation_ref,
        body["decision"],
        body.get("comment"),
        body["user"],
    )
    return _rendered(who.org_name, found)
