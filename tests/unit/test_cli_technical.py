"""`carillon technical ...` as an admin runs it: real processes on a throw-away CARILLON_HOME."""

from __future__ import annotations

import json
from pathlib import Path

from tests.unit.test_cli import carillon


def test_list_pause_reschedule_run_and_resume(tmp_path: Path) -> None:
    listed = carillon(tmp_path, "technical", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    items = {item["id"]: item for item in json.loads(listed.stdout)}
    assert len(items) == 15 and items["cleanup"]["enabled"] is True
    assert carillon(tmp_path, "technical", "pause", "cleanup").stdout == "cleanup: paused\n"
    moved = carillon(
        tmp_path, "technical", "schedule", "cleanup", '{"frequency": "daily", "times": ["05:30"]}'
    )
    assert moved.returncode == 0 and "next fire never" in moved.stdout
    ran = carillon(tmp_path, "technical", "run", "cleanup")
    assert ran.returncode == 0 and ran.stdout == "cleanup: started\n", ran.stderr
    assert carillon(tmp_path, "technical", "resume", "cleanup").returncode == 0
    table = carillon(tmp_path, "technical", "list")
    assert "05:30" in table.stdout and "started" in table.stdout
    items = {
        item["id"]: item
        for item in json.loads(carillon(tmp_path, "technical", "list", "--json").stdout)
    }
    assert items["cleanup"]["nextFires"][0].endswith("05:30:00+00:00")
    assert carillon(tmp_path, "technical", "schedule", "cleanup", "default").returncode == 0


def _settings(home: Path) -> list[dict[str, object]]:
    """The listing without nextFires, which moves with the clock."""
    listed = json.loads(carillon(home, "technical", "list", "--json").stdout)
    return [{k: v for k, v in item.items() if k != "nextFires"} for item in listed]


def test_hostile_arguments_get_a_clear_error_and_change_nothing(tmp_path: Path) -> None:
    before = _settings(tmp_path)
    for args, message in [
        (("pause", "../etc/passwd"), "not found"),
        (("schedule", "cleanup", "{not json"), "not JSON"),
        (("schedule", "cleanup", '{"frequency": "intraday", "every": "1mn"}'), "10"),
        (("schedule", "cleanup", "[1]"), "must be an object"),
        (("run", "x" * 10_000), "not found"),
    ]:
        result = carillon(tmp_path, "technical", *args)
        assert result.returncode == 2 and message in result.stderr, (args, result.stderr)
    assert _settings(tmp_path) == before
