"""What every `carillon` command shares: the migrated runtime, and how an error ends a command."""

from __future__ import annotations

import sys
from typing import Any, NoReturn

import click

from worker.errors import CarillonError


def _runtime() -> Any:
    from worker import runtime, schema

    schema.upgrade(runtime.db(), runtime.settings().data_model)
    return runtime


def _fail(exc: CarillonError) -> NoReturn:
    click.echo(f"error: {exc.message}", err=True)
    sys.exit(2)
