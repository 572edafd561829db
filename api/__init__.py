"""Flask side: create_app() with one blueprint per resource."""

from __future__ import annotations

from typing import Any

from flask import Flask

from worker.config import Settings


def create_app(settings: Settings | None = None, **overrides: Any) -> Flask:
    """The WSGI app; `settings` defaults to the CARILLON_* environment."""
    app = Flask(__name__)
    app.config.update(
        CARILLON_SETTINGS=settings or Settings.from_env(),
        MAX_CONTENT_LENGTH=64 * 1024,
        JSON_SORT_KEYS=False,
        **overrides,
    )
    from api import health

    app.register_blueprint(health.bp)
    return app
