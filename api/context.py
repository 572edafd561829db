"""What a request works with: the app's Carillon services and the caller's organization."""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app, g
from sqlalchemy import Engine as SAEngine
from sqlalchemy.orm import Session, sessionmaker

from worker.config import Settings
from worker.engine import Dispatcher, Engine


@dataclass(frozen=True)
class Carillon:
    """The services one app holds in `app.extensions["carillon"]`."""

    settings: Settings
    db: SAEngine
    sessions: sessionmaker[Session]
    engine: Engine
    dispatcher: Dispatcher


@dataclass(frozen=True)
class Caller:
    """The organization the request's credentials belong to."""

    org_id: int
    org_name: str


def carillon() -> Carillon:
    found: Carillon = current_app.extensions["carillon"]
    return found


def caller() -> Caller:
    """The authenticated caller; api.auth sets it before any protected view runs."""
    found: Caller = g.carillon_caller
    return found


def public_url(path: str) -> str:
    """An absolute link under CARILLON_PUBLIC_URL (`path` starts with '/')."""
    return f"{carillon().settings.public_url}{path}"


def execution_path(org: str, pkey: str) -> str:
    """The path of a workflow's execution resource, by PKey."""
    return f"/{org}/campaign/workflow/execution/@{pkey}"
