"""The `carillon` command as a user runs it: a real process on a throw-away CARILLON_HOME."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from worker.cli import main

SIGNAL_WORKFLOW = """
id: cli1
activities:
  - name: start1
    type: start
    transitions: {done: wait1}
  - {name: wait1, type: wait, duration: 1h, transitions: {done: end1}}
  - {name: end1, type: end}
  - name: scheduler1
    type: scheduler
    frequency: monthly
    weekdayOfMonth: {weekday: tue, nth: 2}
    times: ["09:00"]
    timezone: Europe/Paris
    transitions: {done: end2}
  - {name: end2, type: end}
"""


def carillon(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARILLON_")}
    env["CARILLON_HOME"] = str(home)
    env["COLUMNS"] = "250"  # rich wraps table cells to the terminal width
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def all_commands() -> list[list[str]]:
    found: list[list[str]] = []

    def walk(command: object, path: list[str]) -> None:
        found.append(path)
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, [*path, name])

    walk(main, [])
    return found


@pytest.mark.parametrize("path", all_commands(), ids=lambda p: " ".join(p) or "carillon")
def test_every_command_has_help(path: list[str]) -> None:
    result = CliRunner().invoke(main, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_credentials_are_printed_once_as_json(tmp_path: Path) -> None:
    result = carillon(tmp_path, "credentials", "create", "--org", "acme")
    assert result.returncode == 0, result.stderr
    created = json.loads(result.stdout)
    assert set(created) == {"org", "apiKey", "token"}
    assert created["org"] == "acme" and created["apiKey"].startswith("ck_")
    listed = carillon(tmp_path, "credentials", "list")
    assert created["token"] not in listed.stdout
    assert created["apiKey"] not in listed.stdout


@pytest.mark.parametrize("org", ["bad org", "", "x" * 65, "1abc", "a;drop"])
def test_a_bad_organization_name_is_refused(tmp_path: Path, org: str) -> None:
    result = carillon(tmp_path, "credentials", "create", "--org", org)
    assert result.returncode == 2
    assert "organization names" in result.stderr


def test_a_workflow_is_imported_started_explained_and_stopped(tmp_path: Path) -> None:
    definition = tmp_path / "cli1.yaml"
    definition.write_text(SIGNAL_WORKFLOW)
    imported = carillon(tmp_path, "workflow", "import", str(definition), "--org", "acme")
    assert imported.returncode == 0, imported.stderr
    assert "cli1 version 1 saved" in imported.stdout

    started = carillon(tmp_path, "workflow", "start", "cli1")
    assert started.returncode == 0, started.stderr
    assert "state is started" in started.stdout
    # No worker runs: the start task waits in the queue, and `tasks` says so.
    tasks = carillon(tmp_path, "workflow", "tasks", "cli1")
    flat = " ".join(tasks.stdout.split())
    assert "holds 1 message(s)" in flat, tasks.stdout

    preview = carillon(tmp_path, "workflow", "preview", "cli1", "scheduler1", "--count", "2")
    assert preview.returncode == 0, preview.stderr
    assert preview.stdout.splitlines()[0].endswith("09:00 CET")

    stopped = carillon(tmp_path, "workflow", "stop", "cli1")
    assert "state is stopped" in stopped.stdout
    again = carillon(tmp_path, "workflow", "stop", "cli1")
    assert again.returncode == 2
    assert "not running; it is stopped" in again.stderr


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("id: bad\nactivities:\n  - {name: start1, type: nope}\n", "activity 'start1'"),
        ("not: [valid", "neither valid JSON nor YAML"),
        ('{"id": 1}', "'id' must be a name"),
        ("a: &x [1]\nb: *x\n", "YAML aliases"),
    ],
)
def test_a_bad_definition_file_is_refused_and_saves_nothing(
    tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    result = carillon(tmp_path, "workflow", "import", str(path), "--org", "acme")
    assert result.returncode == 2
    assert message in result.stderr
    listed = carillon(tmp_path, "workflow", "list")
    assert "bad" not in listed.stdout


def test_a_file_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "binary.yaml"
    path.write_bytes(b"\xff\xfe\x00garbage")
    result = carillon(tmp_path, "workflow", "import", str(path), "--org", "acme")
    assert result.returncode == 2
    assert "not UTF-8" in result.stderr


def test_commands_on_an_unknown_workflow_say_so(tmp_path: Path) -> None:
    result = carillon(tmp_path, "workflow", "pause", "ghost")
    assert result.returncode == 2
    assert "workflow 'ghost' not found" in result.stderr
