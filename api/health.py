"""Liveness and readiness endpoints (no authentication)."""

from __future__ import annotations

from flask import Blueprint
from sqlalchemy import text

from api.context import carillon

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> dict[str, str]:
    """Liveness: the process answers.
    ---
    get:
      summary: Liveness probe (no authentication)
      tags: [meta]
      responses:
        200:
          description: the API process is up
          content:
            application/json:
              schema: {$ref: '#/components/schemas/Health'}
    """
    return {"status": "ok"}


@bp.get("/readyz")
def readyz() -> dict[str, str]:
    """Readiness: the database answers (503 with Retry-After while it does not).
    ---
    get:
      summary: Readiness probe (no authentication)
      tags: [meta]
      responses:
        200:
          description: the API can reach its database
          content:
            application/json:
              schema: {$ref: '#/components/schemas/Health'}
        503:
          description: the database cannot be reached; retry after the `Retry-After` seconds
    """
    # An outage raises here and api/errors.py turns it into the 503 every endpoint gives.
    with carillon().sessions() as s:
        s.execute(text("SELECT 1"))
    return {"status": "ready"}
