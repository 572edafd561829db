"""The `carillon` command: run the stack, manage credentials and workflows, show status."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from worker import cli_status, cli_technical, config
from worker.cli_common import _fail, _runtime
from worker.errors import CarillonError

console = Console()


def _runtime_with_technical() -> Any:
    """The runtime, with the technical workflows installed: a stack's first start."""
    from worker.technical import install

    runtime = _runtime()
    with runtime.sessions()() as s, s.begin():
        install.ensure_installed(s)
    return runtime


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Carillon: campaign workflows on Celery.

    Configuration comes from CARILLON_* environment variables (see the README). With none
    set, everything runs embedded: SQLite and a filesystem broker in ./.carillon.
    """


@main.command()
def migrate() -> None:
    """Create or upgrade the database schema."""
    _runtime()
    click.echo("schema is up to date")


@main.command()
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=None,
    help="API port (default CARILLON_API_PORT, 8080).",
)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 64),
    default=2,
    show_default=True,
    help="Worker processes.",
)
def up(port: int | None, concurrency: int) -> None:
    """Run API, worker and beat as child processes until Ctrl-C or SIGTERM."""
    from worker import stack

    runtime = _runtime_with_technical()
    settings = runtime.settings()
    port = port or settings.api_port
    env = dict(os.environ, CARILLON_API_PORT=str(port))
    config.record_served_url(Path(settings.home), f"http://{settings.api_host}:{port}")
    procs = stack.Stack(env, Path(settings.home) / "logs")
    procs.start("worker", stack.worker_command(concurrency))
    procs.start("beat", stack.beat_command(settings))
    procs.start("api", stack.api_command(settings.api_host, port))
    console.print(f"API on http://{settings.api_host}:{port}  (health: /healthz)")
    console.print(f"monitoring page on http://{settings.api_host}:{port}/monitoring")
    console.print(f"database {settings.database_url}  broker {settings.broker_url}")
    console.print(f"logs in {Path(settings.home) / 'logs'}; Ctrl-C stops everything")
    # The children run in their own sessions (a Ctrl-C reaches only us, and we stop them in
    # order), so a supervisor's SIGTERM or a closed terminal must be turned into that same
    # stop: by default either would end this process and orphan all of them.
    # A signal we were started with ignored stays ignored (nohup's SIGHUP, a background
    # job's SIGINT): that was the caller's choice.
    stop_on = [
        signum
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
        if signal.getsignal(signum) is not signal.SIG_IGN
    ]
    for signum in stop_on:
        signal.signal(signum, _interrupt)
    try:
        while not procs.dead():
            time.sleep(0.5)
        console.print(f"[red]stopped: {', '.join(procs.dead())} exited; see the logs[/red]")
    except KeyboardInterrupt:
        console.print("stopping...")
    finally:
        for signum in stop_on:
            signal.signal(signum, signal.SIG_IGN)  # a second Ctrl-C must not cut the stop short
        procs.stop()
    sys.exit(0)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


@main.command()
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="Port to listen on.")
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=2,
    show_default=True,
    help="gunicorn worker processes.",
)
def api(port: int | None, workers: int) -> None:
    """Serve the REST API with gunicorn."""
    from worker import stack

    settings = _runtime().settings()
    port = port or settings.api_port
    config.record_served_url(Path(settings.home), f"http://{settings.api_host}:{port}")
    command = stack.api_command(settings.api_host, port, workers)
    os.execv(command[0], command)


@main.command()
@click.option(
    "--concurrency",
    "-c",
    type=click.IntRange(1, 64),
    default=2,
    show_default=True,
    help="Worker processes.",
)
@click.option(
    "--queues",
    "-Q",
    default="",
    help="Comma-separated queues (default: CARILLON_QUEUES, else all); carillon.channel "
    "brings carillon.channel.batch along.",
)
@click.option("--name", "-n", default="w1", show_default=True, help="Worker node name.")
def worker(concurrency: int, queues: str, name: str) -> None:
    """Run a Celery worker consuming the activity queues."""
    from worker import queues as queue_names
    from worker import stack

    try:
        named = queues.split(",") if queues else config.Settings.from_env().queues
        chosen = queue_names.worker_queues(named)
    except CarillonError as exc:
        _fail(exc)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--queues / CARILLON_QUEUES") from None
    _runtime_with_technical()
    command = stack.worker_command(concurrency, chosen, name)
    os.execv(command[0], command)


@main.command()
def beat() -> None:
    """Run Celery beat: the engine tick (timers, repairs) and the technical workflows."""
    from worker import stack

    command = stack.beat_command(_runtime_with_technical().settings())
    os.execv(command[0], command)


@main.command()
@click.option(
    "--timeout",
    type=click.FloatRange(5, 600),
    default=90,
    show_default=True,
    help="Seconds to wait for the sample workflows to finish.",
)
def demo(timeout: float) -> None:
    """Run the sample workflows end to end on a fresh embedded stack, then exit.

    Includes profileImport: a generated CRM extract served on loopback is downloaded,
    decompressed, loaded, upserted into profiles, queried, segmented and extracted.
    """
    from worker import demo as demo_module

    sys.exit(demo_module.run(console, timeout))


@main.group()
def credentials() -> None:
    """API credentials of organizations."""


@credentials.command("create")
@click.option("--org", required=True, help="Organization name (created if new).")
def credentials_create(org: str) -> None:
    """Create an API key and bearer token; prints {"org", "apiKey", "token"} once."""
    from worker import catalog

    runtime = _runtime()
    try:
        with runtime.sessions()() as s, s.begin():
            created = catalog.create_credentials(s, org)
    except CarillonError as exc:
        _fail(exc)
    click.echo(json.dumps(created))


@credentials.command("list")
@click.option("--org", default=None, help="Only this organization's keys.")
def credentials_list(org: str | None) -> None:
    """List API keys (their public prefix only) with creation and revocation dates."""
    from sqlalchemy import select

    from worker.models import ApiKey, Organization

    runtime = _runtime()
    table = Table("org", "key", "created", "revoked")
    with runtime.sessions()() as s:
        stmt = select(Organization.name, ApiKey).join(ApiKey, ApiKey.org_id == Organization.id)
        if org:
            stmt = stmt.where(Organization.name == org)
        for name, key in s.execute(stmt.order_by(Organization.name, ApiKey.id)).all():
            revoked = f"{key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else ""
            table.add_row(
                name, f"ck_{key.key_prefix}_...", f"{key.created_at:%Y-%m-%d %H:%M}", revoked
            )
    console.print(table)


@credentials.command("revoke")
@click.argument("key")
def credentials_revoke(key: str) -> None:
    """Revoke an API key, given whole or as its `ck_<prefix>` start (see `credentials list`)."""
    from sqlalchemy import update

    from worker.db import utcnow
    from worker.models import ApiKey

    parts = key.split("_")
    if len(parts) < 2 or parts[0] != "ck" or not parts[1]:
        click.echo("error: give the key or its ck_<prefix> start", err=True)
        sys.exit(2)
    runtime = _runtime()
    with runtime.sessions()() as s, s.begin():
        found = s.execute(
            update(ApiKey)
            .where(ApiKey.key_prefix == parts[1], ApiKey.revoked_at.is_(None))
            .values(revoked_at=utcnow())
            .returning(ApiKey.id)
        ).first()
    if found is None:
        click.echo(f"error: no active key ck_{parts[1]}", err=True)
        sys.exit(2)
    click.echo(f"key ck_{parts[1]}_... revoked")


@main.group()
def workflow() -> None:
    """Import, list and command workflows."""


@workflow.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--org", required=True, help="Organization owning the workflow.")
def workflow_import(file: Path, org: str) -> None:
    """Validate and save a JSON or YAML definition as a new version."""
    from worker import catalog, definitions

    runtime = _runtime()
    try:
        body = definitions.load_text(file.read_text(encoding="utf-8"))
        with runtime.sessions()() as s, s.begin():
            saved = catalog.save_definition(s, catalog.ensure_org(s, org), body)
            click.echo(f"{saved.name} version {saved.latest_version} saved (PKey @{saved.pkey})")
    except UnicodeDecodeError:
        click.echo("error: the file is not UTF-8 text", err=True)
        sys.exit(2)
    except CarillonError as exc:
        _fail(exc)


@workflow.command("list")
@click.option("--org", default=None, help="Only this organization's workflows.")
def workflow_list(org: str | None) -> None:
    """List workflows with their state and version."""
    from worker import catalog

    runtime = _runtime()
    table = Table("org", "id", "PKey", "label", "state", "version")
    with runtime.sessions()() as s:
        owner = catalog.org_by_name(s, org) if org else None
        for wf in catalog.list_workflows(s, owner):
            table.add_row(
                str(wf.org_id),
                wf.name,
                f"@{wf.pkey}",
                wf.label,
                wf.state,
                str(wf.running_version or wf.latest_version),
            )
    console.print(table)


def _command(method: str, ref: str) -> None:
    runtime = _runtime()
    try:
        runtime.engine().command(None, ref, method)
        with runtime.sessions()() as s:
            state = runtime.engine().find_workflow(s, None, ref).state
    except CarillonError as exc:
        _fail(exc)
    click.echo(f"{ref}: {method} applied; state is {state}")


for _method in ("start", "pause", "resume", "stop"):

    def _make(method: str) -> Any:
        @workflow.command(method, help=f"Apply the '{method}' command to workflow ID.")
        @click.argument("workflow_id")
        def _cmd(workflow_id: str) -> None:
            _command(method, workflow_id)

        return _cmd

    _make(_method)


@workflow.command("retry")
@click.argument("task_id")
def workflow_retry(task_id: str) -> None:
    """Run a failed task again."""
    try:
        _runtime().engine().retry(task_id)
    except CarillonError as exc:
        _fail(exc)
    click.echo(f"task {task_id} re-enqueued")


@workflow.command("requeue")
@click.argument("task_id")
def workflow_requeue(task_id: str) -> None:
    """Run a dead task again with its attempts reset (fix what killed its worker first).

    A task is dead when its worker was lost CARILLON_MAX_ATTEMPTS times in a row (the
    activity crashed the process: OOM, a segfault); its workflow waits in error."""
    try:
        _runtime().engine().requeue(task_id)
    except CarillonError as exc:
        _fail(exc)
    click.echo(f"task {task_id} requeued (attempts reset)")


@workflow.command("skip")
@click.argument("task_id")
def workflow_skip(task_id: str) -> None:
    """Mark a failed, held, waiting or pending task done and continue after it."""
    try:
        _runtime().engine().skip(task_id)
    except CarillonError as exc:
        _fail(exc)
    click.echo(f"task {task_id} skipped")


@workflow.command("rerun")
@click.argument("workflow_id")
@click.argument("activity")
def workflow_rerun(workflow_id: str, activity: str) -> None:
    """Run ACTIVITY of WORKFLOW_ID again, with the vars of its last run."""
    try:
        task_id = _runtime().engine().rerun_from(None, workflow_id, activity)
    except CarillonError as exc:
        _fail(exc)
    click.echo(f"task {task_id} created for {activity}")


@workflow.command("preview")
@click.argument("workflow_id")
@click.argument("activity")
@click.option("--count", type=click.IntRange(1, 100), default=10, show_default=True)
def workflow_preview(workflow_id: str, activity: str, count: int) -> None:
    """The next fires of a scheduler activity (latest version), in UTC and its time zone."""
    import datetime as dt

    from worker import schedules

    runtime = _runtime()
    engine = runtime.engine()
    try:
        with runtime.sessions()() as s:
            wf = engine.find_workflow(s, None, workflow_id)
            definition = engine.definition(wf.id, wf.latest_version, s)
        node = definition.activities.get(activity)
        if node is None or node.type != "scheduler":
            click.echo(f"error: '{activity}' is not a scheduler activity of {wf.name}", err=True)
            sys.exit(2)
        schedule = schedules.parse_schedule(node.options)
    except CarillonError as exc:
        _fail(exc)
    for fire in schedules.preview(schedule, dt.datetime.now(dt.UTC), count):
        local = fire.astimezone(schedule.zone)
        click.echo(f"{fire:%Y-%m-%d %H:%M} UTC   {local:%Y-%m-%d %H:%M %Z}")


@workflow.command("tasks")
@click.argument("workflow_id")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
def workflow_tasks(workflow_id: str, limit: int) -> None:
    """Show a workflow's latest tasks, with why each waiting or held one is stuck."""
    from sqlalchemy import select

    from worker.models import Task

    runtime = _runtime()
    engine = runtime.engine()
    table = Table("task", "activity", "state", "executions", "why / outcome")
    try:
        with runtime.sessions()() as s:
            wf = engine.find_workflow(s, None, workflow_id)
            rows = s.scalars(
                select(Task)
                .where(Task.workflow_id == wf.id)
                .order_by(Task.created_at.desc())
                .limit(limit)
            ).all()
    except CarillonError as exc:
        _fail(exc)
    from worker.celery_app import app as celery_app
    from worker.tasks import queue_depth

    def depth(queue: str) -> int | None:
        return queue_depth(celery_app, queue)

    for task in rows:
        if task.state in ("waiting", "held", "pending", "failed"):
            why = engine.explain(task.id, depth)
        else:
            why = ",".join(task.outlets or []) or (task.reason or "")
        table.add_row(task.id[:8], task.activity, task.state, str(task.attempt), why)
    console.print(table)


