"""The monitoring web page: GET /monitoring and its static files, public, holding no data."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, send_from_directory
from werkzeug.exceptions import NotFound

bp = Blueprint("monitoring_page", __name__)

#: The page's HTML, CSS and JavaScript modules (no build step).
STATIC_DIR = Path(__file__).resolve().parent / "static" / "monitoring"
#: Only files of these kinds are served, whatever else lands in the folder; the type is set
#: here rather than guessed from the system's tables (a module must be JavaScript).
ASSET_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
#: The page loads nothing but its own files and talks only to this API: no inline script or
#: style, no other host, no framing, no plugins.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    # The files change with the code: revalidate on each load rather than run stale modules.
    "Cache-Control": "no-cache",
}


@bp.after_request
def _secure(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers[name] = value
    return response


@bp.get("/monitoring")
def page() -> Response:
    """The monitoring page (HTML; it asks for credentials and calls /monitoring/api/*).
    ---
    get:
      summary: The monitoring web page (no authentication; it holds no data)
      tags: [monitoring]
      responses:
        200:
          description: the HTML page, with a strict Content-Security-Policy
          content:
            text/html:
              schema: {type: string}
    """
    return send_from_directory(STATIC_DIR, "index.html", mimetype="text/html")


@bp.get("/monitoring/static/<path:filename>")
def asset(filename: str) -> Response:
    """A static file of the monitoring page: a JavaScript module, a style sheet, an icon.
    ---
    get:
      summary: A static file of the monitoring page (no authentication)
      tags: [monitoring]
      responses:
        200:
          description: the file
          content:
            text/javascript: {schema: {type: string}}
            text/css: {schema: {type: string}}
            image/svg+xml: {schema: {type: string}}
        404: {$ref: '#/components/responses/NotFound'}
    """
    mimetype = ASSET_TYPES.get(Path(filename).suffix)
    if mimetype is None:
        raise NotFound()
    # send_from_directory refuses paths that leave the folder ("..", absolute paths).
    return send_from_directory(STATIC_DIR, filename, mimetype=mimetype)
