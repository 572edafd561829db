"""GET /metrics in the Prometheus text format, and the count of refused triggers behind it.

Access: with CARILLON_ADMIN_TOKEN set, `Authorization: Bearer <admin token>`; without it,
loopback callers only (a Prometheus on the same host or behind an authenticating proxy).
"""

from __future__ import annotations

import ipaddress
import logging

from flask import Blueprint, Flask, Response, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from api.auth import bearer_token, is_admin_token
from api.context import carillon
from api.errors import ApiError
from worker import metrics as db_metrics
from worker import monitoring_workers

log = logging.getLogger(__name__)

bp = Blueprint("metrics", __name__)

#: The trigger endpoint; its 4xx answers are the refused triggers.
TRIGGER_ENDPOINT = "executions.trigger"


def _loopback(address: str | None) -> bool:
    try:
        return address is not None and ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def _check_access() -> None:
    if carillon().settings.admin_token:
        if not is_admin_token(bearer_token()):
            raise ApiError(
                401,
                "send Authorization: Bearer <CARILLON_ADMIN_TOKEN> to read the metrics",
                code="unauthorized",
                headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
            )
    elif not _loopback(request.remote_addr):
        raise ApiError(
            403,
            "metrics are served to loopback callers only; set CARILLON_ADMIN_TOKEN to scrape "
            "from elsewhere",
            code="forbidden",
        )


def _registry() -> CollectorRegistry:
    """One registry per app: its collector reads the app's database at scrape time."""
    from flask import current_app

    found: CollectorRegistry | None = current_app.extensions.get("carillon_metrics")
    if found is None:
        settings = carillon().settings
        found = CollectorRegistry(auto_describe=False)
        found.register(
            db_metrics.DatabaseCollector(
                carillon().sessions, lambda: monitoring_workers.queue_depths(settings)
            )
        )
        current_app.extensions["carillon_metrics"] = found
    return found


@bp.get("/metrics")
def metrics() -> Response:
    """Prometheus metrics, read from the database at scrape time.
    ---
    get:
      summary: Prometheus metrics (admin token, or loopback callers when none is set)
      description: tasks by state and type, activity durations (last hour), queue depths,
        triggers accepted and refused, delivery messages by channel and status; every API
        process reports the same figures (they come from the database).
      tags: [monitoring]
      responses:
        200:
          description: the metrics, in the Prometheus text format
          content:
            text/plain: {schema: {type: string}}
        401: {$ref: '#/components/responses/Unauthorized'}
        403:
          description: no admin token is set and the caller is not on loopback
          content:
            application/json:
              schema: {$ref: '#/components/schemas/Error'}
    """
    _check_access()
    return Response(generate_latest(_registry()), content_type=CONTENT_TYPE_LATEST)


def count_refused_trigger(response: Response) -> Response:
    """after_request: a trigger answered 4xx is counted in the database (metric_counter), so
    the figure is the same whichever API process or host refused it."""
    if request.endpoint == TRIGGER_ENDPOINT and 400 <= response.status_code < 500:
        try:
            with carillon().sessions() as s, s.begin():
                db_metrics.increment(s, db_metrics.TRIGGERS_REFUSED, str(response.status_code))
        except Exception:  # a metric must never turn an answer into a 500
            log.warning("could not count a refused trigger", exc_info=True)
    return response


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
    app.after_request(count_refused_trigger)
