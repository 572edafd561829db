"""What admins do to technical workflows: list, pause, resume, run now, reschedule, set properties.

The API and the CLI both call these; a change is a database write that beat reads at its next
refresh (CARILLON_TECHNICAL_REFRESH), so nothing needs restarting.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from worker import schedules
from worker.db import utcnow
from worker.engine import Engine
from worker.errors import DefinitionError, NotFound
from worker.models import Workflow
from worker.technical import fire, install, timing
from worker.technical.tables import technical_setting

#: Properties are small settings (retention days, recipients, URLs), not data.
MAX_PROPERTIES_BYTES = 8_192


def _check_name(name: str) -> str:
    if name not in timing.names():
        raise NotFound(f"technical workflow '{str(name)[:64]}' not found")
    return name


def describe(s: Session, name: str, now: dt.datetime | None = None) -> dict[str, Any]:
    """One technical workflow as admins see it: schedule, next fires, last slot and outcome."""
    org_id = install.ensure_installed(s)
    row = s.execute(
        select(technical_setting).where(technical_setting.c.name == _check_name(name))
    ).one()
    options = row.schedule if row.schedule is not None else timing.default_options(name)
    schedule = timing.parse(options)
    now = now or utcnow()
    workflow = install.workflow_of(s, org_id, name)
    return {
        "id": name,
        "enabled": bool(row.enabled),
        "schedule": dict(options),
        "defaultSchedule": row.schedule is None,
        "nextFires": (
            [fire.isoformat() for fire in schedules.preview(schedule, now, 3)]
            if schedule is not None and row.enabled
            else []
        ),
        "properties": dict(row.properties or {}),
        "lastSlot": row.lastSlot.isoformat() if row.lastSlot else None,
        "lastOutcome": row.lastOutcome,
        "installed": workflow is not None,
        "state": workflow.state if workflow is not None else None,
        "workflowPKey": workflow.pkey if workflow is not None else None,
    }


def list_all(s: Session, now: dt.datetime | None = None) -> list[dict[str, Any]]:
    install.ensure_installed(s)
    return [describe(s, name, now) for name in timing.names()]


def set_enabled(s: Session, name: str, enabled: bool) -> None:
    """Pause (False) or resume (True) beat's fires; a run in progress is not touched."""
    install.ensure_installed(s)
    s.execute(
        update(technical_setting)
        .where(technical_setting.c.name == _check_name(name))
        .values(enabled=bool(enabled), updated=utcnow())
    )


def set_schedule(s: Session, name: str, options: Mapping[str, Any] | None) -> None:
    """A new schedule in the scheduler activity's format; None restores the seed's default."""
    install.ensure_installed(s)
    _check_name(name)
    if options is not None:
        if not isinstance(options, Mapping):
            raise DefinitionError("the schedule must be an object such as {frequency, ...}")
        try:
            timing.parse(options)
        except schedules.ScheduleError as exc:
            raise DefinitionError(f"schedule: {exc.message}") from None
        options = dict(options)
    s.execute(
        update(technical_setting)
        .where(technical_setting.c.name == name)
        .values(schedule=options, updated=utcnow())
    )


def set_properties(s: Session, name: str, properties: Mapping[str, Any]) -> None:
    install.ensure_installed(s)
    _check_name(name)
    if not isinstance(properties, Mapping):
        raise DefinitionError("properties must be an object")
    if len(json.dumps(properties)) > MAX_PROPERTIES_BYTES:
        raise DefinitionError(f"properties exceed {MAX_PROPERTIES_BYTES} bytes")
    s.execute(
        update(technical_setting)
        .where(technical_setting.c.name == name)
        .values(properties=dict(properties), updated=utcnow())
    )


def run_now(engine: Engine, name: str) -> fire.FireResult:
    """Fire now, paused or not (an admin's explicit request); still never on top of a run."""
    _check_name(name)
    return fire.fire(engine, name, utcnow(), manual=True)


def workflow_id(s: Session, name: str) -> int | None:
    org_id = install.ensure_installed(s)
    found = s.scalars(
        select(Workflow.id).where(Workflow.org_id == org_id, Workflow.name == _check_name(name))
    ).first()
    return found
