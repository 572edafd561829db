"""mobileAppOptOutMgt: push feedback applied once, from where it stopped, partial lines left."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.conftest import Harness
from tests.technical import run_technical
from worker import catalog
from worker.marketing import profile
from worker.technical import optouts


class Crash(Exception):
    pass


def _profiles(harness: Harness) -> None:
    with harness.sessions() as s, s.begin():
        org_id = catalog.ensure_org(s, "acme").id
        s.execute(
            profile.insert(),
            [{"org_id": org_id, "crmId": f"c{i}", "pushToken": f"tok{i}"} for i in range(5)],
        )


def _opted_out(harness: Harness) -> list[str]:
    with harness.sessions() as s:
        return sorted(s.scalars(select(profile.c.crmId).where(profile.c.pushOptOut.is_(True))))


def _run(harness: Harness) -> None:
    assert run_technical(harness, "mobileAppOptOutMgt") == "finished"


def _append(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as out:
        out.write(text)


def test_feedback_is_applied_from_the_pointer_and_partial_lines_wait(harness: Harness) -> None:
    _profiles(harness)
    path = optouts.feedback_file(Path(harness.settings.home))
    _run(harness)  # no file yet: nothing to do
    _append(path, json.dumps({"pushToken": "tok1", "reason": "optOut"}) + "\n")
    _append(path, "not json\n" + json.dumps({"pushToken": ["tok2"]}) + "\n")
    _append(path, '{"pushToken": "tok3"')  # still being written
    _run(harness)
    assert _opted_out(harness) == ["c1"]
    _append(path, ', "reason": "unregistered"}\n')
    _run(harness)
    assert _opted_out(harness) == ["c1", "c3"]


def test_a_crash_before_the_pointer_moves_replays_harmlessly(harness: Harness) -> None:
    _profiles(harness)
    path = optouts.feedback_file(Path(harness.settings.home))
    _append(path, json.dumps({"pushToken": "tok4"}) + "\n")
    with pytest.raises(Crash), harness.sessions() as s, s.begin():
        assert optouts.apply_feedback(s, path) == (1, 1, 0)
        raise Crash
    assert _opted_out(harness) == []
    with harness.sessions() as s, s.begin():
        assert optouts.apply_feedback(s, path) == (1, 1, 0)
    with harness.sessions() as s, s.begin():
        assert optouts.apply_feedback(s, path) == (0, 0, 0)
    assert _opted_out(harness) == ["c4"]
