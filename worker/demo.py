"""`carillon demo`: sample workflows run end to end on a fresh stack, each task printed."""

from __future__ import annotations

import os
import shutil
import time
from importlib import resources
from pathlib import Path
from typing import Any

from rich.console import Console
from sqlalchemy import select

ORG = "demo"
SAMPLES = ("nightlyBatch.yaml", "cmsSend.yaml")
#: The seed's trigger example: strings for the boolean and the date, as a CMS would send.
SEED_PARAMETERS = {
    "audience": "audience",
    "email": "anna.varney@mail.com",
    "template": "05",
    "contentURL": "http://www.adobe.com",
    "test": "false",
    "segmentCode": "my segment",
    "attribute": "2019-04-03 08:17:19.100Z",
}
STYLE = {
    "done": "green",
    "failed": "red",
    "aborted": "yellow",
    "waiting": "cyan",
    "held": "magenta",
    "running": "blue",
    "pending": "white",
}


def _prepare_environment() -> Path:
    """A fresh embedded home unless the user pointed us at real servers."""
    home = Path(os.environ.get("CARILLON_HOME", ".carillon")).absolute()
    if not os.environ.get("CARILLON_DATABASE_URL") and not os.environ.get("CARILLON_BROKER_URL"):
        home = home / "demo"
        shutil.rmtree(home, ignore_errors=True)
    os.environ["CARILLON_HOME"] = str(home)
    os.environ.setdefault("CARILLON_TICK_SECONDS", "0.5")
    os.environ.setdefault("CARILLON_SIGNAL_MIN_INTERVAL", "600")
    return home


def run(console: Console, timeout: float) -> int:
    home = _prepare_environment()
    from worker import catalog, definitions, runtime, schema, stack
    from worker.models import StateEvent, Task, Workflow

    runtime.settings.cache_clear()
    settings = runtime.settings()
    schema.upgrade(runtime.db(), settings.data_model)
    console.print(
        f"[bold]Carillon demo[/bold]: database {settings.database_url}, "
        f"broker {settings.broker_url}"
    )
    procs = stack.Stack(dict(os.environ), home / "logs")
    procs.start("worker", stack.worker_command(2))
    procs.start("beat", stack.beat_command(settings))
    try:
        engine = runtime.engine()
        with runtime.sessions()() as s, s.begin():
            org = catalog.ensure_org(s, ORG)
            for name in SAMPLES:
                text = resources.files("worker.samples").joinpath(name).read_text("utf-8")
                saved = catalog.save_definition(s, org, definitions.load_text(text))
                console.print(f"loaded [bold]{saved.name}[/bold] (@{saved.pkey})")
        for name in ("nightlyBatch", "cmsSend"):
            engine.command(None, name, "start")
            console.print(f"started {name}")
        trigger = engine.trigger(None, "cmsSend", "signal1", "demo-cms", dict(SEED_PARAMETERS))
        console.print(
            f"triggered cmsSend/signal1 with the seed's parameters -> job {trigger.job_id}"
        )
        return _follow(console, runtime, procs, timeout, StateEvent, Task, Workflow, select)
    finally:
        procs.stop()


def _follow(
    console: Console,
    runtime: Any,
    procs: Any,
    timeout: float,
    StateEvent: Any,
    Task: Any,
    Workflow: Any,
    select: Any,
) -> int:
    """Print every task state change until both workflows are finished."""
    last_event = 0
    deadline = time.monotonic() + timeout
    started = time.monotonic()
    names: dict[int, str] = {}
    while time.monotonic() < deadline:
        with runtime.sessions()() as s:
            if not names:
                names = dict(s.execute(select(Workflow.id, Workflow.name)).tuples().all())
            events = s.execute(
                select(
                    StateEvent.id,
                    StateEvent.at,
                    StateEvent.workflow_id,
                    StateEvent.entity,
                    StateEvent.to_state,
                    Task.activity,
                    Task.attempt,
                )
                .outerjoin(Task, Task.id == StateEvent.entity_id)
                .where(StateEvent.id > last_event)
                .order_by(StateEvent.id)
            ).all()
            states = dict(s.execute(select(Workflow.name, Workflow.state)).tuples().all())
        for event in events:
            last_event = event.id
            color = STYLE.get(event.to_state, "white")
            what = event.activity if event.entity == "task" else "(workflow)"
            console.print(
                f"{event.at:%H:%M:%S.%f}"[:-3] + f"  {names.get(event.workflow_id, '?'):<13}"
                f" {what:<10} [{color}]{event.to_state}[/{color}]"
            )
        if states and all(state in ("finished", "stopped", "error") for state in states.values()):
            break
        if procs.dead():
            console.print(f"[red]{', '.join(procs.dead())} died; see the logs[/red]")
            return 1
        time.sleep(0.2)
    return _summary(console, runtime, Task, Workflow, select, time.monotonic() - started)


def _summary(
    console: Console, runtime: Any, Task: Any, Workflow: Any, select: Any, elapsed: float
) -> int:
    from rich.table import Table
    from sqlalchemy import func

    table = Table("workflow", "state", "tasks done", "tasks aborted", "tasks failed")
    ok = True
    with runtime.sessions()() as s:
        for wf in s.scalars(select(Workflow).order_by(Workflow.name)):
            counts = dict(
                s.execute(
                    select(Task.state, func.count())
                    .where(Task.workflow_id == wf.id)
                    .group_by(Task.state)
                )
                .tuples()
                .all()
            )
            table.add_row(
                wf.name,
                wf.state,
                str(counts.get("done", 0)),
                str(counts.get("aborted", 0)),
                str(counts.get("failed", 0)),
            )
            ok = ok and wf.state == "finished"
    console.print(table)
    if ok:
        console.print(f"[green]both sample workflows finished in {elapsed:.1f} s[/green]")
        return 0
    console.print("[red]the sample workflows did not all finish; see .carillon/demo/logs[/red]")
    return 1
