"""bench/engine_overhead.py refuses bad options before it touches any server."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0", "between 0.1 and 1000"),
        ("-5", "between 0.1 and 1000"),
        ("1e9", "between 0.1 and 1000"),
        ("nan", "between 0.1 and 1000"),
        ("inf", "between 0.1 and 1000"),
        ("ten", "invalid float value"),
        ("9" * 5000, "between 0.1 and 1000"),
    ],
)
def test_a_bad_poll_interval_is_refused(value: str, message: str) -> None:
    done = subprocess.run(
        [sys.executable, "bench/engine_overhead.py", "--poll-ms", value],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        # Servers that do not exist: reaching them would fail differently.
        env={
            "PATH": "/usr/bin:/bin",
            "CARILLON_DATABASE_URL": "postgresql+psycopg2://x@127.0.0.1:1/x",
        },
    )
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr
