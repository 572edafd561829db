"""Public tracking endpoints: the open pixel and the click redirect of signed links."""

from __future__ import annotations

import base64
import logging

from flask import Blueprint, Response, redirect, request
from flask.typing import ResponseReturnValue

from api.context import carillon
from api.errors import ApiError
from worker import feedback
from worker.channels.tracking import Tracked, verify

log = logging.getLogger(__name__)

bp = Blueprint("tracking", __name__)

#: A transparent 1x1 GIF.
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")


def _record(hit: Tracked) -> None:
    app = carillon()
    agent = request.headers.get("User-Agent", "")
    try:
        with app.sessions() as s, s.begin():
            feedback.record_hit(s, hit, agent)
    except Exception:
        # A lost open or click must not cost the reader the pixel or the page.
        log.warning("could not record a %s", hit.kind, exc_info=True)


@bp.get("/r/<token>/o.gif")
def open_pixel(token: str) -> Response:
    """The open pixel: records an open when the token is valid, returns a 1x1 GIF anyway.
    ---
    get:
      summary: Open-tracking pixel of a sent email (no authentication)
      tags: [tracking]
      responses:
        200:
          description: a 1x1 transparent GIF, whatever the token
          content:
            image/gif:
              schema: {type: string, format: binary}
    """
    hit = verify(carillon().settings, token)
    if hit is not None and hit.kind == "open":
        _record(hit)
    response = Response(PIXEL, mimetype="image/gif")
    response.headers["Cache-Control"] = "no-store, max-age=0"
    return response


@bp.get("/r/<token>")
def click(token: str) -> ResponseReturnValue:
    """A tracked link: records the click and redirects to the URL signed inside the token.
    ---
    get:
      summary: Click redirect of a tracked link (no authentication)
      tags: [tracking]
      responses:
        302:
          description: to the http(s) URL inside the signed token
          headers:
            Location: {description: the link's target, schema: {type: string}}
        404: {$ref: '#/components/responses/NotFound'}
    """
    hit = verify(carillon().settings, token)
    if hit is None or hit.kind != "click" or hit.url is None:
        # Never a redirect to anything the token does not vouch for.
        raise ApiError(404, "no such link", code="notFound")
    _record(hit)
    response = redirect(hit.url, code=302)
    response.headers["Cache-Control"] = "no-store, max-age=0"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response
