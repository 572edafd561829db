"""`carillon status`: the monitoring page's summary in the terminal, as rich tables."""

from __future__ import annotations

from typing import Any

import click
from rich.console import Console
from rich.table import Table

from worker.cli_common import _runtime

console = Console()


def _workflows_table(rows: list[tuple[str, str, int]]) -> Table:
    states = sorted({state for _org, state, _n in rows})
    table = Table("organization", *states, "total", title="Workflows by state")
    by_org: dict[str, dict[str, int]] = {}
    for org, state, number in rows:
        by_org.setdefault(org, {})[state] = number
    for org, found in sorted(by_org.items()):
        cells = [str(found.get(state, 0)) for state in states]
        table.add_row(org, *cells, str(sum(found.values())))
    return table


def _tasks_table(counts: dict[str, int]) -> Table:
    table = Table("state", "tasks", title="Tasks by state")
    for state, number in counts.items():
        table.add_row(state, str(number))
    table.add_row("total", str(sum(counts.values())))
    return table


def _technical_table(items: list[dict[str, Any]]) -> Table:
    table = Table(
        "technical workflow", "enabled", "state", "last tick", "last outcome", "next run",
        title="Technical workflows",
    )  # fmt: skip
    for item in items:
        table.add_row(
            item["name"],
            "yes" if item["enabled"] else "no",
            item["state"] or "-",
            item["lastTick"] or "-",
            (item["lastOutcome"] or "-")[:60],
            item["nextRun"] or "-",
        )
    return table


def _workers_tables(snapshot: dict[str, Any]) -> list[Table]:
    workers = Table("worker", "active", "processed", "queues", "load", title="Celery workers")
    for worker in snapshot["workers"]:
        load = worker["loadavg"]
        workers.add_row(
            worker["name"],
            str(worker["active"]) if worker["active"] is not None else "?",
            str(worker["processed"]) if worker["processed"] is not None else "?",
            ", ".join(worker["queues"]),
            " ".join(str(v) for v in load) if load else "?",
        )
    if not snapshot["workers"]:
        workers.add_row("(none answered)", "", "", "", "")
    queues = Table("queue", "depth", title="Queue depths")
    for queue in snapshot["queues"]:
        depth = queue["depth"]
        queues.add_row(queue["name"], "unknown" if depth is None else str(depth))
    return [workers, queues]


@click.command()
@click.option("--org", help="only this organization's workflows and tasks")
@click.option(
    "--workers/--no-workers",
    default=True,
    show_default=True,
    help="ask the Celery workers (about 1 s) and read the queue depths",
)
def status(org: str | None, workers: bool) -> None:
    """Workflows by state per organization, tasks by state, technical workflows, Celery
    workers and queue depths: the summary of the monitoring page (/monitoring)."""
    from sqlalchemy import select

    from worker import monitoring
    from worker.models import Organization

    runtime = _runtime()
    with runtime.sessions()() as s, s.begin():
        rows = monitoring.workflows_by_org(s)
        org_id = None
        if org is not None:
            org_id = s.execute(
                select(Organization.id).where(Organization.name == org)
            ).scalar_one_or_none()
            if org_id is None:
                raise click.BadParameter(f"no organization named {org!r}", param_hint="--org")
            rows = [row for row in rows if row[0] == org]
        counts = monitoring.task_counts(s, org_id)
        technical = monitoring.technical(s) if org is None else []
    console.print(_workflows_table(rows))
    console.print(_tasks_table(counts))
    if technical:
        console.print(_technical_table(technical))
    if workers:
        from worker import monitoring_workers

        def celery_app() -> Any:
            from worker.celery_app import app

            return app

        for table in _workers_tables(monitoring_workers.snapshot(runtime.settings(), celery_app)):
            console.print(table)
