"""The quick tier of the fault table (RELIABILITY.md 5.3/5.4): F1, F2, F4, F5, F7, F8, F11,
F12, F13, one seed each, on a whole stack of real processes and private servers.

Each scenario starts a small workload of the three shapes, strikes at the moment it names
(polled in the database), lets the stack settle and asks the oracle for I1-I7.
"""

from __future__ import annotations

import random
import signal
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from tests.faults.conftest import require_restartable
from tests.faults.harness import FaultStack
from tests.faults.scenario import emails_to, finish, launch, mid_delivery, slow_smtp
from tests.integration.conftest import wait_for
from worker.models import Job, Workflow

pytestmark = [pytest.mark.faults, pytest.mark.timeout(180)]


def org_for(rng: random.Random) -> str:
    return f"faults{rng.getrandbits(32):08x}"


def test_f1_a_worker_child_killed_mid_delivery_sends_nobody_twice(
    live: FaultStack, rng: random.Random, fault_seed: int
) -> None:
    client = live.client(org_for(rng))
    with slow_smtp(live, 0.1):
        target = launch(live, client, "linear", rng)
        other = launch(live, client, "signal_wait", rng)
        # Given email1 running, some of its messages out
        row = mid_delivery(live, target, 5)
        # When the prefork child running it is SIGKILLed (F1)
        fault_at = time.monotonic()
        live.kill_child(live.worker_pid_of(row))
        finish(live, "F1", fault_seed, [target.name, other.name], fault_at)
    # Then the delivery ran again (attempt 2) and finished
    attempts = [r.attempt for r in live.tasks(target.name) if r.activity == "email1"]
    assert attempts == [2]


def test_f2_the_whole_worker_killed_and_restarted_loses_nothing(
    live: FaultStack, rng: random.Random, fault_seed: int
) -> None:
    client = live.client(org_for(rng))
    with slow_smtp(live, 0.05):
        target = launch(live, client, "fork_join", rng)
        other = launch(live, client, "linear", rng)
        mid_delivery(live, target, 5)
        # When the worker, main process and children, is SIGKILLed and back 3 s later (F2)
        fault_at = time.monotonic()
        live.kill_worker(downtime=3.0)
        finish(live, "F2", fault_seed, [target.name, other.name], fault_at)
    # Then the SMS branch (idempotent provider) reached every profile of the segment
    sms = [r for r in live.tasks(target.name) if r.activity == "sms1"]
    assert [r.state for r in sms] == ["done"]


def test_f4_a_frozen_worker_resumed_after_its_lease_is_fenced_out(
    live: FaultStack, rng: random.Random, fault_seed: int
) -> None:
    client = live.client(org_for(rng))
    with slow_smtp(live, 0.1):
        target = launch(live, client, "linear", rng)
        row = mid_delivery(live, target, 5)
        zombie = live.worker_pid_of(row)
        # When the child running attempt 1 is frozen past its lease (F4), the reaper has
        # another child run attempt 2; then the zombie thaws
        fault_at = time.monotonic()
        with live.frozen(zombie):
            live.wait_running(target.name, "email1", attempt=2, timeout=60)
        finish(live, "F4", fault_seed, [target.name], fault_at)
    assert [r.attempt for r in live.tasks(target.name) if r.activity == "email1"] == [2]


def test_f5_a_redis_restart_mid_run_is_survived(
    live: FaultStack, rng: random.Random, fault_seed: int
) -> None:
    require_restartable(live)
    client = live.client(org_for(rng))
    with slow_smtp(live, 0.05):
        target = launch(live, client, "fork_join", rng)
        signal_wait = launch(live, client, "signal_wait", rng, trigger=False)
        live.wait_running(target.name, "email1")
        # When Redis shuts down gracefully mid-run and comes back 3 s later (F5)
        fault_at = time.monotonic()
        live.restart_redis(crash=False, downtime=3.0)
        # Then the stack consumes again: a signal accepted after the restart runs to its end
        answer = client.trigger(signal_wait.name, "signal1", {"segmentCode": signal_wait.segment})
        assert answer.status == 202, answer
        finish(live, "F5", fault_seed, [target.name, signal_wait.name], fault_at)
    ends = [r for r in live.tasks(signal_wait.name) if r.activity == "end1"]
    assert [r.state for r in ends] == ["done"]


