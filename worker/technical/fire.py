"""Fire a technical workflow for a slot, once: the (name, slot) row decides who starts it."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import exists, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from worker.db import utcnow
from worker.engine import Engine
from worker.models import Command, Workflow
from worker.states import WorkflowState as W
from worker.technical import install, timing
from worker.technical.tables import technical_fire, technical_setting


@dataclass(frozen=True)
class FireResult:
    name: str
    slot: dt.datetime
    #: started, duplicate, skipped
    status: str
    detail: str = ""
    workflow_id: int | None = None


def fire(engine: Engine, name: str, slot: dt.datetime, *, manual: bool = False) -> FireResult:
    """Start `name` for `slot` unless that slot already fired, it is paused, or still running.

    The fire row and the start command are written in one transaction, so a crash leaves
    either both (the tick applies the command) or neither (the next beat send retries).
    """
    if name not in timing.names():
        raise ValueError(f"unknown technical workflow '{name}'")
    if slot.tzinfo is None:
        raise ValueError("the slot must be an aware datetime")
    if slot > utcnow() + dt.timedelta(minutes=5):
        # A slot in the future would block that future fire: refuse it.
        raise ValueError(f"slot {slot.isoformat()} is in the future")
    slot = slot.astimezone(dt.UTC).replace(tzinfo=None)
    if not manual:
        # Beat's slots are whole seconds; a manual run keeps its instant (two clicks, two rows).
        slot = slot.replace(microsecond=0)
    with engine.session() as s, s.begin():
        org_id = install.ensure_installed(s)
        try:
            with s.begin_nested():
                s.execute(technical_fire.insert().values(name=name, slot=slot))
        except IntegrityError:
            s.execute(
                update(technical_fire)
                .where(technical_fire.c.name == name, technical_fire.c.slot == slot)
                .values(sends=technical_fire.c.sends + 1)
            )
            return FireResult(name, slot, "duplicate", "this slot already fired")
        status, detail, workflow_id = _decide(s, org_id, name, manual=manual)
        outcome = status if not detail else f"{status}: {detail}"
        s.execute(
            update(technical_fire)
            .where(technical_fire.c.name == name, technical_fire.c.slot == slot)
            .values(outcome=outcome[:255])
        )
        s.execute(
            update(technical_setting)
            .where(technical_setting.c.name == name)
            .values(lastSlot=slot.replace(tzinfo=dt.UTC), lastOutcome=outcome[:255])
        )
    if workflow_id is not None:
        engine.apply_commands(workflow_id)
    return FireResult(name, slot, status, detail, workflow_id)


def _decide(s: Session, org_id: int, name: str, *, manual: bool) -> tuple[str, str, int | None]:
    enabled = s.execute(
        select(technical_setting.c.enabled).where(technical_setting.c.name == name)
    ).scalar_one()
    if not enabled and not manual:
        return "skipped", "paused by an admin", None
    # ensure_installed ran in this transaction: every technical workflow exists.
    workflow = install.workflow_of(s, org_id, name)
    assert workflow is not None
    # Lock the workflow row: a concurrent command cannot slip between the check and the start.
    workflow = s.execute(
        select(Workflow).where(Workflow.id == workflow.id).with_for_update()
    ).scalar_one()
    if workflow.state == W.ERROR:
        return "skipped", "the last run failed; an admin must restart or resume it", None
    if workflow.state in (W.STARTED, W.PAUSED):
        return "skipped", "the previous run is still going", None
    pending = s.execute(
        select(exists().where(Command.workflow_id == workflow.id, Command.state == "pending"))
    ).scalar_one()
    if pending:
        return "skipped", "a command is already pending", None
    s.add(Command(workflow_id=workflow.id, method="start", state="pending", created_at=utcnow()))
    return "started", "", workflow.id
