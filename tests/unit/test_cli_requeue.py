"""`carillon workflow requeue TASK`: a dead task runs again; anything else is refused."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from sqlalchemy import select, update

from tests.unit.test_cli import carillon
from worker.db import make_engine, make_session_factory
from worker.models import Task, Workflow

DEFINITION = """
id: cliDead
activities:
  - {name: start1, type: start, transitions: {done: wait1}}
  - {name: wait1, type: wait, duration: 1h, transitions: {done: end1}}
  - {name: end1, type: end}
"""


def test_a_dead_task_is_requeued_from_the_command_line(tmp_path: Path) -> None:
    definition = tmp_path / "dead.yaml"
    definition.write_text(DEFINITION)
    assert (
        carillon(tmp_path, "workflow", "import", str(definition), "--org", "acme").returncode == 0
    )
    assert carillon(tmp_path, "workflow", "start", "cliDead").returncode == 0
    db = make_engine(f"sqlite:///{tmp_path / 'carillon.sqlite'}")
    sessions = make_session_factory(db)
    # Given the start task died with its workers five times: dead, the workflow in error
    with sessions() as s, s.begin():
        task_id = s.execute(select(Task.id)).scalar_one()
        s.execute(
            update(Task)
            .where(Task.id == task_id)
            .values(state="dead", attempt=5, finished_at=dt.datetime.now(dt.UTC), error="poison")
        )
        s.execute(update(Workflow).values(state="error"))

    done = carillon(tmp_path, "workflow", "requeue", task_id)

    assert done.returncode == 0, done.stderr
    assert f"task {task_id} requeued (attempts reset)" in done.stdout
    with sessions() as s:
        row = s.execute(select(Task.state, Task.attempt_base).where(Task.id == task_id)).one()
        assert tuple(row) == ("pending", 5)
        assert s.execute(select(Workflow.state)).scalar_one() == "started"
    again = carillon(tmp_path, "workflow", "requeue", task_id)
    assert again.returncode == 2
    assert "only a dead task can be requeued; it is pending" in again.stderr
    missing = carillon(tmp_path, "workflow", "requeue", "no-such-task")
    assert missing.returncode != 0 and "not found" in missing.stderr
    db.dispose()
