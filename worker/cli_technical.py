"""`carillon technical ...`: admins list, pause, resume, reschedule and run technical workflows."""

from __future__ import annotations

import json
import sys

import click
from rich.console import Console
from rich.table import Table

from worker.cli_common import _fail, _runtime
from worker.errors import CarillonError

console = Console()


@click.group()
def technical() -> None:
    """The technical workflows (cleanup, billing, kpiSharing...): fired by beat once per slot.

    Changes are read by beat within CARILLON_TECHNICAL_REFRESH seconds; nothing restarts.
    """


@technical.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def list_(as_json: bool) -> None:
    """Every technical workflow: enabled, schedule, next fire, last slot and outcome."""
    from worker.technical import admin

    runtime = _runtime()
    with runtime.sessions()() as s, s.begin():
        items = admin.list_all(s)
    if as_json:
        click.echo(json.dumps(items, indent=2))
        return
    table = Table("id", "enabled", "schedule", "next fire", "last slot", "last outcome", "state")
    for item in items:
        table.add_row(
            item["id"],
            "yes" if item["enabled"] else "paused",
            json.dumps(item["schedule"]),
            (item["nextFires"] or ["-"])[0],
            item["lastSlot"] or "-",
            item["lastOutcome"] or "-",
            item["state"] or "not installed",
        )
    console.print(table)


def _set_enabled(name: str, enabled: bool) -> None:
    from worker.technical import admin

    runtime = _runtime()
    try:
        with runtime.sessions()() as s, s.begin():
            admin.set_enabled(s, name, enabled)
    except CarillonError as exc:
        _fail(exc)
    click.echo(f"{name}: {'resumed' if enabled else 'paused'}")


@technical.command()
@click.argument("name")
def pause(name: str) -> None:
    """Stop beat from firing NAME (a run in progress goes on)."""
    _set_enabled(name, False)


@technical.command()
@click.argument("name")
def resume(name: str) -> None:
    """Let beat fire NAME again at its schedule."""
    _set_enabled(name, True)


@technical.command()
@click.argument("name")
@click.argument("schedule_json")
def schedule(name: str, schedule_json: str) -> None:
    """Set NAME's schedule, e.g. '{"frequency": "daily", "times": ["05:30"]}'; 'default'
    restores the seed's."""
    from worker.technical import admin

    if schedule_json == "default":
        options = None
    else:
        try:
            options = json.loads(schedule_json)
        except ValueError as exc:
            click.echo(f"error: the schedule is not JSON ({exc})", err=True)
            sys.exit(2)
    runtime = _runtime()
    try:
        with runtime.sessions()() as s, s.begin():
            admin.set_schedule(s, name, options)
            next_fires = admin.describe(s, name)["nextFires"]
    except CarillonError as exc:
        _fail(exc)
    click.echo(f"{name}: next fire {next_fires[0] if next_fires else 'never (paused?)'}")


@technical.command()
@click.argument("name")
def run(name: str) -> None:
    """Run NAME now, even paused; never on top of a run in progress."""
    from worker.technical import admin

    runtime = _runtime()
    try:
        result = admin.run_now(runtime.engine(), name)
    except CarillonError as exc:
        _fail(exc)
    click.echo(f"{name}: {result.status}" + (f" ({result.detail})" if result.detail else ""))
