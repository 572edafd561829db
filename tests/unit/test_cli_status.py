"""`carillon status` as a user runs it: a real process showing the database's figures."""

from __future__ import annotations

import re
from pathlib import Path

from sqlalchemy import func, select

from tests.unit.test_cli import SIGNAL_WORKFLOW, carillon
from worker.db import make_engine
from worker.models import Task

IDLE = """
id: idle1
activities:
  - {name: start1, type: start, transitions: {done: end1}}
  - {name: end1, type: end}
"""


def row(output: str, first: str) -> list[str]:
    """The cells of the table row starting with `first` (rich draws cells between │)."""
    for line in output.splitlines():
        cells = [cell.strip() for cell in re.split(r"[│┃]", line)]
        cells = [cell for cell in cells if cell != ""]
        if cells and cells[0] == first:
            return cells
    raise AssertionError(f"no row {first!r} in:\n{output}")


def test_status_shows_workflows_per_org_tasks_technical_and_queues(tmp_path: Path) -> None:
    for org, text in (("acme", SIGNAL_WORKFLOW), ("globex", IDLE)):
        definition = tmp_path / f"{org}.yaml"
        definition.write_text(text)
        assert (
            carillon(tmp_path, "workflow", "import", str(definition), "--org", org).returncode == 0
        )
    assert carillon(tmp_path, "workflow", "start", "cli1").returncode == 0

    result = carillon(tmp_path, "status")

    assert result.returncode == 0, result.stderr
    out = result.stdout
    header = row(out, "organization")
    acme, globex = row(out, "acme"), row(out, "globex")
    assert acme[header.index("started")] == "1" and acme[-1] == "1"
    assert globex[header.index("edition")] == "1"
    engine = make_engine(f"sqlite:///{tmp_path / 'carillon.sqlite'}")
    with engine.connect() as conn:
        counts = dict(conn.execute(select(Task.state, func.count()).group_by(Task.state)).all())
    engine.dispose()
    assert counts  # the start ran: start1 done, wait1 and scheduler1 waiting
    for state, number in counts.items():
        assert row(out, state)[1] == str(number)
    assert row(out, "total")[1] == str(sum(counts.values()))
    assert row(out, "cleanup")[1] == "yes"  # the technical workflows
    assert row(out, "carillon.flow")[1].isdigit()  # the embedded broker's depth is known


def test_status_for_one_org_and_without_workers(tmp_path: Path) -> None:
    definition = tmp_path / "idle.yaml"
    definition.write_text(IDLE)
    assert (
        carillon(tmp_path, "workflow", "import", str(definition), "--org", "globex").returncode == 0
    )

    result = carillon(tmp_path, "status", "--org", "globex", "--no-workers")

    assert result.returncode == 0, result.stderr
    assert row(result.stdout, "globex")[-1] == "1"
    assert "Celery workers" not in result.stdout and "Technical workflows" not in result.stdout
    unknown = carillon(tmp_path, "status", "--org", "nosuch")
    assert unknown.returncode == 2 and "no organization named 'nosuch'" in unknown.stderr
