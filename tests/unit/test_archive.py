"""mcSynch_local: final events move to the history once settled, each exactly once."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from tests.conftest import Harness
from worker import catalog
from worker.db import utcnow
from worker.messaging import event
from worker.models import Workflow
from worker.technical import archive, fire
from worker.technical.tables import event_history

OLD = utcnow() - dt.timedelta(hours=3)


class Crash(Exception):
    pass


def _events(harness: Harness) -> None:
    with harness.sessions() as s, s.begin():
        org_id = catalog.ensure_org(s, "acme").id
        for index, (status, modified) in enumerate(
            [
                ("processed", OLD),
                ("deliveryFailed", OLD),
                ("pending", OLD),
                ("processing", OLD),
                ("processed", utcnow()),
                ("routingFailed", OLD),
            ]
        ):
            s.execute(
                event.insert().values(
                    org_id=org_id,
                    pkey=f"@e{index}",
                    eventType="order",
                    ctx={"n": index},
                    status=status,
                    created=OLD,
                    lastModified=modified,
                )
            )


def _pkeys(harness: Harness, table: object) -> list[str]:
    with harness.sessions() as s:
        return sorted(s.scalars(select(table.c.pkey)))  # type: ignore[attr-defined]


def test_final_settled_events_are_archived_and_the_rest_stay(harness: Harness) -> None:
    _events(harness)
    result = fire.fire(harness.engine, "mcSynch_local", utcnow(), manual=True)
    harness.stub.drain()
    with harness.sessions() as s:
        state = s.scalars(select(Workflow.state).where(Workflow.id == result.workflow_id)).one()
    assert state == "finished"
    assert _pkeys(harness, event_history) == ["@e0", "@e1", "@e5"]
    assert _pkeys(harness, event) == ["@e2", "@e3", "@e4"]
    archived = harness.query(
        select(event_history.c.ctx, event_history.c.status).where(event_history.c.pkey == "@e1")
    )
    assert archived == [({"n": 1}, "deliveryFailed")]


def test_a_crash_mid_archive_leaves_each_event_in_one_table(harness: Harness) -> None:
    _events(harness)
    with pytest.raises(Crash), harness.sessions() as s, s.begin():
        assert archive.archive(s, utcnow(), dt.timedelta(hours=1)) == 3
        raise Crash
    assert _pkeys(harness, event_history) == []
    assert len(_pkeys(harness, event)) == 6
    with harness.sessions() as s, s.begin():
        assert archive.archive(s, utcnow(), dt.timedelta(hours=1), batch=2) == 2
    with harness.sessions() as s, s.begin():
        assert archive.archive(s, utcnow(), dt.timedelta(hours=1), batch=2) == 1
    assert _pkeys(harness, event_history) == ["@e0", "@e1", "@e5"]