@main.group()
def validation() -> None:
    """Human validations (the validation activity): list them, approve or reject one."""


@validation.command("list")
@click.option("--org", default=None, help="Only this organization's validations.")
@click.option(
    "--state",
    type=click.Choice(["pending", "approved", "rejected", "timedOut", "cancelled", "all"]),
    default="pending",
    show_default=True,
    help="Only validations in this state ('all' for every state).",
)
@click.option("--assignee", default=None, help="Only those assigned to this user.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True)
def validation_list(org: str | None, state: str, assignee: str | None, limit: int) -> None:
    """List validations, oldest first, with their PKey for approve/reject."""
    from worker import validations

    runtime = _runtime()
    engine = runtime.engine()
    table = Table(
        "PKey", "state", "org", "workflow", "activity", "subject", "assignee", "group", "due"
    )
    with runtime.sessions()() as s:
        stmt = validations.list_ids(
            None,
            state=None if state == "all" else state,
            assignee=assignee,
            org_name=org,
        )
        ids = list(s.scalars(stmt.limit(limit)))
        for found in validations.describe(engine, s, ids):
            table.add_row(
                found["PKey"],
                found["state"],
                found["org"],
                found["workflow"] or "",
                found["activity"],
                found["subject"],
                found["assignee"],
                found["group"],
                found["dueAt"] or "never",
            )
    console.print(table)


def _decide(pkey: str, decision: str, comment: str | None, user: str) -> None:
    from worker import validations

    problem = validations.check_decision(decision, comment, user)
    if problem:
        click.echo(f"error: {problem}", err=True)
        sys.exit(2)
    try:
        found = validations.decide(_runtime().engine(), None, pkey, decision, comment, user)
    except CarillonError as exc:
        _fail(exc)
    click.echo(f"{found['PKey']}: {found['state']} by {found['decidedBy']}")


def _login() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name in a bare container
        return "cli"


@validation.command("approve")
@click.argument("pkey")
@click.option("--comment", default=None, help="Why (optional when approving).")
@click.option("--user", default=None, help="Who decides (default: your login name).")
def validation_approve(pkey: str, comment: str | None, user: str | None) -> None:
    """Approve the pending validation PKEY: its workflow continues on `approved`."""
    _decide(pkey, "approve", comment, user or _login())


@validation.command("reject")
@click.argument("pkey")
@click.option("--comment", required=True, help="Why it is rejected (required).")
@click.option("--user", default=None, help="Who decides (default: your login name).")
def validation_reject(pkey: str, comment: str, user: str | None) -> None:
    """Reject the pending validation PKEY: its workflow continues on `rejected`."""
    _decide(pkey, "reject", comment, user or _login())


main.add_command(cli_status.status)
main.add_command(cli_technical.technical)

if __name__ == "__main__":
    main()
