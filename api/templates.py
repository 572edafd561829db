"""Transactional message templates: create (compiled at save), list, read, pause, delete."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, request

from api.bodies import json_object
from api.context import caller, carillon, public_url
from api.errors import ApiError
from api.pages import window
from api.render import iso
from worker import events, templates_store

bp = Blueprint("templates", __name__)
log = logging.getLogger(__name__)

TEMPLATES = "/<org>/campaign/messageTemplate"


def _render(org: str, row: Any) -> dict[str, Any]:
    return {
        "PKey": f"@{row['name']}",
        "name": row["name"],
        "label": row["label"] or row["name"],
        "eventType": row["eventType"],
        "channel": row["channel"],
        "content": row["content"],
        "published": bool(row["published"]),
        "paused": bool(row["paused"]),
        "expiryHours": row["expiryHours"],
        "created": iso(row["created"]),
        "href": public_url(f"/{org}/campaign/messageTemplate/{row['name']}"),
    }


@bp.post(TEMPLATES)
def create(org: str) -> tuple[dict[str, Any], int]:
    """Create a message template; its content is compiled now.
    ---
    post:
      summary: Create a transactional message template
      tags: [templates]
      requestBody:
        required: true
        content:
          application/json:
            schema: {$ref: '#/components/schemas/MessageTemplateRequest'}
            example:
              name: orderConfirmation
              eventType: orderPlaced
              channel: email
              content: {subject: "Order {{ ctx.orderId }}", html: "<p>Hi {{ ctx.firstName }}</p>"}
              expiryHours: 24
      responses:
        201:
          description: created
          content:
            application/json:
              schema: {$ref: '#/components/schemas/MessageTemplate'}
        409: {$ref: '#/components/responses/Conflict'}
        422: {$ref: '#/components/responses/InvalidTemplate'}
    """
    body = json_object(allowed=templates_store.FIELDS)
    app, who = carillon(), caller()
    try:
        with app.sessions() as s, s.begin():
            row = templates_store.create(s, who.org_id, body)
    except templates_store.TemplateExists as exc:
        raise ApiError(409, exc.message, code="templateExists") from None
    return _render(who.org_name, row), 201


@bp.get(TEMPLATES)
def listing(org: str) -> dict[str, Any]:
    """The organization's message templates, by name.
    ---
    get:
      summary: List message templates
      tags: [templates]
      parameters:
        - lineCount
        - lineStart
      responses:
        200:
          description: a page of templates
          content:
            application/json:
              schema: {$ref: '#/components/schemas/MessageTemplatePage'}
    """
    app, who = carillon(), caller()
    slot = window()
    with app.sessions() as s:
        total = templates_store.count(s, who.org_id)
        rows = s.execute(
            templates_store.listing(who.org_id).offset(slot.start).limit(slot.count)
        ).mappings()
        body: dict[str, Any] = {
            "content": [_render(who.org_name, row) for row in rows],
            "count": {"value": total},
        }
    if slot.start + slot.count < total:
        args = [(k, v) for k, v in request.args.items(multi=True) if k != "_lineStart"]
        args.append(("_lineStart", str(slot.start + slot.count)))
        body["next"] = {"href": public_url(f"{request.path}?{urlencode(args)}")}
    return body


def _found(ref: str) -> Any:
    app, who = carillon(), caller()
    with app.sessions() as s:
        row = templates_store.get(s, who.org_id, ref)
    if row is None:
        raise ApiError(404, "no such message template", code="notFound")
    return row


@bp.get(f"{TEMPLATES}/<template_ref>")
def read(org: str, template_ref: str) -> dict[str, Any]:
    """One message template.
    ---
    get:
      summary: Read a message template
      tags: [templates]
      responses:
        200:
          description: the template
          content:
            application/json:
              schema: {$ref: '#/components/schemas/MessageTemplate'}
    """
    return _render(caller().org_name, _found(template_ref))


@bp.delete(f"{TEMPLATES}/<template_ref>")
def remove(org: str, template_ref: str) -> tuple[str, int]:
    """Delete a message template with its delivery and delivery logs (events keep their status).
    ---
    delete:
      summary: Delete a message template
      tags: [templates]
      responses:
        204: {description: deleted}
    """
    app, who = carillon(), caller()
    with app.sessions() as s, s.begin():
        if not templates_store.remove(s, who.org_id, template_ref):
            raise ApiError(404, "no such message template", code="notFound")
    return "", 204


def _pause_or_resume(template_ref: str, paused: bool) -> dict[str, Any]:
    app, who = carillon(), caller()
    with app.sessions() as s, s.begin():
        row, released = templates_store.set_paused(s, who.org_id, template_ref, paused)
    # Committed: the released events are `pending` again; a lost publish is left to the sweep.
    if released and isinstance(app.dispatcher, events.EventPublisher):
        try:
            app.dispatcher.process_events(released)
        except Exception:
            log.warning("could not publish %d resumed event(s); the sweep will", len(released))
    return {**_render(who.org_name, row), "released": len(released)}


@bp.post(f"{TEMPLATES}/<template_ref>/pause")
def pause(org: str, template_ref: str) -> dict[str, Any]:
    """Pause a message template: its new events wait with status `paused`.
    ---
    post:
      summary: Pause a message template (its events wait `paused`)
      tags: [templates]
      responses:
        200:
          description: the template, paused
          content:
            application/json:
              schema: {$ref: '#/components/schemas/MessageTemplate'}
    """
    return _pause_or_resume(template_ref, True)


@bp.post(f"{TEMPLATES}/<template_ref>/resume")
def resume(org: str, template_ref: str) -> dict[str, Any]:
    """Resume a message template: its `paused` events go back to `pending` and are delivered
    (those past the template's expiry then end `tooOld`).
    ---
    post:
      summary: Resume a paused message template
      tags: [templates]
      responses:
        200:
          description: the template, with `released`, the number of events sent on their way
          content:
            application/json:
              schema: {$ref: '#/components/schemas/MessageTemplate'}
    """
    return _pause_or_resume(template_ref, False)
