"""Transactional message templates: validation (compiled at save), create, list, read, delete.

Each template owns one delivery row (delivery.templateId is unique): the delivery logs of the
events it sends hang from it, so the log's (delivery, event) key is what makes a send unique.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from sqlalchemy import RowMapping, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from worker.db import utcnow
from worker.errors import CarillonError, DefinitionError, NotFound
from worker.messaging import delivery, event, message_template

CHANNELS = ("email", "sms", "push")
#: Content keys per channel: (required, allowed). Email also needs html or text.
CONTENT_KEYS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "email": (frozenset({"subject"}), frozenset({"subject", "html", "text"})),
    "sms": (frozenset({"text"}), frozenset({"text"})),
    "push": (frozenset({"body"}), frozenset({"title", "body"})),
}
NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
#: The event type of the URL: letters, digits and underscores, at most 64.
EVENT_TYPE = re.compile(r"^[A-Za-z0-9_]{1,64}$")
#: The longest a template may keep events waiting: one year.
MAX_EXPIRY_HOURS = 24 * 366
FIELDS = frozenset({"name", "eventType", "channel", "content", "expiryHours", "published", "label"})


class TemplateInvalid(DefinitionError):
    """Raised when a message template is malformed; details name the field (and line)."""

    code = "invalidTemplate"


class TemplateExists(CarillonError):
    """Raised when the organization already has a message template of that name."""

    code = "templateExists"


def _invalid(field: str, message: str, **details: Any) -> TemplateInvalid:
    return TemplateInvalid(f"{field}: {message}", details={"field": field, **details})


def validate(body: Mapping[str, Any]) -> dict[str, Any]:
    """The template `body` describes, normalised, its content compiled; TemplateInvalid if not."""
    from worker.channels.templates import TemplateError, compile_content

    unknown = sorted(set(body) - FIELDS)
    if unknown:
        raise _invalid(unknown[0], f"unknown field; allowed: {', '.join(sorted(FIELDS))}")
    name = body.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        raise _invalid("name", "a letter then letters, digits, '_' or '-' (at most 64)")
    event_type = body.get("eventType")
    if not isinstance(event_type, str) or not EVENT_TYPE.match(event_type):
        raise _invalid("eventType", "letters, digits and '_' only (at most 64)")
    channel = body.get("channel", "email")
    if channel not in CHANNELS:
        raise _invalid("channel", f"one of {', '.join(CHANNELS)}")
    label = body.get("label", "")
    if not isinstance(label, str) or len(label) > 255:
        raise _invalid("label", "a string of at most 255 characters")
    expiry = body.get("expiryHours", 24)
    if type(expiry) is not int or not 1 <= expiry <= MAX_EXPIRY_HOURS:
        raise _invalid("expiryHours", f"an integer from 1 to {MAX_EXPIRY_HOURS}")
    published = body.get("published", True)
    if not isinstance(published, bool):
        raise _invalid("published", "true or false")
    content = body.get("content")
    if not isinstance(content, dict):
        raise _invalid("content", "an object of template strings")
    required, allowed = CONTENT_KEYS[channel]
    for key, value in content.items():
        if key not in allowed:
            raise _invalid(f"content.{key}", f"not a {channel} field; allowed: {sorted(allowed)}")
        if not isinstance(value, str):
            raise _invalid(f"content.{key}", "a template string")
    for key in sorted(required):
        if not content.get(key, "").strip():
            raise _invalid(f"content.{key}", f"required for {channel}")
    if channel == "email" and not (content.get("html", "").strip() or content.get("text", "")):
        raise _invalid("content.html", "an email needs html or text")
    try:
        compile_content(content)
    except TemplateError as exc:
        field = getattr(exc, "field", None)
        line = getattr(exc, "line", None)
        where = f"content.{field}" if field else "content"
        raise _invalid(where, str(exc), line=line) from None
    return {
        "name": name,
        "eventType": event_type,
        "channel": channel,
        "label": label,
        "content": dict(content),
        "expiryHours": expiry,
        "published": 1 if published else 0,
    }


def create(s: Session, org_id: int, body: Mapping[str, Any]) -> RowMapping:
    """Validate and insert a template and its delivery, in the caller's transaction."""
    values = validate(body)
    label = values.pop("label")
    if s.execute(
        select(message_template.c.id).where(
            message_template.c.org_id == org_id, message_template.c.name == values["name"]
        )
    ).first():
        raise TemplateExists(f"a message template named '{values['name']}' exists")
    try:
        with s.begin_nested():
            template_id = s.execute(
                insert(message_template)
                .values(org_id=org_id, **values)
                .returning(message_template.c.id)
            ).scalar_one()
    except IntegrityError:
        # Another request created the same name between our check and our insert.
        raise TemplateExists(f"a message template named '{values['name']}' exists") from None
    s.execute(
        insert(delivery).values(
            org_id=org_id,
            channel=values["channel"],
            name=values["name"],
            label=label or values["name"],
            templateId=template_id,
            state="sending",
            content=values["content"],
        )
    )
    found = get(s, org_id, values["name"])
    assert found is not None
    return found


