"""Liveness endpoint, the only one without authentication (with /openapi.json)."""

from __future__ import annotations

from flask import Blueprint

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
