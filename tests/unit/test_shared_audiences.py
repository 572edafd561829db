"""importSharedAudience: audiences follow their source, by directory or over HTTP."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from sqlalchemy import select

from tests.conftest import Harness
from tests.technical import run_technical
from tests.unit.test_analytics import Sink
from worker import catalog
from worker.marketing import audience, audience_member, profile
from worker.models import LogLine


def _profiles(harness: Harness, org: str, count: int) -> None:
    with harness.sessions() as s, s.begin():
        org_id = catalog.ensure_org(s, org).id
        s.execute(
            profile.insert(),
            [
                {"org_id": org_id, "crmId": f"c{i}", "email": f"p{i}@example.org"}
                for i in range(count)
            ],
        )


def _run(harness: Harness) -> str:
    return run_technical(harness, "importSharedAudience")


def _members(harness: Harness, org: str, name: str) -> tuple[int, set[str]]:
    with harness.sessions() as s:
        org_id = catalog.org_by_name(s, org).id
        audience_id, count = s.execute(
            select(audience.c.id, audience.c.count).where(
                audience.c.org_id == org_id, audience.c.name == name
            )
        ).one()
        keys = set(
            s.scalars(
                select(profile.c.crmId)
                .join(audience_member, audience_member.c.memberId == profile.c.id)
                .where(audience_member.c.audienceId == audience_id)
            )
        )
    return count, keys


def _write(root: Path, org: str, name: str, text: str) -> Path:
    path = root / "shared_audiences" / org / f"{name}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_a_directory_audience_is_synchronised_and_resynchronised_when_it_changes(
    harness: Harness,
) -> None:
    _profiles(harness, "acme", 5)
    _profiles(harness, "other", 5)  # same crmIds in another organization: never members
    home = Path(harness.settings.home)
    path = _write(home, "acme", "vip", "crmId,score\nc1,3\nc2,1\nc2,1\nghost,0\n")
    assert _run(harness) == "finished"
    assert _members(harness, "acme", "vip") == (2, {"c1", "c2"})
    path.write_text("email\np3@example.org\np4@example.org\np0@example.org\n")
    os.utime(path, ns=(1, 10**18))  # a new version even within the clock's resolution
    assert _run(harness) == "finished"
    assert _members(harness, "acme", "vip") == (3, {"c0", "c3", "c4"})
    with harness.sessions() as s:
        messages = list(s.scalars(select(LogLine.message).order_by(LogLine.id)))
    assert "audience acme/vip: 2 member(s), 1 unknown key(s)" in messages
    assert _run(harness) == "finished"  # unchanged: not read again
    with harness.sessions() as s:
        summaries = [
            m
            for m in s.scalars(select(LogLine.message).order_by(LogLine.id))
            if m.endswith("shared audience(s) synchronised")
        ]
    assert summaries == [
        "1 shared audience(s) synchronised",
        "1 shared audience(s) synchronised",
        "0 shared audience(s) synchronised",
    ]


def test_hostile_entries_are_skipped_or_refused(harness: Harness, tmp_path: Path) -> None:
    _profiles(harness, "acme", 3)
    home = Path(harness.settings.home)
    _write(home, "acme", "bad-name", "crmId\nc1\n")  # not a name: skipped
    _write(home, "nobody", "vip", "crmId\nc1\n")  # unknown organization: warned, skipped
    secret = tmp_path / "secret.csv"
    secret.write_text("crmId\nc1\n")
    (home / "shared_audiences" / "acme" / "linked.csv").symlink_to(secret)
    assert _run(harness) == "finished"
    with harness.sessions() as s:
        assert s.scalars(select(audience.c.name)).all() == []
    _write(home, "acme", "nokey", "name\nc1\n")
    assert _run(harness) == "error"  # no crmId/email column: the run fails, nothing written
    with harness.sessions() as s:
        assert s.scalars(select(audience.c.name)).all() == []


def test_an_http_source_is_synchronised(harness: Harness) -> None:
    _profiles(harness, "acme", 3)
    sink = Sink()
    listing = json.dumps({"audiences": [{"org": "acme", "name": "web", "version": 7}]}).encode()
    files = {"/audiences/acme/web": b"crmId\nc0\nc2\n"}

    def handler(request: Any) -> None:
        body = listing if request.path == "/audiences" else files.get(request.path)
        request.send_response(200 if body is not None else 404)
        request.send_header("Content-Length", str(len(body or b"")))
        request.end_headers()
        request.wfile.write(body or b"")

    sink.server.RequestHandlerClass.do_GET = handler  # type: ignore[attr-defined]
    harness.settings = dataclasses.replace(harness.settings, shared_audience_url=sink.url)
    harness.engine.settings = harness.settings
    try:
        assert _run(harness) == "finished"
    finally:
        sink.close()
    assert _members(harness, "acme", "web") == (2, {"c0", "c2"})
