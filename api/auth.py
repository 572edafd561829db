"""Bearer token + API key on every route but the public ones; a key sees only its organization,
the admin token (CARILLON_ADMIN_TOKEN, sent alone) every organization."""

from __future__ import annotations

import hashlib
import hmac

from flask import Flask, g, request
from sqlalchemy import select

from api.context import Caller, carillon
from api.errors import ApiError
from worker import catalog
from worker.models import Organization
from worker.technical import install

#: Endpoints anyone may call: liveness, the API description, and the tracking pixel and
#: redirects that recipients' mail clients follow. /metrics checks its own access
#: (api.metrics) and the monitoring page holds no data.
PUBLIC_ENDPOINTS = frozenset(
    {
        "health.healthz",
        "health.readyz",
        "openapi.spec",
        "tracking.open_pixel",
        "tracking.click",
        "metrics.metrics",
    }
)
#: Blueprints whose every endpoint is public: the monitoring page and its static files (the
#: page holds no data; it calls the API with the credentials its user types in).
PUBLIC_BLUEPRINTS = frozenset({"monitoring_page"})
UNAUTHORIZED = "missing or invalid credentials: send Authorization: Bearer <token> and X-Api-Key"
#: An admin caller on a URL without an organization: an id no organization has.
NO_ORG = Caller(org_id=0, org_name="")


def is_public(endpoint: str | None) -> bool:
    """Whether anyone may call `endpoint` (no credentials checked before its view)."""
    if endpoint is None:
        return False
    return endpoint in PUBLIC_ENDPOINTS or endpoint.partition(".")[0] in PUBLIC_BLUEPRINTS


def _unauthorized() -> ApiError:
    # One message whatever was wrong, so a caller learns nothing about which part failed.
    return ApiError(
        401, UNAUTHORIZED, code="unauthorized", headers={"WWW-Authenticate": 'Bearer realm="api"'}
    )


def _not_found() -> ApiError:
    return ApiError(404, "no such resource", code="notFound")


def bearer_token() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


def is_admin_token(token: str | None) -> bool:
    """Whether `token` is the configured admin token, compared in constant time."""
    expected = carillon().settings.admin_token
    if not expected or not token:
        return False
    # Digests first: compare_digest's time would otherwise depend on the lengths.
    given = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
    return hmac.compare_digest(given, hashlib.sha256(expected.encode()).digest())


def is_admin() -> bool:
    """Whether the request's caller logged in with the admin token."""
    return bool(g.get("carillon_admin", False))


def _admin_caller() -> Caller:
    """The admin acts as the organization of the URL (404 when there is none such)."""
    org_name = (request.view_args or {}).get("org")
    if org_name is None:
        return NO_ORG
    with carillon().sessions() as s:
        org_id = s.execute(
            select(Organization.id).where(Organization.name == org_name)
        ).scalar_one_or_none()
    if org_id is None and org_name == install.SYSTEM_ORG:
        with carillon().sessions() as s, s.begin():  # the technical workflows' organization
            org_id = install.ensure_installed(s)
    if org_id is None:
        raise _not_found()
    return Caller(org_id=org_id, org_name=org_name)


def authenticate() -> None:
    """before_request: set the caller, or refuse with 401 (bad credentials) / 404 (other org)."""
    if request.routing_exception is not None or is_public(request.endpoint):
        return  # unknown route or wrong method: its own 404/405 says more than a 401
    token = bearer_token()
    api_key = request.headers.get("X-Api-Key", "").strip()
    if not api_key and is_admin_token(token):
        g.carillon_admin = True
        g.carillon_caller = _admin_caller()
        return
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
        raise _not_found()
    g.carillon_caller = found


def init_app(app: Flask) -> None:
    app.before_request(authenticate)
