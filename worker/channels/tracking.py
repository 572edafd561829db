"""Signed tracking links: the open pixel and click redirects of a delivery log, and their check.

A token is `<payload>.<mac>`, both base64url without padding: the payload is compact JSON,
`["o", logId]` for an open or `["c", logId, url]` for a click, and the MAC is HMAC-SHA256 of
the payload under the secret key, truncated to 128 bits. The click URL lives inside the signed
payload, so the redirect endpoint never goes anywhere a caller chose: change one character and
the token is refused.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import html
import json
import re
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii
from typing import Any
from urllib.parse import urlsplit

#: Separates the MACs of tracking tokens from any other use of the same secret key.
_DOMAIN = b"carillon-tracking-v1:"
_MAC_BYTES = 16
#: Longest token verify() looks at; anything longer is refused unread.
MAX_TOKEN_CHARS = 4096
#: Longer links stay untracked: their token would not fit in MAX_TOKEN_CHARS.
MAX_URL_CHARS = 2048
_TOKEN_SHAPE = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")
#: `<a ... href="...">` (either quote); group 3 is the URL as written in the HTML.
_ANCHOR_HREF = re.compile(r"""(<a\b[^>]*?\bhref\s*=\s*)(["'])(.*?)\2""", re.IGNORECASE | re.DOTALL)
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)
_URL_CONTROL = re.compile(r"[\x00-\x20\x7f]")


@dataclass(frozen=True)
class Tracked:
    """What a valid token says: an open or a click of one delivery log (and the click's URL)."""

    kind: str  # open | click
    delivery_log_id: int
    url: str | None = None


def _key(settings: Any) -> bytes:
    secret = settings.secret_key
    return secret if isinstance(secret, bytes) else str(secret).encode("utf-8")


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(settings: Any, payload: str) -> str:
    # hmac.digest: OpenSSL's one-shot HMAC, without the Python HMAC object of hmac.new.
    digest = hmac.digest(_key(settings), _DOMAIN + payload.encode("ascii"), "sha256")
    return _b64(digest[:_MAC_BYTES])


def _compact(value: list[Any]) -> str:
    """`json.dumps(value, separators=(",", ":"), ensure_ascii=True)` of a token's list (a
    kind, a log id and maybe a URL) without the encoder's set-up, which dominated signing."""
    items = []
    for item in value:
        if type(item) is str:
            items.append(encode_basestring_ascii(item))
        elif type(item) is int:
            items.append(str(item))
        else:
            return json.dumps(value, separators=(",", ":"), ensure_ascii=True)
    return "[" + ",".join(items) + "]"


def _sign(settings: Any, value: list[Any]) -> str:
    payload = _b64(_compact(value).encode("ascii"))
    return f"{payload}.{_mac(settings, payload)}"


def is_trackable(url: str) -> bool:
    """Only absolute http(s) links without control characters are wrapped (and redirected to)."""
    if len(url) > MAX_URL_CHARS or _URL_CONTROL.search(url):
        return False
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.hostname)


def _base(settings: Any) -> str:
    return str(settings.tracking_url).rstrip("/")


def open_url(settings: Any, delivery_log_id: int) -> str:
    """The 1x1 pixel URL recording an open of `delivery_log_id`."""
    return f"{_base(settings)}/r/{_sign(settings, ['o', int(delivery_log_id)])}/o.gif"


def click_url(settings: Any, delivery_log_id: int, url: str) -> str:
    """A redirect to `url` recording a click of `delivery_log_id`; ValueError if not http(s)."""
    if not is_trackable(url):
        raise ValueError("only absolute http(s) URLs of at most 2048 characters are tracked")
    return _click_url(settings, delivery_log_id, url)


def _click_url(settings: Any, delivery_log_id: int, url: str) -> str:
    """click_url of a URL already found trackable."""
    return f"{_base(settings)}/r/{_sign(settings, ['c', int(delivery_log_id), url])}"


def verify(settings: Any, token: str) -> Tracked | None:
    """The token's content when its MAC is right and its shape valid; None otherwise."""
    if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS or not _TOKEN_SHAPE.match(token):
        return None
    payload, mac = token.split(".", 1)
    # Constant time, so the MAC cannot be guessed byte by byte from response times.
    if not hmac.compare_digest(mac.encode("ascii"), _mac(settings, payload).encode("ascii")):
        return None
    try:
        value = json.loads(_unb64(payload))
    except (binascii.Error, ValueError):
        return None
    if not isinstance(value, list) or len(value) < 2:
        return None
    kind, log_id = value[0], value[1]
    if type(log_id) is not int or log_id < 1:
        return None
    if kind == "o" and len(value) == 2:
        return Tracked("open", log_id)
    if kind == "c" and len(value) == 3 and isinstance(value[2], str) and is_trackable(value[2]):
        return Tracked("click", log_id, value[2])
    return None


def rewrite_html(html_text: str, settings: Any, delivery_log_id: int) -> str:
    """`html_text` with its http(s) links going through click redirects and an open pixel.

    Other links (mailto:, tel:, anchors, javascript:...) are left as they are; the pixel goes
    just before the last `</body>`, or at the end when there is none.
    """

    def wrap(match: re.Match[str]) -> str:
        # The href is HTML: `&amp;` in it is `&` in the URL the reader's browser would open.
        url = html.unescape(match.group(3)).strip()
        if not is_trackable(url):
            return match.group(0)
        tracked = _click_url(settings, delivery_log_id, url)
        return f"{match.group(1)}{match.group(2)}{tracked}{match.group(2)}"

    rewritten = _ANCHOR_HREF.sub(wrap, html_text)
    pixel = (
        f'<img src="{open_url(settings, delivery_log_id)}" width="1" height="1" alt="" '
        'style="display:none">'
    )
    ends = list(_BODY_END.finditer(rewritten))
    if not ends:
        return rewritten + pixel
    at = ends[-1].start()
    return rewritten[:at] + pixel + rewritten[at:]
