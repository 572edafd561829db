"""transferFile and decompress in workflows on the SQLite harness, with a real HTTP server."""

from __future__ import annotations

import datetime as dt
import errno
import gzip
import io
import itertools
import os
import struct
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from tests.conftest import Harness
from tests.unit.test_transfer import FileServer, body, failing
from worker import definitions
from worker.activities import files as files_module
from worker.config import Settings
from worker.engine import Engine
from worker.errors import DefinitionError
from worker.models import LogLine, Task, Workflow

LOOPBACK = ("127.0.0.1",)
CSV = b"id,email\n1,ann@example.com\n2,bob@example.com\n"


# ----------------------------------------------------------------- fixtures and helpers


@pytest.fixture
def make_harness(tmp_path: Path) -> Iterator[Callable[..., Harness]]:
    built: list[Harness] = []

    def make(allow: tuple[str, ...] = LOOPBACK) -> Harness:
        settings = Settings(
            home=tmp_path,
            database_url=f"sqlite:///{tmp_path / 'test.sqlite'}",
            broker_url="memory://",
            result_backend="cache+memory://",
            signal_min_interval=0,
            lease_seconds=2,
            republish_seconds=1,
            transfer_allow_hosts=allow,
        ).resolved()
        built.append(Harness(settings))
        return built[-1]

    yield make
    for harness in built:
        harness.db.dispose()


@pytest.fixture
def h(make_harness: Callable[..., Harness]) -> Harness:
    harness = make_harness()
    harness.settings.inbox.mkdir(parents=True)
    return harness


@pytest.fixture
def server() -> Iterator[FileServer]:
    built = FileServer()
    yield built
    built.close()


def flow(*steps: dict[str, Any], entry: dict[str, Any] | None = None) -> dict[str, Any]:
    """start1 (or `entry`) -> steps, in order through `done` -> end1; plus end2 for detours."""
    chain = [entry or {"name": "start1", "type": "start"}, *steps, {"name": "end1", "type": "end"}]
    activities = []
    for current, following in itertools.pairwise(chain):
        transitions = {"done": following["name"], **current.get("transitions", {})}
        activities.append({**current, "transitions": transitions})
    activities += [{"name": "end1", "type": "end"}, {"name": "end2", "type": "end"}]
    if not any("end2" in str(a.get("transitions")) for a in activities):
        activities.pop()
    return {"id": "files", "activities": activities}


def download(url: str, **options: Any) -> dict[str, Any]:
    return {"name": "transfer1", "type": "transferFile", "url": url, **options}


def inbox(name: str, **options: Any) -> dict[str, Any]:
    return {"name": "transfer1", "type": "transferFile", "inboxFile": name, **options}


def decompress(**options: Any) -> dict[str, Any]:
    return {"name": "decompress1", "type": "decompress", **options}


SIGNAL = {"name": "signal1", "type": "externalSignal", "parameters": {"value": "string"}}


def run(harness: Harness, body: dict[str, Any]) -> None:
    harness.start(body)
    harness.stub.drain()


def trigger(harness: Harness, value: str) -> None:
    harness.engine.trigger(None, "files", "signal1", "test", {"value": value})
    harness.stub.drain()


def states(harness: Harness) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for activity, state in harness.query(
        select(Task.activity, Task.state).order_by(Task.created_at)
    ):
        found.setdefault(activity, []).append(state)
    return found


def received(harness: Harness, activity: str) -> dict[str, Any]:
    """What the inbound transitions brought to the (last) task of `activity`."""
    rows = harness.query(select(Task.inputs).where(Task.activity == activity))
    return dict(rows[-1].inputs or {})


def logs(harness: Harness, activity: str) -> list[tuple[str, str]]:
    rows = harness.query(select(LogLine.level, LogLine.message).where(LogLine.activity == activity))
    return [(row.level, row.message) for row in rows]


def files_left(harness: Harness) -> list[Path]:
    folder = harness.settings.files
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def assert_failed(harness: Harness, activity: str, message: str) -> None:
    """The task failed with `message`, which is also in the workflow's error log."""
    ((state, error),) = harness.query(
        select(Task.state, Task.error).where(Task.activity == activity)
    )
    assert state == "failed", error
    assert message in error
    assert any(level == "error" and message in text for level, text in logs(harness, activity))
    assert harness.query(select(Workflow.state))[0][0] == "error"


