"""The installed `carillon` script as a new user runs it, from another folder: the demo, and
`carillon up` stopped by Ctrl-C or a supervisor's SIGTERM.

The script's sys.path holds the venv, not the checkout, so every module it needs must be
installed (beat_schedule.py was not, and `make demo` failed on a fresh clone while the
suite, run from the checkout, passed).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import api_healthy, free_port, wait_for
from worker.config import Settings

SCRIPT = Path(sys.executable).parent / "carillon"


def embedded_env(home: Path) -> dict[str, str]:
    """No CARILLON_* variable but the home: the embedded default (SQLite + filesystem broker)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARILLON_")}
    env.pop("PYTHONPATH", None)
    env["CARILLON_HOME"] = str(home)
    return env


@pytest.mark.timeout(400)
def test_the_demo_runs_every_sample_to_finished_from_any_folder(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(SCRIPT), "demo", "--timeout", "240"],
        cwd=tmp_path,
        env={**embedded_env(tmp_path / "home"), "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=360,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "sqlite:///" in output and "filesystem://" in output
    for workflow in ("cmsSend", "nightlyBatch", "profileImport"):
        assert re.search(rf"{workflow}\s+\(workflow\) finished", output), (workflow, output[-3000:])
    assert "the sample workflows finished in" in output
    assert (tmp_path / "home" / "demo" / "carillon.sqlite").exists()


def test_the_installed_script_imports_everything_it_needs_outside_the_checkout(
    tmp_path: Path,
) -> None:
    """Every top-level module the worker imports resolves from the venv alone."""
    done = subprocess.run(
        [sys.executable, "-c", "import beat_schedule, worker.celery_app, api.wsgi"],
        cwd=tmp_path,
        env=embedded_env(tmp_path / "home"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]


def descendants(pid: int) -> set[int]:
    """Every process below `pid`, from /proc (children run in their own sessions)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue  # gone meanwhile
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier}
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.timeout(180)
@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_up_stops_every_child_on_ctrl_c_or_sigterm(
    tmp_path: Path, stop_signal: signal.Signals
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    up = subprocess.Popen(
        [str(SCRIPT), "up", "--port", str(port), "--concurrency", "1"],
        cwd=tmp_path,
        env=embedded_env(tmp_path / "home"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    children: set[int] = set()
    try:
        wait_for(lambda: api_healthy(base) or up.poll() is not None, 60, "the API of carillon up")
        assert up.poll() is None, up.communicate(timeout=10)[0].decode()[-3000:]
        # A shell with no port setting (the CLI's why texts, a worker started apart) links
        # to the port up serves on, not to the default 8080
        assert Settings.from_env(embedded_env(tmp_path / "home")).public_url == base
        # api (gunicorn + its workers), worker (+ its pool process), beat
        children = wait_for(
            lambda: (found := descendants(up.pid)) and len(found) >= 5 and found, 30, "children"
        )

        up.send_signal(stop_signal)
        output = up.communicate(timeout=60)[0].decode()
        assert up.returncode == 0, output[-3000:]
        assert "stopping..." in output
        wait_for(lambda: not [p for p in children if alive(p)], 20, "every child to exit")
        assert not api_healthy(base)
    finally:
        # a failed stop must not leak the stack into the rest of the suite
        for pid in [up.pid, *children]:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        up.wait(10)
