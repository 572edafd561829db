"""Which queues a worker consumes: all by default, a channel worker takes the delivery batches
too, and an unknown queue is refused before the worker starts (a typo consumes nothing)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from worker.queues import BATCH_QUEUE, CHANNEL_QUEUE, QUEUES, worker_queues


@pytest.mark.parametrize("names", [[], [""], [" ", "\t"], ["", "  "]])
def test_no_queue_named_means_every_queue(names: list[str]) -> None:
    assert worker_queues(names) == QUEUES


def test_a_channel_worker_takes_the_delivery_batches_too() -> None:
    assert worker_queues([CHANNEL_QUEUE]) == (CHANNEL_QUEUE, BATCH_QUEUE)
    assert worker_queues(["carillon.flow", f" {CHANNEL_QUEUE} ", CHANNEL_QUEUE]) == (
        "carillon.flow",
        CHANNEL_QUEUE,
        BATCH_QUEUE,
    )


def test_the_batch_queue_alone_is_a_choice_of_its_own() -> None:
    assert worker_queues([BATCH_QUEUE]) == (BATCH_QUEUE,)
    assert worker_queues(["carillon.data", "carillon.data"]) == ("carillon.data",)


@pytest.mark.parametrize(
    "names",
    [["carillon.chanel"], ["carillon.flow", "celery"], ["CARILLON.FLOW"], ["carillon.flow;rm"]],
)
def test_an_unknown_queue_is_refused_naming_it_and_the_known_ones(names: list[str]) -> None:
    with pytest.raises(ValueError) as refused:
        worker_queues(names)
    assert repr(names[-1]) in str(refused.value)
    assert ", ".join(QUEUES) in str(refused.value)


def test_a_flood_of_unknown_names_gives_a_short_message() -> None:
    names = [f"q{i}-" + "x" * 10_000 for i in range(10_000)]
    with pytest.raises(ValueError) as refused:
        worker_queues(names)
    message = str(refused.value)
    assert "and 9995 more" in message and len(message) < 1_000


def carillon_worker(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CARILLON_")}
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", "worker", *args],
        env={**clean, "CARILLON_HOME": str(home), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (["-Q", "carillon.chanel"], {}),
        (["--queues", "carillon.flow," + "y" * 100_000], {}),
        ([], {"CARILLON_QUEUES": "carillon.flow,nope"}),
    ],
    ids=["typo", "huge", "from-the-environment"],
)
def test_the_worker_command_refuses_an_unknown_queue_before_starting(
    tmp_path: Path, args: list[str], env: dict[str, str]
) -> None:
    done = carillon_worker(tmp_path / "home", *args, **env)
    assert done.returncode == 2, done.stderr
    assert "unknown queue" in done.stderr and "carillon.channel.batch" in done.stderr
    assert len(done.stderr) < 3_000
    # Nothing was set up: no database created, no worker started
    assert not (tmp_path / "home" / "carillon.sqlite").exists()
