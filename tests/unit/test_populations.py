"""Working tables: created in the caller's transaction, registered, dropped with their workflow."""

from __future__ import annotations

import pytest
from sqlalchemy import insert, inspect, literal, select

from tests.conftest import Harness
from worker import catalog, populations
from worker.errors import ActivityError
from worker.marketing import profile, working_table
from worker.models import Workflow


def _seed(harness: Harness) -> tuple[int, int]:
    wf = harness.save(
        """
        id: pop
        activities:
          - {name: start1, type: start, transitions: {done: end1}}
          - {name: end1, type: end}
        """
    )
    with harness.sessions() as s, s.begin():
        org = catalog.ensure_org(s, "acme")
        s.execute(
            insert(profile),
            [{"org_id": org.id, "email": f"p{i}@example.com", "country": "FR"} for i in range(5)],
        )
        workflow_id = s.execute(select(Workflow.id).where(Workflow.name == wf)).scalar_one()
        return org.id, workflow_id


def _create(harness: Harness, org_id: int, workflow_id: int, task_id: str) -> dict[str, object]:
    with harness.sessions() as s, s.begin():
        return populations.create(
            populations.Owner(s, org_id, workflow_id, "job-1", task_id, 1),
            "profile",
            select(profile.c.id, profile.c.email.label("mail")).where(
                profile.c.org_id == org_id, profile.c.email != literal("p0@example.com")
            ),
        )


def test_a_population_is_a_registered_table_of_ids_and_columns(harness: Harness) -> None:
    org_id, workflow_id = _seed(harness)

    found = _create(harness, org_id, workflow_id, "0b7e1f9a-1111-2222-3333-444455556666")

    assert found == {
        "kind": "population",
        "table": "wk_0b7e1f9a111122223333444455556666_1_0",
        "resource": "profile",
        "count": 4,
        "columns": ["mail"],
    }
    rows = harness.query(select(populations.as_table(found)))
    assert sorted(row.mail for row in rows) == [f"p{i}@example.com" for i in range(1, 5)]
    registered = harness.query(select(working_table.c.count, working_table.c.job_id))
    assert [tuple(r) for r in registered] == [(4, "job-1")]


def test_a_rolled_back_transaction_leaves_no_table_and_no_registration(harness: Harness) -> None:
    org_id, workflow_id = _seed(harness)
    with pytest.raises(RuntimeError), harness.sessions() as s, s.begin():
        populations.create(
            populations.Owner(s, org_id, workflow_id, "job-1", "t-rollback", 1),
            "profile",
            select(profile.c.id),
        )
        raise RuntimeError("crash mid-task")

    assert not [n for n in inspect(harness.db).get_table_names() if n.startswith("wk_")]
    assert harness.query(select(working_table.c.name)) == []


def test_deleting_a_workflow_drops_its_working_tables(harness: Harness) -> None:
    org_id, workflow_id = _seed(harness)
    found = _create(harness, org_id, workflow_id, "t-drop")

    with harness.sessions() as s, s.begin():
        catalog.delete_workflow(s, workflow_id)

    assert found["table"] not in inspect(harness.db).get_table_names()
    assert harness.query(select(working_table.c.name)) == []


def test_drop_for_jobs_only_drops_those_jobs_tables(harness: Harness) -> None:
    org_id, workflow_id = _seed(harness)
    kept = _create(harness, org_id, workflow_id, "t-kept")
    with harness.sessions() as s, s.begin():
        s.execute(working_table.update().values(job_id="job-2"))
    dropped = _create(harness, org_id, workflow_id, "t-dropped")

    with harness.sessions() as s, s.begin():
        assert populations.drop_for_jobs(s, ["job-1"]) == 1

    tables = inspect(harness.db).get_table_names()
    assert kept["table"] in tables and dropped["table"] not in tables


def test_a_file_descriptor_is_not_a_population() -> None:
    with pytest.raises(ActivityError, match="no population"):
        populations.as_table({"kind": "file", "path": "/tmp/x"})
