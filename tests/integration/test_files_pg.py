"""transferFile and decompress on real PostgreSQL: download, inbox pick, SSRF refusal."""

from __future__ import annotations

import gzip
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from tests.conftest import Harness
from tests.unit.test_files import CSV, decompress, download, flow, inbox, zipped
from tests.unit.test_transfer import FileServer, body
from worker.config import Settings
from worker.models import LogLine, Task, Workflow

pytestmark = pytest.mark.integration


@pytest.fixture
def make_harness(pg_database: str, tmp_path: Path) -> Iterator[Callable[..., Harness]]:
    """The stub-dispatcher harness on the module's PostgreSQL database."""
    built: list[Harness] = []

    def make(allow: tuple[str, ...] = ("127.0.0.1",)) -> Harness:
        settings = Settings(
            home=tmp_path,
            database_url=pg_database,
            broker_url="memory://",
            result_backend="cache+memory://",
            signal_min_interval=0,
            lease_seconds=5,
            republish_seconds=1,
            transfer_allow_hosts=allow,
        ).resolved()
        built.append(Harness(settings))
        built[-1].settings.inbox.mkdir(parents=True, exist_ok=True)
        return built[-1]

    yield make
    for harness in built:
        harness.db.dispose()


@pytest.fixture
def server() -> Iterator[FileServer]:
    built = FileServer()
    yield built
    built.close()


class Run:
    """One workflow of its own organization in the shared database, and what it did."""

    def __init__(self, harness: Harness, *steps: dict[str, Any]) -> None:
        self.harness = harness
        self.body = {**flow(*steps), "id": f"files_{uuid.uuid4().hex[:12]}"}
        harness.start(self.body, org=f"org_{uuid.uuid4().hex}")
        harness.stub.drain()
        ((self.workflow_id, self.state),) = harness.query(
            select(Workflow.id, Workflow.state).where(Workflow.name == self.body["id"])
        )

    def again(self) -> None:
        self.harness.engine.command(None, self.body["id"], "start")
        self.harness.stub.drain()

    def tasks(self) -> list[Any]:
        return self.harness.query(
            select(Task.activity, Task.state, Task.error, Task.inputs)
            .where(Task.workflow_id == self.workflow_id)
            .order_by(Task.created_at)
        )

    def states(self) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for task in self.tasks():
            found.setdefault(task.activity, []).append(task.state)
        return found

    def received(self, activity: str) -> dict[str, Any]:
        return [t.inputs for t in self.tasks() if t.activity == activity][-1]

    def logs(self, activity: str) -> list[tuple[str, str]]:
        rows = self.harness.query(
            select(LogLine.level, LogLine.message)
            .where(LogLine.workflow_id == self.workflow_id, LogLine.activity == activity)
            .order_by(LogLine.id)
        )
        return [(row.level, row.message) for row in rows]


def files_left(harness: Harness) -> list[Path]:
    folder = harness.settings.files
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def test_a_downloaded_gzip_is_decompressed_on_postgresql(
    make_harness: Callable[..., Harness], server: FileServer
) -> None:
    h = make_harness()
    server.routes["/orders.csv.gz"] = body(gzip.compress(CSV))

    run = Run(h, download(server.url("/orders.csv.gz")), decompress())

    assert run.states() == {n: ["done"] for n in ("start1", "transfer1", "decompress1", "end1")}
    out = run.received("end1")["decompress1"]
    assert (out["kind"], out["name"], out["size"]) == ("file", "orders.csv", len(CSV))
    assert Path(out["path"]).read_bytes() == CSV
    size = len(gzip.compress(CSV))
    assert run.logs("transfer1") == [("info", f"downloaded {size:,} bytes from 127.0.0.1")]
    assert run.logs("decompress1") == [
        ("info", f"decompressed orders.csv from orders.csv.gz: {len(CSV)} bytes (gzip)")
    ]
    assert len(files_left(h)) == 2
    assert run.state == "finished"


def test_an_inbox_zip_is_picked_once_then_no_file_on_postgresql(
    make_harness: Callable[..., Harness],
) -> None:
    h = make_harness()
    archive = zipped({"a.csv": b"a\n", "b.csv": CSV})
    (h.settings.inbox / "export.zip").write_bytes(archive)
    step = inbox("export.zip", transitions={"noFile": "end2"})

    # Given a first run that picks the file, when the workflow runs again
    run = Run(h, step, decompress(member="b.csv"))
    run.again()

    # Then the second run finds nothing: the file was moved, not copied
    assert run.states() == {
        "start1": ["done", "done"],
        "transfer1": ["done", "done"],
        "decompress1": ["done"],
        "end1": ["done"],
        "end2": ["done"],
    }
    out = run.received("end1")["decompress1"]
    assert Path(out["path"]).read_bytes() == CSV
    assert [message for _level, message in run.logs("transfer1")] == [
        f"picked inbox file export.zip ({len(archive):,} bytes)",
        "no file matching 'export.zip' in the inbox: noFile outlet",
    ]
    assert list(h.settings.inbox.iterdir()) == []


def test_a_loopback_download_is_refused_on_postgresql(
    make_harness: Callable[..., Harness], server: FileServer
) -> None:
    h = make_harness(allow=())
    server.routes["/x.csv"] = body(CSV)

    run = Run(h, download(server.url("/x.csv")), decompress())

    assert run.states() == {"start1": ["done"], "transfer1": ["failed"]}
    ((error,),) = [(t.error,) for t in run.tasks() if t.activity == "transfer1"]
    assert "refused: host '127.0.0.1' resolves to 127.0.0.1, a loopback address" in error
    assert ("error", error) in run.logs("transfer1")
    assert run.state == "error"
    assert server.requests == []
    assert files_left(h) == []
