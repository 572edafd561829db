"""Two beat processes, one of them restarted, on a fast clock: every slot fires exactly once."""

from __future__ import annotations

import datetime as dt
import signal

from sqlalchemy import func, select

from tests.integration.conftest import Stack, wait_for
from worker.models import Job, Workflow
from worker.queues import CONTROL_QUEUE
from worker.stack import beat_command
from worker.technical import install
from worker.technical.beat import FIRE_TASK
from worker.technical.tables import technical_fire

PERIOD = 3  # seconds between slots (CARILLON_TECHNICAL_EVERY)
SLOTS = 6  # slots to observe before stopping the beats


def _beat(stack: Stack, name: str) -> None:
    command = beat_command(stack.settings)
    command[command.index("--schedule") + 1] = str(stack.home / f"{name}-schedule")
    stack.spawn(
        name,
        [*command, "--pidfile", str(stack.home / f"{name}.pid")],
        CARILLON_TECHNICAL_WORKFLOWS="1",
        CARILLON_TECHNICAL_EVERY=str(PERIOD),
        CARILLON_TECHNICAL_REFRESH="1",
    )


def _fires(stack: Stack, name: str) -> list[tuple[dt.datetime, str, int]]:
    with stack.sessions() as s:
        rows = s.execute(
            select(technical_fire.c.slot, technical_fire.c.outcome, technical_fire.c.sends)
            .where(technical_fire.c.name == name)
            .order_by(technical_fire.c.slot)
        ).all()
    return [(slot, outcome, sends) for slot, outcome, sends in rows]


def test_two_beats_fire_each_slot_once_and_a_restarted_beat_adds_nothing(stack: Stack) -> None:
    _beat(stack, "beatA")
    _beat(stack, "beatB")
    wait_for(lambda: len(_fires(stack, "cleanup")) >= SLOTS // 2, 60, "the first slots")
    # Beat B dies at an arbitrary moment and comes back with its stale schedule file.
    stack.kill("beatB", signal.SIGKILL)
    _beat(stack, "beatB")
    wait_for(lambda: len(_fires(stack, "cleanup")) >= SLOTS, 60, "more slots")
    stack.kill("beatA", signal.SIGTERM)
    stack.kill("beatB", signal.SIGTERM)
    # A canary behind every send in the control queue: once it fired, the sends before it ran.
    canary = dt.datetime.now(dt.UTC).replace(microsecond=0)
    stack.celery.send_task(
        FIRE_TASK,
        args=("reportSendingNow",),
        kwargs={"slot": canary.isoformat()},
        queue=CONTROL_QUEUE,
    )
    wait_for(
        lambda: any(
            s == canary.replace(tzinfo=None) for s, _, _ in _fires(stack, "reportSendingNow")
        ),
        60,
        "the canary fire",
    )
    wait_for(lambda: stack.state("cleanup") != "started", 60, "the last cleanup run to end")

    fires = _fires(stack, "cleanup")
    slots = [slot for slot, _, _ in fires]
    # Consecutive slots, none missing between the first and the last, each once.
    assert slots == [slots[0] + dt.timedelta(seconds=PERIOD * i) for i in range(len(slots))]
    assert all(outcome for _, outcome, _ in fires), fires
    # Both beats sent slots; the second send of each was absorbed.
    assert any(sends >= 2 for _, _, sends in fires), fires
    started = [slot for slot, outcome, _ in fires if outcome == "started"]
    assert started, fires
    assert all(
        outcome in ("started", "skipped: the previous run is still going")
        for _, outcome, _ in fires
    ), fires
    with stack.sessions() as s:
        org_id = install.ensure_installed(s)
        workflow_id = s.scalars(
            select(Workflow.id).where(Workflow.org_id == org_id, Workflow.name == "cleanup")
        ).one()
        jobs = s.execute(
            select(func.count()).select_from(Job).where(Job.workflow_id == workflow_id)
        ).scalar_one()
    # One run per started slot, never two on top of each other.
    assert jobs == len(started)
    # On-demand workflows are never fired by beat: only the canary's row exists.
    assert [slot for slot, _, _ in _fires(stack, "reportSendingNow")] == [
        canary.replace(tzinfo=None)
    ]
