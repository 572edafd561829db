"""Worker entry for benchmarks: Carillon's Celery app plus raw tasks as baselines."""

from __future__ import annotations

import functools
import os
from typing import Any

from worker.celery_app import app

__all__ = ["app", "raw_insert", "raw_noop"]


@app.task(name="bench.raw_noop", shared=False)
def raw_noop() -> None:
    """The cheapest Celery task: the baseline a Carillon activity is compared with."""


@app.task(name="bench.raw_insert", shared=False)
def raw_insert(run: str) -> None:
    """A raw task that records itself durably in the least a database can do: one row, one
    autocommit INSERT, no wait for the WAL flush (as a Carillon hop commits). A chain of these
    is the floor of any engine that writes each activity's state before the next one runs."""
    with _connection().cursor() as cursor:
        cursor.execute("INSERT INTO bench_floor VALUES (%s, clock_timestamp())", (run,))


@functools.cache
def _connection() -> Any:
    """This process's connection for raw_insert (opened on first use: after the fork)."""
    import psycopg2
    from sqlalchemy.engine import make_url

    url = make_url(os.environ["CARILLON_DATABASE_URL"])
    connection = psycopg2.connect(
        host=url.host, port=url.port, user=url.username, password=url.password, dbname=url.database
    )
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute("SET synchronous_commit = off")
    return connection
