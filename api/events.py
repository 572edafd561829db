"""Transactional events: post one (stored `pending`, then published), read its status; bounces."""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint

from api.bodies import json_body, json_object
from api.context import caller, carillon, public_url
from api.errors import ApiError, bad_request
from api.render import iso
from worker import events, feedback

log = logging.getLogger(__name__)

bp = Blueprint("events", __name__)

EVENT = "/<org>/campaign/event/<event_type>"


def event_path(org: str, event_type: str, pkey: str) -> str:
    return f"/{org}/campaign/event/{event_type}/@{pkey}"


def _render(org: str, row: Any) -> dict[str, Any]:
    return {
        "PKey": f"@{row['pkey']}",
        "eventType": row["eventType"],
        "status": row["status"],
        "reason": row["reason"] or None,
        "email": row["email"],
        "mobilePhone": row["mobilePhone"],
        "pushToken": row["pushToken"],
        "ctx": row["ctx"] or {},
        "created": iso(row["created"]),
        "lastModified": iso(row["lastModified"]),
        "href": public_url(event_path(org, row["eventType"], row["pkey"])),
    }


@bp.post(EVENT)
def post_event(org: str, event_type: str) -> tuple[dict[str, Any], int]:
    """Post a transactional event: stored `pending`, then delivered by a worker.
    ---
    post:
      summary: Post a transactional event (message center)
      tags: [events]
      requestBody:
        required: true
        content:
          application/json:
            schema: {$ref: '#/components/schemas/EventRequest'}
            example: {email: ada@example.com, ctx: {firstName: Ada, orderId: "A-1"}}
      responses:
        201:
          description: stored `pending`; a worker routes and delivers it
          content:
            application/json:
              schema: {$ref: '#/components/schemas/Event'}
    """
    body = json_object(allowed={"email", "mobilePhone", "pushToken", "ctx"})
    try:
        values = events.validate(event_type, body)
    except events.EventInvalid as exc:
        raise bad_request(exc.message, **exc.details) from None
    app, who = carillon(), caller()
    with app.sessions() as s, s.begin():
        row = events.store(s, who.org_id, values)
    # Committed: a worker can find it. A lost publish is repaired by the beat sweep.
    if isinstance(app.dispatcher, events.EventPublisher):
        try:
            app.dispatcher.process_events([int(row["id"])])
        except Exception:
            log.warning("could not publish event %s; the sweep will", row["id"], exc_info=True)
    return _render(who.org_name, row), 201


@bp.get(f"{EVENT}/<event_ref>")
def get_event(org: str, event_type: str, event_ref: str) -> dict[str, Any]:
    """An event's status and reason.
    ---
    get:
      summary: A transactional event's status
      tags: [events]
      responses:
        200:
          description: the event; `status` is one of pending, processing, processed, ignored,
            deliveryFailed, routingFailed, tooOld, paused
          content:
            application/json:
              schema: {$ref: '#/components/schemas/Event'}
    """
    app, who = carillon(), caller()
    with app.sessions() as s:
        row = events.find(s, who.org_id, event_type, event_ref)
    if row is None:
        raise ApiError(404, "no such event", code="notFound")
    return _render(who.org_name, row)


@bp.post("/<org>/campaign/bounce")
def bounce(org: str) -> dict[str, Any]:
    """Report bounces of sent messages by their messageId (one object, or a list of them).
    ---
    post:
      summary: Record bounces (hard, soft, complaint) of sent messages
      tags: [tracking]
      requestBody:
        required: true
        content:
          application/json:
            schema:
              oneOf:
                - {$ref: '#/components/schemas/Bounce'}
                - type: array
                  minItems: 1
                  maxItems: 1000
                  items: {$ref: '#/components/schemas/Bounce'}
      responses:
        200:
          description: what was applied; message ids not found in this organization are listed
            in `unknown` and change nothing
          content:
            application/json:
              schema: {$ref: '#/components/schemas/BounceReport'}
    """
    body = json_body()
    try:
        bounces = feedback.parse_bounces(body)
    except feedback.BounceInvalid as exc:
        raise bad_request(exc.message, **exc.details) from None
    app, who = carillon(), caller()
    with app.sessions() as s, s.begin():
        report = feedback.record_bounces(s, who.org_id, bounces)
    return {
        "received": len(bounces),
        "recorded": report.recorded,
        "bounced": report.bounced,
        "quarantined": report.quarantined,
        "eventsFailed": report.events_failed,
        "unknown": report.unknown[:100],
        "unknownCount": len(report.unknown),
    }
