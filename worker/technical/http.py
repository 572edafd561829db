"""Small HTTP client for the technical workflows' connectors (URLs from the operator's config)."""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request

from worker.errors import ActivityError

#: Seconds a call to a connector may take.
TIMEOUT = 30
#: The largest answer read from a connector.
MAX_ANSWER_BYTES = 16 * 1024 * 1024


def checked_base_url(url: str, setting: str) -> str:
    """`url` without its trailing slash, or ActivityError naming the setting when not http(s)."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ActivityError(f"{setting} must be an http(s) URL")
    return url.rstrip("/")


def call(request: urllib.request.Request, what: str) -> bytes:
    """The answer's body; ActivityError naming `what` on an error status, a network failure
    or an answer over MAX_ANSWER_BYTES."""
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as answer:
            body: bytes = answer.read(MAX_ANSWER_BYTES + 1)
    except urllib.error.HTTPError as exc:
        raise ActivityError(f"{what} answered {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise ActivityError(f"{what} unreachable: {exc}") from None
    if len(body) > MAX_ANSWER_BYTES:
        raise ActivityError(f"{what} answer too large")
    return body