def put(harness: Harness, name: str, data: bytes, age_seconds: int = 0) -> Path:
    path = harness.settings.inbox / name
    path.write_bytes(data)
    stamp = dt.datetime.now().timestamp() - age_seconds
    os.utime(path, (stamp, stamp))
    return path


def zipped(members: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as archive:
        for name, data in members.items():
            archive.writestr(zipfile.ZipInfo(name), data, compress_type=method)
    return buffer.getvalue()


def zeros_zip(megabytes: int) -> bytes:
    buffer = io.BytesIO()
    with (
        zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive,
        archive.open("zeros.bin", "w") as member,
    ):
        for _ in range(megabytes):
            member.write(bytes(1 << 20))
    return buffer.getvalue()


# ----------------------------------------------------------------- downloads


def test_a_gzip_download_is_decompressed_for_the_next_activity(
    h: Harness, server: FileServer
) -> None:
    server.routes["/exports/orders.csv.gz"] = body(gzip.compress(CSV))

    run(h, flow(download(server.url("/exports/orders.csv.gz")), decompress()))

    assert states(h) == {n: ["done"] for n in ("start1", "transfer1", "decompress1", "end1")}
    downloaded = received(h, "decompress1")["transfer1"]
    assert downloaded["name"] == "orders.csv.gz"
    assert downloaded["size"] == len(gzip.compress(CSV))
    out = received(h, "end1")["decompress1"]
    assert out == {"kind": "file", "path": out["path"], "size": len(CSV), "name": "orders.csv"}
    assert Path(out["path"]).read_bytes() == CSV
    ((task_id,),) = h.query(select(Task.id).where(Task.activity == "decompress1"))
    assert Path(out["path"]).parent == h.settings.files / "1" / f"{task_id}.1"
    assert files_left(h) == sorted([Path(downloaded["path"]), Path(out["path"])])
    assert logs(h, "transfer1") == [
        ("info", f"downloaded {downloaded['size']:,} bytes from 127.0.0.1")
    ]
    assert logs(h, "decompress1") == [
        ("info", f"decompressed orders.csv from orders.csv.gz: {len(CSV)} bytes (gzip)")
    ]


def test_a_zip_member_is_chosen_by_name(h: Harness, server: FileServer) -> None:
    server.routes["/x.zip"] = body(zipped({"data/a.csv": b"a\n", "data/b.csv": CSV}))

    run(h, flow(download(server.url("/x.zip")), decompress(member="data/b.csv")))

    out = received(h, "end1")["decompress1"]
    assert (out["name"], Path(out["path"]).name, out["size"]) == ("b.csv", "b.csv", len(CSV))
    assert Path(out["path"]).read_bytes() == CSV


def test_a_missing_file_fires_no_file_when_it_has_a_transition(
    h: Harness, server: FileServer
) -> None:
    step = download(server.url("/missing.csv"), transitions={"noFile": "end2"})

    run(h, flow(step, decompress()))

    assert states(h) == {"start1": ["done"], "transfer1": ["done"], "end2": ["done"]}
    assert logs(h, "transfer1") == [
        ("warning", "no file at 127.0.0.1/missing.csv (HTTP 404): noFile outlet")
    ]
    assert files_left(h) == []


def test_a_missing_file_without_a_no_file_transition_fails(h: Harness, server: FileServer) -> None:
    run(h, flow(download(server.url("/gone.csv"))))

    assert_failed(h, "transfer1", "no file at 127.0.0.1/gone.csv (HTTP 404)")
    assert files_left(h) == []


def test_a_failing_server_is_retried_with_backoff_until_it_answers(
    h: Harness, server: FileServer
) -> None:
    server.routes["/flaky.csv"] = failing(2, 503, then=body(CSV))

    run(h, flow(download(server.url("/flaky.csv"), retries=2, backoffSeconds=0.01)))

    assert states(h)["transfer1"] == ["done"]
    assert len(server.requests) == 3
    warnings = [text for level, text in logs(h, "transfer1") if level == "warning"]
    assert len(warnings) == 2
    assert warnings[0].startswith(
        "download attempt 1 failed: HTTP 503 Service Unavailable from 127.0.0.1/flaky.csv; "
        "trying again in 0.0"
    )
    assert Path(received(h, "end1")["transfer1"]["path"]).read_bytes() == CSV


def test_retries_give_up_and_leave_nothing(h: Harness, server: FileServer) -> None:
    server.routes["/down.csv"] = body(b"down", 500)

    run(h, flow(download(server.url("/down.csv"), retries=1, backoffSeconds=0)))

    assert_failed(h, "transfer1", "HTTP 500 Internal Server Error from 127.0.0.1/down.csv")
    assert len(server.requests) == 2
    assert files_left(h) == []


def test_a_refused_download_is_not_retried(h: Harness, server: FileServer) -> None:
    server.routes["/private.csv"] = body(b"no", 403)

    run(h, flow(download(server.url("/private.csv"), retries=5, backoffSeconds=0)))

    assert_failed(h, "transfer1", "HTTP 403 Forbidden")
    assert len(server.requests) == 1


def test_a_download_over_max_bytes_is_refused(h: Harness, server: FileServer) -> None:
    server.routes["/big.csv"] = body(b"x" * 5000)

    run(h, flow(download(server.url("/big.csv"), maxBytes=1000)))

    assert_failed(h, "transfer1", "the file is 5,000 bytes, over the 1,000-byte limit")
    assert files_left(h) == []


def test_a_loopback_url_is_refused_without_the_allow_list(
    make_harness: Callable[..., Harness], server: FileServer
) -> None:
    harness = make_harness(allow=())
    server.routes["/x.csv"] = body(CSV)

    run(harness, flow(download(server.url("/x.csv"))))

    assert_failed(
        harness, "transfer1", "refused: host '127.0.0.1' resolves to 127.0.0.1, a loopback address"
    )
    assert server.requests == []
    assert files_left(harness) == []


def test_a_url_from_vars_is_checked_when_it_runs(h: Harness, server: FileServer) -> None:
    server.routes["/feed.csv"] = body(CSV)
    h.start(flow(download("$(vars/value)"), entry=SIGNAL))

    trigger(h, server.url("/feed.csv"))
    trigger(h, "http://169.254.169.254/latest/meta-data/")

    assert states(h)["transfer1"] == ["done", "failed"]
    assert len(server.requests) == 1
    assert any(
        "refused: host '169.254.169.254' resolves to 169.254.169.254, a link-local" in text
        for _level, text in logs(h, "transfer1")
    )
    assert len(files_left(h)) == 1  # the first job's file only


@pytest.mark.parametrize(
    ("activity", "message"),
    [
        (download("file:///etc/passwd"), "scheme 'file:' is not allowed"),
        (download("http://u:p@example.com/x"), "credentials in the URL"),
        ({"name": "transfer1", "type": "transferFile"}, "exactly one of 'url' or 'inboxFile'"),
        (inbox("x.csv", url="http://example.com/x"), "exactly one of 'url' or 'inboxFile'"),
        (inbox("../x"), "without folders"),
        (inbox("/etc/passwd"), "without folders"),
        (inbox("a\x00b"), "NUL byte"),
        (inbox(".."), "names a folder"),
        (inbox("$(vars/day)/x.csv"), "without folders"),
        (inbox("x.csv", retries=2), "only apply to a download"),
        (download("http://example.com/x", retries=11), "'retries': must be between 0 and 10"),
        (download("http://example.com/x", maxBytes=0), "'maxBytes': must be between 1"),
        (download("http://example.com/x", timeout=0), "'timeout': must be between 0.05"),
        (download("http://example.com/x", maxBytes=True), "must be int"),
        (decompress(format="rar"), "must be one of auto, zip, gzip"),
        (decompress(member="../../evil"), "'..' in its path"),
        (decompress(member="/abs"), "absolute path"),
        (decompress(format="gzip", member="a"), "'member' only applies to zip"),
        (decompress(maxRatio=0), "'maxRatio': must be between 1"),
    ],
)
def test_bad_options_are_refused_when_the_workflow_is_saved(
    activity: dict[str, Any], message: str
) -> None:
    # definitions.parse is the check the engine and the API run on save.
    with pytest.raises(DefinitionError, match=message) as info:
        definitions.parse(flow(activity))
    assert info.value.activity == activity["name"]


def test_a_refused_definition_is_not_saved(h: Harness) -> None:
    with pytest.raises(DefinitionError, match="scheme 'gopher:' is not allowed"):
        h.save(flow(download("gopher://example.com/x")))
    assert h.query(select(Workflow.id)) == []


# ----------------------------------------------------------------- inbox


def test_the_oldest_matching_inbox_file_is_moved_and_passed_on(h: Harness) -> None:
    put(h, "orders-1.csv", b"newer\n", age_seconds=10)
    put(h, "orders-2.csv", b"older\n", age_seconds=100)
    put(h, "other.txt", b"not matched\n", age_seconds=1000)
    put(h, ".orders-3.csv", b"upload in progress\n", age_seconds=1000)
    (h.settings.inbox / "orders-dir.csv").mkdir()
    body = flow(inbox("orders-*.csv", transitions={"noFile": "end2"}))

    run(h, body)
    first = received(h, "end1")["transfer1"]
    for _ in range(2):  # the next runs of the same workflow
        h.engine.command(None, "files", "start")
        h.stub.drain()

    assert first == {
        "kind": "file",
        "path": first["path"],
        "size": 6,
        "name": "orders-2.csv",
    }
    assert Path(first["path"]).read_bytes() == b"older\n"
    assert received(h, "end1")["transfer1"]["name"] == "orders-1.csv"
    assert states(h)["end2"] == ["done"]  # the third run found nothing
    assert sorted(p.name for p in h.settings.inbox.iterdir()) == [
        ".orders-3.csv",
        "orders-dir.csv",
        "other.txt",
    ]
    messages = [text for _level, text in logs(h, "transfer1")]
    assert messages == [
        "picked inbox file orders-2.csv (6 bytes)",
        "picked inbox file orders-1.csv (6 bytes)",
        "no file matching 'orders-*.csv' in the inbox: noFile outlet",
    ]


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("../secret.txt", "without folders"),
        ("/etc/passwd", "without folders"),
        ("sub/../../secret.txt", "without folders"),
        ("..\\secret.txt", "without folders"),
        ("secret.txt\x00.csv", "NUL byte"),
        ("..", "names a folder"),
        ("", "it is empty"),
    ],
)
def test_inbox_names_from_vars_cannot_leave_the_inbox(
    h: Harness, tmp_path: Path, name: str, problem: str
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    h.start(flow(inbox("$(vars/value)"), entry=SIGNAL))

    trigger(h, name)

    assert_failed(h, "transfer1", f"inboxFile {name!r} refused: it")
    assert problem in h.query(select(Task.error).where(Task.activity == "transfer1"))[0][0]
    assert secret.read_text() == "top secret"
    assert files_left(h) == []


def test_a_symbolic_link_out_of_the_inbox_is_refused(h: Harness, tmp_path: Path) -> None:
    secret = tmp_path / "outside" / "secret.csv"
    secret.parent.mkdir()
    secret.write_text("top secret")
    (h.settings.inbox / "link.csv").symlink_to(secret)

    run(h, flow(inbox("link.csv")))

    assert_failed(h, "transfer1", "inbox file(s) matching 'link.csv' refused: 'link.csv'")
    assert (
        "warning",
        "inbox entry 'link.csv' (symbolic link) refused: only regular files are picked",
    ) in logs(h, "transfer1")
    assert secret.read_text() == "top secret"
    assert (h.settings.inbox / "link.csv").is_symlink()
    assert files_left(h) == []


def test_links_are_skipped_when_a_regular_file_matches(h: Harness, tmp_path: Path) -> None:
    outside = tmp_path / "outside.csv"
    outside.write_text("outside")
    (h.settings.inbox / "a-link.csv").symlink_to(outside)
    os.link(outside, h.settings.inbox / "b-hardlink.csv")
    put(h, "c-real.csv", CSV, age_seconds=50)

    run(h, flow(inbox("*.csv")))

    assert received(h, "end1")["transfer1"]["name"] == "c-real.csv"
    warnings = [text for level, text in logs(h, "transfer1") if level == "warning"]
    assert warnings == [
        "inbox entry 'a-link.csv' (symbolic link) refused: only regular files are picked",
        "inbox entry 'b-hardlink.csv' (linked from elsewhere) refused: only regular files are "
        "picked",
    ]


def test_an_inbox_file_over_the_limit_stays_in_the_inbox(h: Harness) -> None:
    put(h, "big.csv", b"x" * 100)

    run(h, flow(inbox("big.csv", maxBytes=10)))

    assert_failed(h, "transfer1", "inbox file big.csv is 100 bytes, over the 10-byte limit")
    assert (h.settings.inbox / "big.csv").exists()
    assert files_left(h) == []


def test_a_missing_inbox_file_without_a_no_file_transition_fails(h: Harness) -> None:
    run(h, flow(inbox("today.csv")))

    assert_failed(h, "transfer1", "no file matching 'today.csv' in the inbox")


def test_a_file_picked_by_a_rolled_back_attempt_is_taken_over_not_picked_twice(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    put(h, "orders-1.csv", b"first\n", age_seconds=100)
    put(h, "orders-2.csv", b"second\n", age_seconds=10)
    # Given a run whose transaction fails after it moved the file (a database outage)
    real_complete = Engine._complete
    monkeypatch.setattr(Engine, "_complete", _fail_once(real_complete))
    h.start(flow(inbox("orders-*.csv")))
    with pytest.raises(RuntimeError, match="database went away"):
        h.stub.drain()
    ((task_id, state),) = h.query(select(Task.id, Task.state).where(Task.activity == "transfer1"))
    assert state == "running"
    assert (h.settings.files / "1" / f"{task_id}.1" / "orders-1.csv").exists()

    # When the reaper runs the task again
    with h.sessions() as s, s.begin():
        s.execute(
            update(Task)
            .where(Task.id == task_id)
            .values(heartbeat_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=60))
        )
    assert h.engine.tick()["reaped"] == 1
    h.stub.drain()

    # Then the second attempt passes on the file the first one picked, and no other
    out = received(h, "end1")["transfer1"]
    assert Path(out["path"]) == h.settings.files / "1" / f"{task_id}.2" / "orders-1.csv"
    assert Path(out["path"]).read_bytes() == b"first\n"
    assert [p.name for p in h.settings.inbox.iterdir()] == ["orders-2.csv"]
    assert files_left(h) == [Path(out["path"])]
    assert (
        "info",
        "taking over orders-1.csv, picked by an earlier attempt of this task",
    ) in logs(h, "transfer1")


def _fail_once(real: Callable[..., Any]) -> Callable[..., Any]:
    calls = {"n": 0}

    def complete(self: Engine, s: Any, claimed: Any, *args: Any, **kwargs: Any) -> Any:
        if claimed.activity == "transfer1" and calls["n"] == 0:
            calls["n"] += 1
            raise RuntimeError("database went away")
        return real(self, s, claimed, *args, **kwargs)

    return complete


def test_an_inbox_on_another_file_system_is_claimed_then_copied(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    put(h, "orders.csv", CSV)
    real_rename = os.rename
    inbox_folder = h.settings.inbox

    def rename(source: Any, destination: Any) -> None:
        # Renames out of the inbox cross devices; renames inside it do not.
        if Path(source).parent == inbox_folder and Path(destination).parent != inbox_folder:
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        real_rename(source, destination)

    monkeypatch.setattr(files_module.os, "rename", rename)

    run(h, flow(inbox("orders.csv")))

    out = received(h, "end1")["transfer1"]
    assert Path(out["path"]).read_bytes() == CSV and out["name"] == "orders.csv"
    assert list(inbox_folder.iterdir()) == []
    assert files_left(h) == [Path(out["path"])]


def test_a_file_swapped_for_a_link_while_it_is_picked_is_put_back_and_refused(
    h: Harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "secret.csv"
    secret.write_text("top secret")
    put(h, "orders.csv", CSV)
    real_rename = os.rename

    def swap_then_rename(source: Any, destination: Any) -> None:
        # Given an uploader that replaces the listed file by a link just before the move
        if Path(source) == h.settings.inbox / "orders.csv" and not Path(source).is_symlink():
            Path(source).unlink()
            Path(source).symlink_to(secret)
        real_rename(source, destination)

    monkeypatch.setattr(files_module.os, "rename", swap_then_rename)

    run(h, flow(inbox("orders.csv")))

    assert_failed(h, "transfer1", "inbox file orders.csv changed while it was picked: refused")
    assert (h.settings.inbox / "orders.csv").is_symlink()  # put back where it was
    assert secret.read_text() == "top secret"
    assert files_left(h) == []


# ----------------------------------------------------------------- decompress


def test_a_gzip_bomb_stops_at_the_size_limit(h: Harness) -> None:
    put(h, "bomb.csv.gz", gzip.compress(bytes(50 << 20), compresslevel=9))

    run(h, flow(inbox("bomb.csv.gz"), decompress(maxBytes=1_000_000)))

    assert_failed(h, "decompress1", "decompressed data is over the 1,000,000-byte limit: stopped")
    assert [p.name for p in files_left(h)] == ["bomb.csv.gz"]  # only transfer1's file


def test_a_zip_bomb_is_refused_by_its_declared_size(h: Harness) -> None:
    put(h, "bomb.zip", zeros_zip(50))

    run(h, flow(inbox("bomb.zip"), decompress(maxBytes=1_000_000)))

    assert_failed(
        h, "decompress1", "member 'zeros.bin' declares a size over the 1,000,000-byte limit"
    )
    assert [p.name for p in files_left(h)] == ["bomb.zip"]


def test_a_zip_lying_about_its_size_gives_no_more_than_it_declared(h: Harness) -> None:
    # Given a zip whose headers declare 1,000 bytes for a member of 5 MiB
    data = bytearray(zeros_zip(5))
    struct.pack_into("<I", data, 22, 1000)  # local header: uncompressed size
    struct.pack_into("<I", data, data.find(b"PK\x01\x02") + 24, 1000)  # central directory
    put(h, "liar.zip", bytes(data))

    run(h, flow(inbox("liar.zip"), decompress()))

    assert_failed(h, "decompress1", "corrupt zip archive liar.zip: Bad CRC-32")
    assert [p.name for p in files_left(h)] == ["liar.zip"]


def test_the_ratio_limit_refuses_what_expands_too_much(h: Harness) -> None:
    put(h, "zeros.gz", gzip.compress(bytes(5 << 20), compresslevel=9))

    run(h, flow(inbox("zeros.gz"), decompress()))

    assert_failed(h, "decompress1", "decompressed data is more than 200 times its compressed")


def test_a_higher_ratio_limit_lets_a_regular_file_through(h: Harness) -> None:
    put(h, "zeros.gz", gzip.compress(bytes(5 << 20), compresslevel=9))

    run(h, flow(inbox("zeros.gz"), decompress(maxRatio=100_000)))

    out = received(h, "end1")["decompress1"]
    assert (out["name"], out["size"]) == ("zeros", 5 << 20)


@pytest.mark.parametrize(
    ("member", "problem"),
    [
        ("../../evil.csv", "'..' in its path"),
        ("a/../../evil.csv", "'..' in its path"),
        ("/abs/evil.csv", "absolute path or drive letter"),
        ("C:\\evil.csv", "absolute path or drive letter"),
        ("..\\..\\evil.csv", "'..' in its path"),
    ],
)
def test_members_with_unsafe_paths_are_refused(
    h: Harness, tmp_path: Path, member: str, problem: str
) -> None:
    put(h, "x.zip", zipped({member: b"evil"}))

    run(h, flow(inbox("x.zip"), decompress()))

    assert_failed(h, "decompress1", f"member {member!r} refused: unsafe name ({problem})")
    assert [p for p in tmp_path.rglob("*evil*")] == []
    assert [p.name for p in files_left(h)] == ["x.zip"]


def test_several_members_need_the_member_option(h: Harness) -> None:
    put(h, "x.zip", zipped({"a.csv": b"a", "b.csv": b"b", "dir/": b""}))

    run(h, flow(inbox("x.zip"), decompress()))

    assert_failed(
        h, "decompress1", "x.zip has 2 members ('a.csv', 'b.csv'): choose one with the 'member'"
    )


def test_an_unknown_member_is_an_error(h: Harness) -> None:
    put(h, "x.zip", zipped({"a.csv": b"a"}))

    run(h, flow(inbox("x.zip"), decompress(member="b.csv")))

    assert_failed(h, "decompress1", "x.zip has no member named 'b.csv'")


def test_an_encrypted_member_is_refused(h: Harness) -> None:
    data = bytearray(zipped({"secret.csv": CSV}))
    struct.pack_into("<H", data, 6, 0x1)  # local header flags: encrypted
    struct.pack_into("<H", data, data.find(b"PK\x01\x02") + 8, 0x1)
    put(h, "secret.zip", bytes(data))

    run(h, flow(inbox("secret.zip"), decompress()))

    assert_failed(h, "decompress1", "member 'secret.csv' is encrypted: refused")


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("bad.zip", b"PK\x03\x04" + os.urandom(2000), "corrupt zip archive bad.zip"),
        ("bad.gz", b"\x1f\x8b" + b"\x08\x00" + os.urandom(2000), "corrupt gzip file bad.gz"),
        ("cut.gz", gzip.compress(os.urandom(20_000))[:5000], "corrupt gzip file cut.gz"),
    ],
)
def test_a_corrupt_archive_is_a_clear_error(
    h: Harness, name: str, data: bytes, message: str
) -> None:
    put(h, name, data)

    run(h, flow(inbox(name), decompress()))

    assert_failed(h, "decompress1", message)
    assert [p.name for p in files_left(h)] == [name]


def test_a_file_that_is_not_an_archive_is_passed_on_unchanged_in_auto_mode(h: Harness) -> None:
    put(h, "plain.csv", CSV)

    run(h, flow(inbox("plain.csv"), decompress()))

    picked = received(h, "decompress1")["transfer1"]
    assert received(h, "end1") == {"decompress1": picked}
    assert logs(h, "decompress1") == [
        ("info", "plain.csv is not a zip or gzip archive: passed on unchanged")
    ]


def test_an_explicit_gzip_format_is_decompressed(h: Harness) -> None:
    put(h, "feed", gzip.compress(CSV))

    run(h, flow(inbox("feed"), decompress(format="gzip")))

    out = received(h, "end1")["decompress1"]
    assert (out["name"], Path(out["path"]).read_bytes()) == ("feed.out", CSV)


def test_a_member_asked_of_a_gzip_file_is_an_error(h: Harness) -> None:
    put(h, "feed.gz", gzip.compress(CSV))

    run(h, flow(inbox("feed.gz"), decompress(member="a.csv")))

    assert_failed(h, "decompress1", "feed.gz is a gzip file: option 'member' is for zip archives")


def test_a_file_that_is_not_the_format_asked_for_is_an_error(h: Harness) -> None:
    put(h, "plain.csv", CSV)

    run(h, flow(inbox("plain.csv"), decompress(format="zip")))

    assert_failed(h, "decompress1", "plain.csv is not a zip archive")


def test_a_nested_archive_is_extracted_once_not_expanded(h: Harness) -> None:
    inner = zipped({"deep.csv": CSV})
    put(h, "outer.zip", zipped({"inner.zip": inner}))

    run(h, flow(inbox("outer.zip"), decompress()))

    out = received(h, "end1")["decompress1"]
    assert out["name"] == "inner.zip"
    assert Path(out["path"]).read_bytes() == inner


def test_a_stored_member_with_an_odd_name_gets_a_safe_file_name(h: Harness) -> None:
    put(h, "x.zip", zipped({"exports/ünï cøde;rm -rf.csv": CSV}, zipfile.ZIP_STORED))

    run(h, flow(inbox("x.zip"), decompress()))

    out = received(h, "end1")["decompress1"]
    assert out["name"] == "ünï cøde;rm -rf.csv"
    assert Path(out["path"]).name == "_n_c_de_rm_-rf.csv"
    assert Path(out["path"]).read_bytes() == CSV


def test_an_inbound_file_outside_the_files_folder_is_refused(h: Harness) -> None:
    run(h, flow({"name": "emit1", "type": "emit"}, decompress()))

    assert_failed(h, "decompress1", "the inbound file emit1 is outside the files folder: refused")
