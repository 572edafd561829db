"""Signed tracking links: tokens, forgery, open redirects, and rewriting sent HTML."""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass

import pytest

from worker.channels import tracking


@dataclass(frozen=True)
class Keys:
    secret_key: str = "k" * 32
    tracking_url: str = "https://t.example.com/"


SETTINGS = Keys()
OTHER_KEY = Keys(secret_key="another secret key of 32 chars!!")


def token_of(url: str) -> str:
    match = re.search(r"/r/([^/\"]+)", url)
    assert match
    return match.group(1)


def test_an_open_url_verifies_to_an_open_of_its_log() -> None:
    url = tracking.open_url(SETTINGS, 42)

    assert url.startswith("https://t.example.com/r/") and url.endswith("/o.gif")
    assert tracking.verify(SETTINGS, token_of(url)) == tracking.Tracked("open", 42)


def test_a_click_url_carries_its_target_inside_the_signed_token() -> None:
    target = "https://shop.example.com/order?id=7&lang=fr#top"
    token = token_of(tracking.click_url(SETTINGS, 9, target))

    assert re.fullmatch(r"[A-Za-z0-9_.-]+", token)  # url-safe, nothing to escape
    assert tracking.verify(SETTINGS, token) == tracking.Tracked("click", 9, target)


def test_a_token_signed_with_another_key_is_refused() -> None:
    token = token_of(tracking.click_url(OTHER_KEY, 9, "https://shop.example.com/"))

    assert tracking.verify(SETTINGS, token) is None


def test_changing_any_character_of_a_token_makes_it_invalid() -> None:
    token = token_of(tracking.click_url(SETTINGS, 9, "https://shop.example.com/a"))

    for index in range(len(token)):
        swapped = "A" if token[index] != "A" else "B"
        forged = token[:index] + swapped + token[index + 1 :]
        assert tracking.verify(SETTINGS, forged) is None, index


def test_a_payload_pointing_elsewhere_with_the_old_mac_is_refused() -> None:
    # Given a genuine token, when the payload is replaced by one naming evil.com
    token = token_of(tracking.click_url(SETTINGS, 9, "https://shop.example.com/"))
    _, mac = token.split(".")
    evil = base64.urlsafe_b64encode(json.dumps(["c", 9, "https://evil.com/"]).encode())
    forged = f"{evil.decode().rstrip('=')}.{mac}"

    # Then the forged token says nothing
    assert tracking.verify(SETTINGS, forged) is None


@pytest.mark.parametrize(
    "token",
    [
        "",
        ".",
        "abc",
        "a.b.c",
        "a" * 5000 + ".b",
        "é.é",
        "../../etc/passwd",
        "%2F%2Fevil.com",
        "//evil.com",
        "javascript:alert(1)",
        "\x00.\x00",
    ],
)
def test_malformed_tokens_are_refused(token: str) -> None:
    assert tracking.verify(SETTINGS, token) is None


@pytest.mark.parametrize(
    "url",
    [
        "//evil.com/",
        "javascript:alert(1)",
        "JAVASCRIPT:alert(1)",
        "data:text/html,<script>alert(1)</script>",
        "ftp://files.example.com/",
        "https://",
        "https://exa mple.com/",
        "https://example.com/\r\nSet-Cookie: a=b",
        "/relative/path",
        "https://example.com/" + "a" * 3000,
    ],
)
def test_only_absolute_http_links_can_be_signed(url: str) -> None:
    with pytest.raises(ValueError):
        tracking.click_url(SETTINGS, 1, url)


def test_a_signed_payload_with_a_non_http_url_is_still_refused() -> None:
    # Defence in depth: even a correctly signed javascript: URL would not be redirected to.
    payload = base64.urlsafe_b64encode(json.dumps(["c", 1, "javascript:x"]).encode())
    text = payload.decode().rstrip("=")
    token = f"{text}.{tracking._mac(SETTINGS, text)}"

    assert tracking.verify(SETTINGS, token) is None


def test_rewrite_html_wraps_http_links_and_adds_the_pixel_before_body_end() -> None:
    html = (
        "<html><body><p>Hi</p>"
        '<a href="https://shop.example.com/?a=1&amp;b=2">shop</a>'
        "<a class='x' HREF='http://example.org/x'>x</a>"
        '<a href="mailto:help@example.com">mail</a>'
        '<a href="#top">top</a>'
        '<a href="javascript:alert(1)">js</a>'
        "</body></html>"
    )

    rewritten = tracking.rewrite_html(html, SETTINGS, 5)

    links = re.findall(r"""href=["']([^"']+)""", rewritten, re.IGNORECASE)
    assert links[2:] == ["mailto:help@example.com", "#top", "javascript:alert(1)"]
    clicked = [tracking.verify(SETTINGS, token_of(link)) for link in links[:2]]
    assert clicked == [
        tracking.Tracked("click", 5, "https://shop.example.com/?a=1&b=2"),
        tracking.Tracked("click", 5, "http://example.org/x"),
    ]
    pixel = re.search(r'<img src="([^"]+)"', rewritten)
    assert pixel and tracking.verify(SETTINGS, token_of(pixel.group(1))) == tracking.Tracked(
        "open", 5
    )
    assert rewritten.index("<img") < rewritten.index("</body>")


def test_rewrite_html_without_a_body_appends_the_pixel() -> None:
    rewritten = tracking.rewrite_html("<p>plain</p>", SETTINGS, 3)

    assert rewritten.startswith("<p>plain</p><img src=")
