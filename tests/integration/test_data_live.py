"""The demo's data workflow end to end on a real worker: download, decompress, load, upsert,
query, segment, extract — on PostgreSQL + Redis and on the embedded default."""

from __future__ import annotations

import csv
from importlib import resources
from pathlib import Path

from sqlalchemy import func, select

from tests.integration.conftest import Stack
from worker import catalog, definitions, demo_data
from worker.marketing import profile
from worker.models import LogLine, Task, Workflow

ROWS = 2_000


def _extracted(stack: Stack, activity: str) -> list[dict[str, str]]:
    with stack.sessions() as s:
        inputs = s.execute(
            select(Task.inputs)
            .join(Workflow, Workflow.id == Task.workflow_id)
            .where(Workflow.name == "profileImport", Task.activity == "end1")
        ).scalar_one()
    path = Path(inputs[activity]["path"])
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def test_the_demo_data_workflow_imports_targets_segments_and_extracts(
    stack: Stack, tmp_path: Path
) -> None:
    extract = demo_data.write_profiles(tmp_path / "profiles.csv.gz", ROWS)
    server, base_url = demo_data.serve(tmp_path)
    try:
        text = resources.files("worker.samples").joinpath("profileImport.yaml").read_text()
        with stack.sessions() as s, s.begin():
            org = catalog.ensure_org(s, "acme")
            catalog.save_definition(s, org, definitions.load_text(text))
            org_id = org.id
        stack.engine.command(None, "profileImport", "start")
        stack.engine.trigger(
            None, "profileImport", "signal1", "it", {"url": f"{base_url}/{extract.name}"}
        )
        stack.wait_state("profileImport", "finished", timeout=180)
    finally:
        server.shutdown()
        server.server_close()

    with stack.sessions() as s:
        loaded = s.execute(
            select(func.count()).select_from(profile).where(profile.c.org_id == org_id)
        ).scalar_one()
        targeted = s.execute(
            select(func.count())
            .select_from(profile)
            .where(
                profile.c.org_id == org_id,
                profile.c.country == "FR",
                profile.c.email.is_not(None),
                profile.c.email != "",
            )
        ).scalar_one()
        messages = s.scalars(
            select(LogLine.message)
            .join(Workflow, Workflow.id == LogLine.workflow_id)
            .where(Workflow.name == "profileImport")
        ).all()
    # Every good line became a profile; the two malformed ones were rejected, not loaded.
    assert loaded == ROWS
    assert any("rejected" in message for message in messages), messages
    test_group = _extracted(stack, "extractFile1")
    main_group = _extracted(stack, "extractFile2")
    assert len(test_group) == targeted * 10 // 100
    assert len(main_group) == targeted * 90 // 100
    emails = [row["email"] for row in test_group + main_group]
    assert len(set(emails)) == len(emails)  # the segments are disjoint
    assert all(email.endswith("@example.com") for email in emails)