def test_f7_a_postgres_restart_mid_run_answers_503_and_loses_nothing(
    live: FaultStack, rng: random.Random, fault_seed: int
) -> None:
    require_restartable(live)
    client = live.client(org_for(rng))
    with slow_smtp(live, 0.05):
        target = launch(live, client, "linear", rng)
        waiting = launch(live, client, "signal_wait", rng, trigger=False)
        live.wait_running(target.name, "email1")
        # When PostgreSQL stops (fast) mid-delivery, with API calls during the outage (F7)
        fault_at = time.monotonic()
        with live.pg_down("fast"):
            during = [
                client.call("GET", f"/workflow/execution/{target.name}"),
                client.trigger(waiting.name, "signal1", {"segmentCode": waiting.segment}),
                client.command(target.name, "pause"),
            ]
        # Then the API said 503 with Retry-After, no stack trace, and nothing was changed
        assert [a.status for a in during] == [503, 503, 503], [a.body for a in during]
        assert all(a.headers.get("Retry-After") for a in during), [a.headers for a in during]
        assert not any("Traceback" in str(a.body) for a in during)
        finish(live, "F7", fault_seed, [target.name, waiting.name], fault_at)
    # The refused trigger started nothing; the delivery finished once after the restart
    assert [r.state for r in live.tasks(waiting.name)] == ["waiting"]
    assert live.state(target.name) == "finished"


def test_f8_two_beats_fire_each_technical_slot_once(
    live: FaultStack, rng: random.Random, fault_seed: int
) -> None:
    from tests.faults.oracle import technical_fires

    # Given two more beats (two hosts) firing the technical workflows every 3 s (F8)
    every = {
        "CARILLON_TECHNICAL_WORKFLOWS": "1",
        "CARILLON_TECHNICAL_EVERY": "3",
        "CARILLON_TECHNICAL_REFRESH": "1",
    }
    fault_at = time.monotonic()
    live.second_beat("beatA", **every)
    live.second_beat("beatB", **every)
    try:
        wait_for(lambda: len(technical_fires(live, "cleanup")) >= 3, 90, "3 cleanup slots")
    finally:
        live.kill("beatA")
        live.kill("beatB")
    # Then, once their runs ended, every slot fired once and started at most one run
    names = sorted({name for name, _slot, _outcome, _sends in technical_fires(live)})
    finish(live, "F8", fault_seed, names, fault_at, technical=True)
    assert any(sends >= 2 for _n, _s, _o, sends in technical_fires(live)), "both beats sent"


def test_f11_duplicate_messages_of_a_running_delivery_send_nothing_twice(
    live: FaultStack, rng: random.Random, fault_seed: int
) -> None:
    client = live.client(org_for(rng))
    with slow_smtp(live, 0.05):
        target = launch(live, client, "linear", rng)
        row = live.wait_running(target.name, "email1")
        fault_at = time.monotonic()
        # When the broker holds copies of the running task's message (F11): one copied from
        # `unacked` back onto its queue, and one more published under the same task id
        queue = live.duplicate_unacked(row.id)
        live.celery.set_current()
        live.celery.send_task(
            "carillon.run_activity", args=(row.id, {}), task_id=row.id, queue=queue
        )
        finish(live, "F11", fault_seed, [target.name], fault_at)
    # Then both copies were refused by the claim: one attempt, 30 messages, each once
    assert [r.attempt for r in live.tasks(target.name) if r.activity == "email1"] == [1]
    assert emails_to(live, target.segment) == 30


def test_f12_a_crash_between_commit_and_publish_is_repaired(
    live: FaultStack, rng: random.Random, fault_seed: int, tmp_path: Path
) -> None:
    marker = tmp_path / "crashed"
    # Given a worker that dies once right after a commit, before publishing what follows (F12)
    live.failpoint_worker(marker)
    try:
        client = live.client(org_for(rng))
        fault_at = time.monotonic()
        target = launch(live, client, "fork_join", rng)
        wait_for(marker.exists, 60, "the failpoint to fire")
        finish(live, "F12", fault_seed, [target.name], fault_at)
    finally:
        live.kill("w1", signal.SIGTERM)
        live.start_worker("w1")


