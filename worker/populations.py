"""Working tables: where a population (ids plus enrichment columns) lives between activities.

A targeting activity writes its result with one set-based statement (`CREATE UNLOGGED
TABLE ... AS SELECT` on PostgreSQL) inside its task's transaction, so a crash leaves no
half table, and passes on a small descriptor: `{"kind": "population", "table", "resource",
"count", "columns"}`. Names derive from the task id and attempt, so a redelivered task
never collides with an earlier attempt. Each table is registered in `working_table`, and
dropped with its job's history.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import Select, TableClause, column, delete, func, insert, select, table
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ClauseElement, Executable

from worker.errors import ActivityError
from worker.marketing import working_table

Population = dict[str, Any]


class _CreateTableAs(Executable, ClauseElement):
    """`CREATE [UNLOGGED] TABLE name AS <select>`, keeping the select's bound parameters."""

    inherit_cache = False

    def __init__(self, name: str, query: Select[Any]) -> None:
        self.name = name
        self.query = query


@compiles(_CreateTableAs)
def _compile_create_table_as(element: _CreateTableAs, compiler: SQLCompiler, **kw: Any) -> str:
    unlogged = "UNLOGGED " if compiler.dialect.name == "postgresql" else ""
    name = compiler.preparer.quote(element.name)
    return f"CREATE {unlogged}TABLE {name} AS {compiler.process(element.query, **kw)}"


def table_name(task_id: str, attempt: int, index: int = 0) -> str:
    """`wk_<task id hex>_<attempt>_<index>`: at most 63 characters (PostgreSQL's limit)."""
    return f"wk_{task_id.replace('-', '')[:32]}_{attempt}_{index}"


class _Owner(Protocol):
    """What identifies the task creating a working table: an activity's Context, or Owner."""

    session: Session
    org_id: int
    workflow_id: int
    job_id: str
    task_id: str
    attempt: int


@dataclass
class Owner:
    """A task's identity without a whole Context (scripts, tests)."""

    session: Session
    org_id: int
    workflow_id: int
    job_id: str
    task_id: str
    attempt: int


def create(owner: _Owner, resource: str, query: Select[Any], index: int = 0) -> Population:
    """Materialise `query` (first column: the id) as a working table; return its descriptor."""
    s = owner.session
    name = table_name(owner.task_id, owner.attempt, index)
    s.execute(_CreateTableAs(name, query))
    count = s.execute(select(func.count()).select_from(table(name))).scalar_one()
    register(owner, name, resource, count)
    return descriptor(name, resource, count, [str(c.key) for c in query.selected_columns][1:])


def register(owner: _Owner, name: str, resource: str, count: int) -> None:
    """Record a working table so it is dropped with its job's history."""
    owner.session.execute(
        insert(working_table).values(
            name=name,
            org_id=owner.org_id,
            workflow_id=owner.workflow_id,
            job_id=owner.job_id,
            task_id=owner.task_id,
            resource=resource,
            count=count,
        )
    )


def descriptor(name: str, resource: str, count: int, columns: list[str]) -> Population:
    """What a transition carries for a working table."""
    return {
        "kind": "population",
        "table": name,
        "resource": resource,
        "count": int(count),
        "columns": columns,
    }


def as_table(population: Mapping[str, Any]) -> TableClause:
    """A selectable over a descriptor's table: `id` plus its enrichment columns."""
    if population.get("kind") != "population":
        raise ActivityError("the inbound transition carries no population")
    names = ["id", *population.get("columns", [])]
    return table(population["table"], *(column(name) for name in names))


def drop(s: Session, names: Iterable[str]) -> int:
    """Drop the named working tables and forget them; returns how many were dropped."""
    dropped = 0
    preparer = s.get_bind().dialect.identifier_preparer
    for name in names:
        s.execute(delete(working_table).where(working_table.c.name == name))
        # Names only ever come from table_name() through the registry, quoted anyway.
        s.connection().exec_driver_sql(f"DROP TABLE IF EXISTS {preparer.quote(name)}")
        dropped += 1
    return dropped


def drop_for_jobs(s: Session, job_ids: Sequence[str]) -> int:
    names = s.scalars(select(working_table.c.name).where(working_table.c.job_id.in_(job_ids)))
    return drop(s, list(names))


def drop_for_workflow(s: Session, workflow_id: int) -> int:
    names = s.scalars(
        select(working_table.c.name).where(working_table.c.workflow_id == workflow_id)
    )
    return drop(s, list(names))
