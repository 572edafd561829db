"""GET /monitoring and its static files over the app (no browser needed): public, a strict
Content-Security-Policy, only the page's own files, hostile paths refused."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from werkzeug.test import TestResponse

from api.monitoring_page import ASSET_TYPES, CONTENT_SECURITY_POLICY, STATIC_DIR
from tests import api_conftest
from tests.api_conftest import Rest, error_of

make_rest_fixture = api_conftest.make_rest_fixture
rest_fixture = api_conftest.rest_fixture

ASSETS = sorted(p for p in STATIC_DIR.rglob("*") if p.suffix in ASSET_TYPES)
#: The only absolute URL allowed in the page's files: the SVG namespace, a name, not fetched.
SVG_NAMESPACE = "http://www.w3.org/2000/svg"


def fetch(rest: Rest, path: str, method: str = "GET", **kwargs: Any) -> TestResponse:
    """The answer, read and closed (a file response left open is a ResourceWarning)."""
    response = rest.client.open(path, method=method, **kwargs)
    response.get_data()
    response.close()
    return response


class _Tags(HTMLParser):
    """Every start tag with its attributes, and the text inside <script> and <style>."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.inline: list[str] = []
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in = tag if tag in ("script", "style") else None

    def handle_endtag(self, tag: str) -> None:
        self._in = None

    def handle_data(self, data: str) -> None:
        if self._in and data.strip():
            self.inline.append(data)


def test_the_page_is_public_and_sent_with_strict_security_headers(rest: Rest) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong", "X-Api-Key": "wrong"}):
        response = fetch(rest, "/monitoring", headers=headers)

        assert response.status_code == 200
        assert response.mimetype == "text/html"
        assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Referrer-Policy"] == "no-referrer"
    policy = dict(part.split(" ", 1) for part in CONTENT_SECURITY_POLICY.split("; "))
    assert policy["default-src"] == "'none'"
    assert policy["script-src"] == "'self'" and policy["style-src"] == "'self'"
    assert policy["connect-src"] == "'self'" and policy["frame-ancestors"] == "'none'"


def test_the_page_has_no_inline_script_style_or_handler_and_no_other_host(rest: Rest) -> None:
    html = fetch(rest, "/monitoring").get_data(as_text=True)
    parsed = _Tags()
    parsed.feed(html)

    assert parsed.inline == []
    scripts = [attrs for tag, attrs in parsed.tags if tag == "script"]
    assert scripts == [{"type": "module", "src": "/monitoring/static/js/main.js"}]
    for tag, attrs in parsed.tags:
        assert "style" not in attrs, tag
        assert not [name for name in attrs if name.startswith("on")], (tag, attrs)
        for name in ("src", "href"):
            value = attrs.get(name) or ""
            assert value == "" or value.startswith(("/monitoring/", "#")), (tag, value)
    for path in [STATIC_DIR / "index.html", *ASSETS]:
        text = path.read_text(encoding="utf-8")
        assert not re.findall(r"https?://", text.replace(SVG_NAMESPACE, "")), path
        # Markup is built with textContent and attributes, never parsed from strings.
        assert "innerHTML" not in text and "insertAdjacentHTML" not in text, path
        assert "eval(" not in text and "new Function" not in text, path


@pytest.mark.parametrize("asset", ASSETS, ids=lambda p: str(p.relative_to(STATIC_DIR)))
def test_every_static_file_is_served_with_its_type_and_the_same_headers(
    rest: Rest, asset: Path
) -> None:
    response = fetch(rest, f"/monitoring/static/{asset.relative_to(STATIC_DIR)}")

    assert response.status_code == 200
    assert response.mimetype == ASSET_TYPES[asset.suffix]
    assert response.get_data() == asset.read_bytes()
    assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_every_module_import_resolves_to_a_served_file() -> None:
    modules = [p for p in ASSETS if p.suffix == ".js"]
    assert (STATIC_DIR / "js" / "main.js") in modules
    for module in modules:
        for target in re.findall(
            r"""^import .* from "(\.{1,2}/[^"]+)";$""", module.read_text(), re.M
        ):
            resolved = (module.parent / target).resolve()
            assert resolved in modules, (module, target)


@pytest.mark.parametrize(
    "path",
    [
        "/monitoring/static/../monitoring_page.py",
        "/monitoring/static/%2e%2e/%2e%2e/pyproject.toml",
        "/monitoring/static/..%2fauth.py",
        "/monitoring/static//etc/passwd",
        "/monitoring/static/js/../../../../../etc/hostname.js",
        "/monitoring/static/index.html",
        "/monitoring/static/js/nothing.js",
        "/monitoring/static/js/main.js%00.css",
        "/monitoring/static/js",
        "/monitoring/static/" + "a" * 5000 + ".js",
        "/monitoring/static/%ff%fe.js",
        "/monitoring/",
    ],
)
def test_hostile_and_unknown_paths_are_404_with_nothing_served(rest: Rest, path: str) -> None:
    # Werkzeug first merges doubled slashes with a redirect: follow it to the answer.
    response = fetch(rest, path, follow_redirects=True)

    error_of(response, 404)


def test_the_page_answers_only_get(rest: Rest) -> None:
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        assert fetch(rest, "/monitoring", method).status_code == 405
        assert fetch(rest, "/monitoring/static/js/main.js", method).status_code == 405
    assert fetch(rest, "/monitoring", "HEAD").status_code == 200
