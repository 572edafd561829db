"""A real browser on the monitoring page: Debian's chromium driven by Playwright, against a
real API server (gunicorn), a real Celery worker and beat, PostgreSQL and Redis.

Chromium is installed by the project's set-up (`make chromium`, run by `make install` and
`make test`; CARILLON_CHROMIUM names another binary); Playwright never downloads a browser.
Without chromium or PostgreSQL/Redis the tests skip, except under CI (CI set): they fail.

Every run saves screenshots of the main views to CARILLON_SCREENSHOTS_DIR, by default
`.carillon/screenshots/` in the checkout (git-ignored, overwritten by each run; pytest's own
temporary folders are pruned after three runs); the folder is printed at the end of the run.
With CARILLON_UPDATE_DOCS_SCREENSHOTS=1 they are also copied to docs/screenshots/ (the
README's pictures, committed).
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import (
    ROOT,
    Stack,
    running_stack,
    start_api,
    unavailable,
)
from worker import catalog

CHROMIUM = Path(os.environ.get("CARILLON_CHROMIUM", "/usr/bin/chromium"))
#: Headless, and nothing that would reach the network (the machine reaches only registries).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]
DOCS_SCREENSHOTS = ROOT / "docs" / "screenshots"
_SHOTS_KEY = pytest.StashKey[Path]()


@dataclass
class Live:
    """The running stack the browser talks to, and credentials on it."""

    stack: Stack
    base: str
    org: str
    api_key: str
    token: str
    admin_token: str

    def url(self, hash_: str = "") -> str:
        return f"{self.base}/monitoring{hash_}"


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """One chromium for the session (each test opens its own context: fresh storage)."""
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError as exc:  # pragma: no cover - installed by the dev extras
        unavailable(f"playwright is not installed: {exc}")
    # Assertions poll up to this long: two cores shared with a worker, beat and gunicorn.
    expect.set_options(timeout=15_000)
    if not os.access(CHROMIUM, os.X_OK):
        unavailable(f"{CHROMIUM} is missing: run `make chromium` (apt-get install chromium)")
    manager = sync_playwright().start()
    try:
        launched = manager.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, timeout=60_000
        )
    except Exception:
        manager.stop()
        raise
    try:
        yield launched
    finally:
        launched.close()
        manager.stop()


@pytest.fixture(scope="session")
def screenshots(request: pytest.FixtureRequest) -> Path:
    chosen = os.environ.get("CARILLON_SCREENSHOTS_DIR")
    folder = Path(chosen) if chosen else ROOT / ".carillon" / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    request.config.stash[_SHOTS_KEY] = folder
    return folder


def shoot(page: Any, folder: Path, name: str) -> Path:
    """Save a full-page screenshot of the current view (and to docs/ when asked)."""
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    if os.environ.get("CARILLON_UPDATE_DOCS_SCREENSHOTS") == "1":
        DOCS_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, DOCS_SCREENSHOTS / path.name)
    return path


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    folder = config.stash.get(_SHOTS_KEY, None)
    if folder is not None and any(folder.glob("*.png")):
        terminalreporter.write_line(f"monitoring page screenshots: {folder}")


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """PostgreSQL + Redis, a worker, beat and the API under gunicorn with an admin token."""
    with running_stack(tmp_path_factory.mktemp("browser")) as built:
        admin_token = secrets.token_urlsafe(24)
        base = start_api(built, 2, CARILLON_ADMIN_TOKEN=admin_token)
        org = f"org{secrets.token_hex(4)}"
        with built.sessions() as s, s.begin():
            created = catalog.create_credentials(s, org)
        yield Live(built, base, org, created["apiKey"], created["token"], admin_token)


class PageProblems:
    """JavaScript errors and Content-Security-Policy refusals seen by a page: none allowed."""

    def __init__(self) -> None:
        self.found: list[str] = []

    def console(self, message: Any) -> None:
        text = message.text
        if message.type == "error" and not _expected_http_error(text):
            self.found.append(f"console: {text}")

    def error(self, exc: Any) -> None:
        self.found.append(f"page error: {exc}")


def _expected_http_error(text: str) -> bool:
    # The browser logs every 4xx answer ("Failed to load resource"); the tests provoke some
    # (wrong credentials, an unknown workflow). Script errors and CSP refusals still count.
    return text.startswith("Failed to load resource")


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh context (empty sessionStorage) and page; fails the test on script errors."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(20_000)
    opened = context.new_page()
    problems = PageProblems()
    opened.on("console", problems.console)
    opened.on("pageerror", problems.error)
    try:
        yield opened
    finally:
        context.close()
    assert problems.found == [], problems.found
