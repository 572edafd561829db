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
SAMPLES = ("nightlyBatch.yaml", "cmsSend.yaml", "profileImport.yaml")
#: Profiles in the generated CRM extract that profileImport downloads, loads and segments.
DEMO_PROFILES = 20_000
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
    # The demo's CRM extract is served on loopback, which downloads may not reach otherwise.
    allowed = os.environ.get("CARILLON_TRANSFER_ALLOW_HOSTS", "")
    os.environ["CARILLON_TRANSFER_ALLOW_HOSTS"] = ",".join(filter(None, [allowed, "127.0.0.1"]))
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
    from worker import demo_data

    exports = home / "crm-exports"
    exports.mkdir(parents=True, exist_ok=True)
    extract = demo_data.write_profiles(exports / "profiles.csv.gz", DEMO_PROFILES)
    server, base_url = demo_data.serve(exports)
    console.print(
        f"serving a CRM extract of {DEMO_PROFILES:,} profiles ({demo_data.gz_size(extract)}) "
        f"at {base_url}/{extract.name}"
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
        for name in ("nightlyBatch", "cmsSend", "profileImport"):
            engine.command(None, name, "start")
            console.print(f"started {name}")
        trigger = engine.trigger(None, "cmsSend", "signal1", "demo-cms", dict(SEED_PARAMETERS))
        console.print(
            f"triggered cmsSend/signal1 with the seed's parameters -> job {trigger.job_id}"
        )
        url = f"{base_url}/{extract.name}"
        trigger = engine.trigger(None, "profileImport", "signal1", "demo-crm", {"url": url})
        console.print(f"triggered profileImport/signal1 with url={url} -> job {trigger.job_id}")
        code = _follow(console, runtime, procs, timeout, StateEvent, Task, Workflow, select)
        _show_data_results(console, runtime)
        return code
    finally:
        procs.stop()
        server.shutdown()
        server.server_close()


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
    """Print every task state change until the workflows are finished; bars for long work."""
    from rich.progress import BarColumn, Progress, TextColumn

    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,.0f} {task.fields[unit]}"),
        console=console,
        transient=True,
    )
    bars: dict[str, Any] = {}
    with progress:
        return _follow_events(
            progress, bars, runtime, procs, timeout, StateEvent, Task, Workflow, select
        )


def _follow_events(
    progress: Any,
    bars: dict[str, Any],
    runtime: Any,
    procs: Any,
    timeout: float,
    StateEvent: Any,
    Task: Any,
    Workflow: Any,
    select: Any,
) -> int:
    console = progress.console
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
            running = s.execute(
                select(Task.id, Task.activity, Task.progress).where(Task.state == "running")
            ).all()
        for task in running:
            if not task.progress:  # JSON null: no progress reported
                continue
            total = task.progress.get("total")
            if task.id not in bars:
                bars[task.id] = progress.add_task(
                    task.activity, total=total, unit=task.progress.get("unit", "records")
                )
            progress.update(bars[task.id], completed=task.progress.get("done", 0), total=total)
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
        console.print(f"[green]the sample workflows finished in {elapsed:.1f} s[/green]")
        return 0
    console.print("[red]the sample workflows did not all finish; see .carillon/demo/logs[/red]")
    return 1


def _show_data_results(console: Console, runtime: Any) -> None:
    """What profileImport left behind: its log of counts and the files it extracted."""
    from worker import demo_data
    from worker.models import LogLine, Task, Workflow

    with runtime.sessions()() as s:
        lines = s.execute(
            select(LogLine.activity, LogLine.message)
            .join(Workflow, Workflow.id == LogLine.workflow_id)
            .where(Workflow.name == "profileImport", LogLine.level == "info")
            .order_by(LogLine.id)
        ).all()
        files = s.execute(
            select(Task.activity, Task.outlets, Task.inputs)
            .join(Workflow, Workflow.id == Task.workflow_id)
            .where(Workflow.name == "profileImport", Task.activity_type == "end")
        ).all()
    console.print("[bold]profileImport log[/bold]")
    for activity, message in lines:
        console.print(f"  {activity or '':<15} {message}")
    for _activity, _outlets, inputs in files:
        for producer, carried in sorted((inputs or {}).items()):
            if carried.get("kind") == "file" and Path(carried["path"]).is_file():
                console.print(f"  {producer} wrote {carried['path']}:")
                for line in demo_data.sample_lines(Path(carried["path"])):
                    console.print(f"    {line}")