def _columns() -> list[Any]:
    return [*message_template.c, delivery.c.id.label("deliveryId"), delivery.c.label]


def get(s: Session, org_id: int, ref: str) -> RowMapping | None:
    """One template of the organization by name (or `@name`), with its delivery id."""
    name = ref[1:] if ref.startswith("@") else ref
    return (
        s.execute(
            select(*_columns())
            .join(delivery, delivery.c.templateId == message_template.c.id, isouter=True)
            .where(message_template.c.org_id == org_id, message_template.c.name == name)
        )
        .mappings()
        .first()
    )


def listing(org_id: int) -> Any:
    """The statement listing an organization's templates, by name."""
    return (
        select(*_columns())
        .join(delivery, delivery.c.templateId == message_template.c.id, isouter=True)
        .where(message_template.c.org_id == org_id)
        .order_by(message_template.c.name)
    )


def count(s: Session, org_id: int) -> int:
    return int(
        s.execute(select(func.count()).where(message_template.c.org_id == org_id)).scalar_one()
    )


def remove(s: Session, org_id: int, ref: str) -> bool:
    """Delete a template; its delivery and delivery logs go with it, events keep their status."""
    found = get(s, org_id, ref)
    if found is None:
        return False
    s.execute(delete(delivery).where(delivery.c.templateId == found["id"]))
    s.execute(delete(message_template).where(message_template.c.id == found["id"]))
    return True


def set_paused(s: Session, org_id: int, ref: str, paused: bool) -> tuple[RowMapping, list[int]]:
    """Pause or resume a template; resuming puts its `paused` events back to `pending` and
    returns their ids (the caller publishes them once committed). NotFound when missing."""
    found = get(s, org_id, ref)
    if found is None:
        raise NotFound(f"message template '{ref[:80]}' not found")
    s.execute(
        update(message_template)
        .where(message_template.c.id == found["id"])
        .values(paused=1 if paused else 0)
    )
    released: list[int] = []
    if not paused:
        released = list(
            s.scalars(
                update(event)
                .where(event.c.templateId == found["id"], event.c.status == "paused")
                .values(status="pending", reason="", lastModified=utcnow())
                .returning(event.c.id)
            )
        )
    changed = get(s, org_id, ref)
    assert changed is not None
    return changed, sorted(released)


def route(s: Session, org_id: int, event_type: str, channel: str) -> RowMapping | None:
    """The published template an event of `event_type` on `channel` goes to (newest wins)."""
    return (
        s.execute(
            select(*_columns())
            .join(delivery, delivery.c.templateId == message_template.c.id)
            .where(
                message_template.c.org_id == org_id,
                message_template.c.eventType == event_type,
                message_template.c.channel == channel,
                message_template.c.published == 1,
            )
            .order_by(message_template.c.id.desc())
            .limit(1)
        )
        .mappings()
        .first()
    )
