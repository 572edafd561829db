"""What every scenario does around its fault: launch the workload, settle, judge, report.

`finish()` runs the oracle, appends a line to CARILLON_FAULT_REPORT (a JSONL file the soak
runner turns into its table) and fails the test with the violations, if any.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest

from tests.faults.harness import ApiClient, FaultStack
from tests.faults.oracle import Verdict, check, quiesce
from tests.faults.workload import PROFILES, SHAPES, seed_segment, unique
from tests.integration.conftest import wait_for


@dataclass(frozen=True)
class Launched:
    name: str
    segment: str
    shape: str


def launch(
    stack: FaultStack,
    client: ApiClient,
    shape: str,
    rng: random.Random,
    *,
    trigger: bool = True,
    profiles: int = PROFILES,
) -> Launched:
    """Seed a segment of `profiles`, save a workflow of `shape` for it, start it (API)."""
    segment = unique(rng, shape.replace("_", "")[:4])
    seed_segment(stack, client.org, segment, profiles)
    name = stack.save(SHAPES[shape](segment, segment), org=client.org)
    answer = client.command(name, "start")
    assert answer.status == 202, answer
    if shape == "signal_wait":
        wait_for(
            lambda: any(
                r.activity == "signal1" and r.state == "waiting" for r in stack.tasks(name)
            ),
            60,
            f"{name} to wait for its signal",
        )
        if trigger:
            answer = client.trigger(name, "signal1", {"segmentCode": segment})
            assert answer.status == 202, answer
    return Launched(name, segment, shape)


def emails_to(stack: FaultStack, segment: str) -> int:
    return sum(1 for m in stack.servers.smtp.messages if segment in m.recipients[0])


def mid_delivery(stack: FaultStack, target: Launched, emails: int) -> Any:
    """Block until `target`'s email1 runs (attempt 1) and `emails` of its messages are out:
    the moment most scenarios inject their fault. Returns email1's running task row."""
    row = stack.wait_running(target.name, "email1")
    wait_for(lambda: emails_to(stack, target.segment) >= emails, 60, f"{emails} emails out")
    return row


def finish(
    stack: FaultStack,
    fault: str,
    seed: int,
    workflows: list[str],
    fault_at: float,
    *,
    technical: bool = False,
    timeout: float = 120,
    known: dict[str, str] | None = None,
    poison: frozenset[str] = frozenset(),
    restarts: bool = False,
) -> Verdict:
    """Quiesce (bounded), check I1-I7, record the outcome; fail on any violation.

    `known` maps an invariant to a bug the fixes must remove: its violation makes the test
    xfail (every other invariant still asserted), and its absence fails the test, strictly,
    so the marker is removed with the fix.
    """
    quiesce(stack, workflows, timeout)
    verdict = check(stack, workflows, technical=technical, poison=poison, restarts=restarts)
    verdict.recovery = time.monotonic() - fault_at
    report = os.environ.get("CARILLON_FAULT_REPORT")
    if report:
        with open(report, "a") as out:
            out.write(
                json.dumps(
                    {
                        "fault": fault,
                        "seed": seed,
                        "checked": verdict.checked,
                        "held": verdict.held,
                        "violations": [str(v) for v in verdict.violations],
                        "recovery": round(verdict.recovery, 1),
                    }
                )
                + "\n"
            )
    known = known or {}
    unexpected = [v for v in verdict.violations if v.invariant not in known]
    assert not unexpected, f"{fault} seed {seed}:\n{verdict}"
    broken = {v.invariant for v in verdict.violations}
    for invariant, reason in known.items():
        if invariant in broken:
            pytest.xfail(f"{fault} {invariant} (known bug): {reason}\n{verdict}")
        pytest.fail(f"{fault}: known bug no longer reproduces, remove the marker: {reason}")
    return verdict


@contextmanager
def slow_smtp(live: FaultStack, delay: float) -> Iterator[None]:
    """The SMTP server takes `delay` s per message meanwhile, so a fault lands mid-delivery."""
    live.servers.smtp.delay = delay
    try:
        yield
    finally:
        live.servers.smtp.delay = 0.0
