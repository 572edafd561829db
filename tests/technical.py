"""Running a technical workflow in a test: fire it by hand, drain the stub, give its state."""

from __future__ import annotations

from sqlalchemy import select

from tests.conftest import Harness
from worker.db import utcnow
from worker.models import Workflow
from worker.technical import fire


def run_technical(harness: Harness, name: str) -> str:
    """Run `name` now to its end through the stub dispatcher; returns the workflow's state."""
    result = fire.fire(harness.engine, name, utcnow(), manual=True)
    assert result.status == "started", result
    harness.stub.drain()
    with harness.sessions() as s:
        return s.scalars(select(Workflow.state).where(Workflow.id == result.workflow_id)).one()
