"""Flask side: create_app() with one blueprint per resource."""

from __future__ import annotations

import os
import socket
from typing import Any

from flask import Flask

from api.context import Carillon
from worker import registry, schema
from worker.config import Settings
from worker.db import make_engine, make_session_factory
from worker.engine import Dispatcher, Engine

#: Largest request body accepted, chunked ones included (413 beyond), as the platform's API.
MAX_BODY_BYTES = 64 * 1024


def create_app(
    settings: Settings | None = None, *, dispatcher: Dispatcher | None = None, **config: Any
) -> Flask:
    """The WSGI app; `settings` defaults to the CARILLON_* environment.

    It owns its database engine and session factory, brings the schema up to date once,
    and publishes through `dispatcher` (default: Celery, on the settings' broker).
    """
    settings = (settings or Settings.from_env()).resolved()
    app = Flask(__name__, static_folder=None)
    app.config.update(MAX_CONTENT_LENGTH=MAX_BODY_BYTES, **config)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["carillon"] = _services(settings, dispatcher)

    from api import auth, definitions, errors, executions, health, history, openapi

    errors.register(app)
    from api import ratelimit

    ratelimit.init_app(app, settings)  # first: requests with bad credentials count too
    auth.init_app(app)
    for blueprint in (health.bp, openapi.bp, executions.bp, history.bp, definitions.bp):
        app.register_blueprint(blueprint)
    from api import events, templates, tracking

    for blueprint in (events.bp, templates.bp, tracking.bp):
        app.register_blueprint(blueprint)
    from api import validations

    app.register_blueprint(validations.bp)
    from api import technical

    app.register_blueprint(technical.bp)
    from api import metrics, monitoring

    app.register_blueprint(monitoring.bp)
    metrics.init_app(app)
    from api import monitoring_page

    app.register_blueprint(monitoring_page.bp)
    return app


def _services(settings: Settings, dispatcher: Dispatcher | None) -> Carillon:
    registry.load(settings.activity_modules)
    if settings.database_url.startswith("sqlite"):
        settings.home.mkdir(parents=True, exist_ok=True)
    db = make_engine(settings.database_url)
    schema.upgrade(db, settings.data_model)
    sessions = make_session_factory(db)
    if dispatcher is None:
        from worker.celery_app import create_celery
        from worker.tasks import CeleryDispatcher

        dispatcher = CeleryDispatcher(create_celery(settings))
    engine = Engine(
        settings, sessions, dispatcher, worker_name=f"api:{socket.gethostname()}:{os.getpid()}"
    )
    return Carillon(
        settings=settings, db=db, sessions=sessions, engine=engine, dispatcher=dispatcher
    )
