"""Bearer token + API key on every route but the public ones; a key sees only its organization."""

from __future__ import annotations

from flask import Flask, g, request

from api.context import Caller, carillon
from api.errors import ApiError
from worker import catalog

#: Endpoints anyone may call: liveness, the API description, and the tracking pixel and
#: redirects that recipients' mail clients follow.
PUBLIC_ENDPOINTS = frozenset(
    {"health.healthz", "openapi.spec", "tracking.open_pixel", "tracking.click"}
)
UNAUTHORIZED = "missing or invalid credentials: send Authorization: Bearer <token> and X-Api-Key"


def _unauthorized() -> ApiError:
    # One message whatever was wrong, so a caller learns nothing about which part failed.
    return ApiError(
        401, UNAUTHORIZED, code="unauthorized", headers={"WWW-Authenticate": 'Bearer realm="api"'}
    )


def _bearer_token() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


def authenticate() -> None:
    """before_request: set the caller, or refuse with 401 (bad credentials) / 404 (other org)."""
    if request.routing_exception is not None or request.endpoint in PUBLIC_ENDPOINTS:
        return  # unknown route or wrong method: its own 404/405 says more than a 401
    token = _bearer_token()
    api_key = request.headers.get("X-Api-Key", "").strip()
    if token is None or not api_key:
        raise _unauthorized()
    with carillon().sessions() as s:
        org = catalog.authenticate(s, api_key, token)
        found = None if org is None else Caller(org_id=org.id, org_name=org.name)
    if found is None:
        raise _unauthorized()
    view_args = request.view_args or {}
    if "org" in view_args and view_args["org"] != found.org_name:
        # Another organization's URL: answer as if nothing were there.
        raise ApiError(404, "no such resource", code="notFound")
    g.carillon_caller = found


def init_app(app: Flask) -> None:
    app.before_request(authenticate)