def test_f13_duplicate_signals_start_one_job(
    live: FaultStack, rng: random.Random, fault_seed: int
) -> None:
    client = live.client(org_for(rng))
    keyed = launch(live, client, "signal_wait", rng, trigger=False)
    bare = launch(live, client, "signal_wait", rng, trigger=False)
    fault_at = time.monotonic()

    def burst(target: str, segment: str, key: str | None) -> list[Any]:
        with ThreadPoolExecutor(20) as pool:
            return list(
                pool.map(
                    lambda _: client.trigger(target, "signal1", {"segmentCode": segment}, key),
                    range(20),
                )
            )

    # When 20 identical triggers arrive at once with one Idempotency-Key (F13)
    key = str(uuid.UUID(int=rng.getrandbits(128)))
    answers = burst(keyed.name, keyed.segment, key)
    # Then every one gets the original 202: same trigger, same job
    assert [a.status for a in answers] == [202] * 20, [(a.status, a.body) for a in answers]
    assert len({a.body["id"] for a in answers}) == 1
    # And a replay after a client timeout still answers the original
    again = client.trigger(keyed.name, "signal1", {"segmentCode": keyed.segment}, key)
    assert (again.status, again.body["id"]) == (202, answers[0].body["id"])
    # When 20 identical triggers arrive at once without a key: one 202, nineteen 429
    answers = burst(bare.name, bare.segment, None)
    statuses = sorted(a.status for a in answers)
    assert statuses == [202] + [429] * 19, statuses
    assert all(a.headers.get("Retry-After") for a in answers if a.status == 429)
    finish(live, "F13", fault_seed, [keyed.name, bare.name], fault_at)
    for name in (keyed.name, bare.name):
        jobs = {r.job_id for r in live.tasks(name) if r.activity == "end1"}
        assert len(jobs) == 1, name
    assert len(signal_jobs(live, keyed.name)) == 1
    assert len(signal_jobs(live, bare.name)) == 1
    # A stopped workflow refuses the signal (409) and starts nothing
    assert client.command(bare.name, "stop").status == 202
    live.wait_state(bare.name, "stopped", timeout=30)
    refused = client.trigger(bare.name, "signal1", {"segmentCode": bare.segment}, str(uuid.uuid4()))
    assert refused.status == 409, refused
    assert len(signal_jobs(live, bare.name)) == 1


def signal_jobs(stack: FaultStack, workflow: str) -> list[str]:
    with stack.sessions() as s:
        return list(
            s.scalars(
                select(Job.id)
                .join(Workflow, Workflow.id == Job.workflow_id)
                .where(Workflow.name == workflow, Job.origin == "signal")
            ).all()
        )


def test_the_oracle_sees_a_double_delivery_and_a_leaked_secret(live: FaultStack) -> None:
    """The oracle is worth something only if it can fail: feed it two violations."""
    import smtplib
    from email.message import EmailMessage

    from tests.faults.oracle import check
    from tests.smtp_server import SmtpServer

    own = SmtpServer().start()
    shared, live.servers.smtp = live.servers.smtp, own
    leak = live.home / "leak.log"
    try:
        message = EmailMessage()
        message["Subject"], message["From"], message["To"] = "x", "a@example.org", "b@example.org"
        message["X-Carillon-Message-Id"] = f"{uuid.uuid4()}.42"
        with smtplib.SMTP("127.0.0.1", own.port, timeout=10) as smtp:
            smtp.send_message(message)
            smtp.send_message(message)
        leak.write_text(f"connecting with {live.servers.secrets[0]}\n")
        verdict = check(live, [], drain_timeout=1)
    finally:
        leak.unlink(missing_ok=True)
        live.servers.smtp = shared
        own.stop()
    assert {v.invariant for v in verdict.violations} == {"I3", "I7"}, verdict
