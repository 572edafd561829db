"""`make demo` as a new user runs it: the installed `carillon` script, from another folder.

The script's sys.path holds the venv, not the checkout, so every module it needs must be
installed (beat_schedule.py was not, and `make demo` failed on a fresh clone while the
suite, run from the checkout, passed).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

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
