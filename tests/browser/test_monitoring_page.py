"""The monitoring page in headless chromium against the real stack (issue 7): log in, see a
running workflow, pause and resume it from the page (the database agrees), open a task's
logs, the admin's technical workflows, validations, workers, errors, and keyboard-only use."""

from __future__ import annotations

import re
import secrets
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import Live, shoot
from tests.integration.conftest import wait_for
from worker.technical import admin

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

#: How long the page may take to show a change: a command is applied by the worker, then
#: the page sees it at its next poll (every 2 s).
SEEN = 30_000


def expect() -> Any:
    from playwright.sync_api import expect as found

    return found


def monitored(name: str) -> dict[str, Any]:
    """start -> test (logs its choice) -> a one-hour wait (keeps the workflow started) -> end."""
    return {
        "id": name,
        "label": "Monitored campaign",
        "activities": [
            {"name": "start1", "type": "start", "transitions": {"done": "test1"}},
            {
                "name": "test1",
                "type": "test",
                "conditions": [
                    {"name": "never", "when": {"field": "vars.x", "op": "eq", "value": "y"}}
                ],
                "transitions": {"never": "end1", "default": "wait1"},
            },
            {"name": "wait1", "type": "wait", "duration": "1h", "transitions": {"done": "end1"}},
            {"name": "end1", "type": "end"},
        ],
    }


def running_workflow(live: Live) -> str:
    """A started workflow of the org whose wait task is waiting, and its name."""
    name = f"monitored{secrets.token_hex(3)}"
    live.stack.start(monitored(name), org=live.org)

    def waiting() -> bool:
        with live.stack.sessions() as s:
            from sqlalchemy import select

            from worker.models import Task, Workflow

            return (
                s.scalars(
                    select(Task.state)
                    .join(Workflow, Workflow.id == Task.workflow_id)
                    .where(Workflow.name == name, Task.activity == "wait1")
                ).first()
                == "waiting"
            )

    wait_for(waiting, 60, f"{name}'s wait task to be waiting")
    return name


def login_org(page: Any, live: Live) -> None:
    page.goto(live.url())
    page.fill("#login-org", live.org)
    page.fill("#login-key", live.api_key)
    page.fill("#login-token", live.token)
    page.click("#org-login button[type=submit]")
    expect()(page.locator("#who-text")).to_have_text(f"organization {live.org}")


def login_admin(page: Any, live: Live) -> None:
    page.goto(live.url())
    page.fill("#login-admin", live.admin_token)
    page.click("#admin-login button[type=submit]")
    expect()(page.locator("#who-text")).to_have_text("administrator")


def test_the_page_loads_with_its_security_headers_and_the_login_form(page: Any, live: Live) -> None:
    response = page.goto(live.url())

    assert response.status == 200
    headers = response.headers
    assert "script-src 'self'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY"
    expect()(page.get_by_role("heading", name="Log in")).to_be_visible()
    # No data, no navigation and no logout before a login.
    for part in ("#nav", "#who", "#summary", "#live"):
        expect()(page.locator(part)).to_be_hidden()


def test_wrong_credentials_show_an_error_and_keep_the_login_form(
    page: Any, live: Live, screenshots: Path
) -> None:
    page.goto(live.url())
    page.fill("#login-org", live.org)
    page.fill("#login-key", "not-the-key")
    page.fill("#login-token", "not-the-token")
    page.click("#org-login button[type=submit]")

    problem = page.locator("#login-error")
    expect()(problem).to_be_visible()
    expect()(problem).to_contain_text("wrong credentials")
    assert page.evaluate("sessionStorage.length") == 0
    assert page.locator("#nav").is_hidden()
    page.fill("#login-admin", "not-the-admin-token")
    page.click("#admin-login button[type=submit]")
    expect()(problem).to_contain_text("wrong credentials")
    shoot(page, screenshots, "login-refused")


def test_an_org_sees_its_running_workflow_pauses_resumes_it_and_reads_a_tasks_logs(
    page: Any, live: Live, screenshots: Path
) -> None:
    name = running_workflow(live)
    login_org(page, live)

    # The list: the workflow, started, with its current job's tasks.
    row = page.locator("#workflows tbody tr", has_text=name)
    expect()(row).to_contain_text("started", timeout=SEEN)
    expect()(row).to_contain_text("waiting")
    expect()(page.locator("#summary")).to_contain_text("started")
    shoot(page, screenshots, "workflows")

    # Its page: the graph with each activity's state, then pause from the page.
    row.get_by_role("link").click()
    expect()(page.locator("#workflow-state")).to_have_text("started")
    wait_box = page.locator('#graph g.node[data-activity="wait1"]')
    expect()(wait_box).to_contain_text("waiting")
    expect()(wait_box).to_have_class(re.compile(r"state-waiting"))
    expect()(page.locator('#graph g.node[data-activity="test1"]')).to_contain_text("done 1")
    expect()(page.locator("#tasks tbody tr")).to_have_count(3, timeout=SEEN)
    shoot(page, screenshots, "workflow")

    page.click("#command-pause")
    expect()(page.locator("#workflow-state")).to_have_text("paused", timeout=SEEN)
    expect()(page.locator("#status")).to_contain_text(f"Workflow {name} is now paused")
    assert live.stack.state(name) == "paused"

    page.click("#command-resume")
    expect()(page.locator("#workflow-state")).to_have_text("started", timeout=SEEN)
    live.stack.wait_state(name, "started")

    # A task's logs: the test activity logged the outlet it chose.
    test_row = page.locator("#tasks tbody tr", has_text="test1")
    test_row.get_by_role("button", name=re.compile("Logs of task test1")).click()
    expect()(page.locator("#logs-title")).to_be_focused()
    lines = page.locator("#logs tbody tr")
    expect()(lines.first).to_contain_text("no condition is true: default outlet")
    expect()(lines).to_have_count(1)
    expect()(page.locator("#log-task-chip")).to_contain_text("task test1")
    shoot(page, screenshots, "task-logs")

    # Filters: the log of the whole workflow has the pause and the resume too.
    page.locator("#log-task-chip").get_by_role("button", name="show every task").click()
    page.fill("#log-q", "paused")
    page.locator("#logs-title ~ form button[type=submit]").click()
    expect()(page.locator("#logs tbody tr").first).to_contain_text("workflow paused")

    # Choosing an activity in the graph filters the tasks.
    page.click('#graph g.node[data-activity="wait1"]')
    expect()(page.locator("#tasks tbody tr")).to_have_count(1)
    expect()(page.locator("#tasks tbody tr")).to_contain_text("wait1")
    live.stack.engine.command(None, name, "stop")


def test_keyboard_only_login_and_pause_with_a_visible_focus(
    page: Any, live: Live, screenshots: Path
) -> None:
    name = running_workflow(live)
    page.goto(live.url())
    keyboard = page.keyboard

    def tab_to(selector: str, limit: int = 80) -> None:
        target = page.locator(selector)
        for _ in range(limit):
            keyboard.press("Tab")
            if target.evaluate("el => el === document.activeElement"):
                return
        raise AssertionError(f"{selector} not reached with {limit} presses of Tab")

    tab_to("#login-org")
    keyboard.type(live.org)
    keyboard.press("Tab")
    keyboard.type(live.api_key)
    keyboard.press("Tab")
    keyboard.type(live.token)
    keyboard.press("Enter")
    expect()(page.locator("#who-text")).to_have_text(f"organization {live.org}")
    link = f'#workflows a[data-focus-key="open-{name}"]'
    expect()(page.locator(link)).to_be_visible(timeout=SEEN)
    tab_to(link)
    keyboard.press("Enter")
    expect()(page.locator("#workflow-state")).to_have_text("started")

    tab_to("#command-pause")
    # The focus is visible: a thick outline drawn by :focus-visible.
    style = page.locator("#command-pause").evaluate(
        "el => [el.matches(':focus-visible'), getComputedStyle(el).outlineStyle,"
        " parseFloat(getComputedStyle(el).outlineWidth)]"
    )
    assert style[0] is True and style[1] != "none" and style[2] >= 2, style
    shoot(page, screenshots, "keyboard-focus")
    keyboard.press("Enter")
    expect()(page.locator("#workflow-state")).to_have_text("paused", timeout=SEEN)
    live.stack.wait_state(name, "paused")
    # The live refresh kept the focus where the user was.
    expect()(page.locator("#command-pause")).to_be_focused()
    keyboard.press("Tab")
    expect()(page.locator("#command-resume")).to_be_focused()
    keyboard.press("Enter")
    live.stack.wait_state(name, "started")
    live.stack.engine.command(None, name, "stop")


def test_the_admin_sees_and_pauses_technical_workflows(
    page: Any, live: Live, screenshots: Path
) -> None:
    login_admin(page, live)
    page.get_by_role("link", name="Technical workflows").click()
    rows = page.locator("#technical tbody tr")
    expect()(rows.first).to_be_visible(timeout=SEEN)
    assert rows.count() >= 10
    first = rows.first
    technical_name = first.locator("th code").inner_text()
    shoot(page, screenshots, "technical")

    first.get_by_role("button", name=f"Pause {technical_name}").click()
    expect()(page.locator("#technical-note")).to_contain_text(f"{technical_name} paused")
    expect()(page.locator("#technical tbody tr").first).to_contain_text("paused", timeout=SEEN)
    with live.stack.sessions() as s, s.begin():
        assert admin.describe(s, technical_name)["enabled"] is False
    page.locator("#technical tbody tr").first.get_by_role(
        "button", name=f"Resume {technical_name}"
    ).click()
    expect()(page.locator("#technical-note")).to_contain_text(f"{technical_name} resumed")
    with live.stack.sessions() as s, s.begin():
        wait_for(lambda: admin.describe(s, technical_name)["enabled"], 10, "resumed")

    # Run now: the database cleanup starts on the worker; the page shows its outcome.
    cleanup = page.locator("#technical tbody tr", has_text="cleanup")
    cleanup.get_by_role("button", name="Run cleanup now").click()
    expect()(page.locator("#technical-note")).to_contain_text("cleanup: run started")
    expect()(cleanup).to_contain_text("started", timeout=SEEN)

    def outcome() -> Any:
        with live.stack.sessions() as s, s.begin():
            return admin.describe(s, "cleanup")["lastOutcome"]

    assert wait_for(outcome, 30, "cleanup's outcome").startswith("started")


def test_the_admin_chooses_the_organization_to_look_at(page: Any, live: Live) -> None:
    name = running_workflow(live)
    login_admin(page, live)

    page.select_option("#org-select", live.org)
    expect()(page.get_by_role("heading", name=f"Workflows of {live.org}")).to_be_visible()
    row = page.locator("#workflows tbody tr", has_text=name)
    expect()(row).to_contain_text("started", timeout=SEEN)
    # The admin pauses it with the same page and API as the organization would.
    row.get_by_role("link").click()
    expect()(page.locator("#workflow-state")).to_have_text("started")
    page.click("#command-pause")
    expect()(page.locator("#workflow-state")).to_have_text("paused", timeout=SEEN)
    live.stack.wait_state(name, "paused")
    live.stack.engine.command(None, name, "stop")


def test_an_org_login_does_not_see_technical_workflows(page: Any, live: Live) -> None:
    login_org(page, live)

    assert page.locator("#nav-technical").is_hidden()
    page.goto(live.url("#/technical"))
    expect()(page.get_by_role("heading", name=re.compile("^Workflows of"))).to_be_visible()


def test_workers_queues_and_throughput_charts(page: Any, live: Live, screenshots: Path) -> None:
    running_workflow(live)
    login_org(page, live)
    page.get_by_role("link", name="Workers").click()

    expect()(page.locator("#workers tbody tr").first).to_contain_text("online", timeout=SEEN)
    expect()(page.locator("#queues tbody")).to_contain_text("carillon.flow")
    chart = page.locator("#throughput svg.chart")
    expect()(chart).to_be_visible()
    assert re.search(r"tasks done \d+", chart.get_attribute("aria-label") or "")
    shoot(page, screenshots, "workers")


def test_an_api_error_is_shown_and_a_refused_token_goes_back_to_login(
    page: Any, live: Live
) -> None:
    login_org(page, live)

    page.goto(live.url("#/workflow/noSuchWorkflow"))
    expect()(page.locator("#error")).to_contain_text("HTTP 404", timeout=SEEN)

    # Credentials revoked (here: altered) while logged in: the next poll gets a 401.
    page.evaluate(
        "() => { const c = JSON.parse(sessionStorage.getItem('carillon.monitoring.credentials'));"
        " c.token = 'revoked'; sessionStorage.setItem('carillon.monitoring.credentials',"
        " JSON.stringify(c)); }"
    )
    expect()(page.get_by_role("heading", name="Log in")).to_be_visible(timeout=SEEN)
    expect()(page.locator("#login-error")).to_contain_text("log in again")
    assert page.evaluate("sessionStorage.getItem('carillon.monitoring.credentials')") is None


def test_logout_forgets_the_credentials(page: Any, live: Live) -> None:
    login_org(page, live)
    page.get_by_role("button", name="Log out").click()

    expect()(page.get_by_role("heading", name="Log in")).to_be_visible()
    assert page.evaluate("sessionStorage.length") == 0
    expect()(page.locator("#who")).to_be_hidden()
    page.reload()
    expect()(page.get_by_role("heading", name="Log in")).to_be_visible()


def approval(name: str, subject: str) -> dict[str, Any]:
    return {
        "id": name,
        "activities": [
            {"name": "start1", "type": "start", "transitions": {"done": "validation1"}},
            {
                "name": "validation1",
                "type": "validation",
                "subject": subject,
                "assignee": "alice",
                "transitions": {"approved": "sent", "rejected": "dropped", "timeout": "late"},
            },
            {"name": "sent", "type": "end"},
            {"name": "dropped", "type": "end"},
            {"name": "late", "type": "end"},
        ],
    }


def ended_at(live: Live, name: str) -> str | None:
    """Which end activity of an approval workflow ran, if one did."""
    from sqlalchemy import select

    from worker.models import Task, Workflow

    with live.stack.sessions() as s:
        return s.scalars(
            select(Task.activity)
            .join(Workflow, Workflow.id == Task.workflow_id)
            .where(
                Workflow.name == name,
                Task.activity.in_(["sent", "dropped", "late"]),
                Task.state == "done",
            )
        ).first()


def test_validations_are_approved_and_rejected_from_the_page(
    page: Any, live: Live, screenshots: Path
) -> None:
    tag = secrets.token_hex(3)
    approved, rejected = f"approve{tag}", f"reject{tag}"
    live.stack.start(approval(approved, f"Send the spring offer {tag}?"), org=live.org)
    live.stack.start(approval(rejected, f"Send the winter offer {tag}?"), org=live.org)
    login_org(page, live)
    page.get_by_role("link", name="Validations").click()

    spring = page.locator("#validations tbody tr", has_text=f"spring offer {tag}")
    winter = page.locator("#validations tbody tr", has_text=f"winter offer {tag}")
    expect()(spring).to_be_visible(timeout=SEEN)
    expect()(winter).to_be_visible(timeout=SEEN)
    shoot(page, screenshots, "validations")

    spring.get_by_role("button", name=re.compile("^Approve")).click()
    dialog = page.locator("#decision")
    expect()(dialog).to_be_visible()
    page.fill("#decision-user", "alice")
    page.click("#decision-confirm")
    expect()(dialog).to_be_hidden()
    expect()(page.locator("#validation-note")).to_contain_text("approved")
    wait_for(lambda: ended_at(live, approved) == "sent", 60, "the approved branch")

    # A rejection needs a comment: the page says so and sends nothing.
    winter.get_by_role("button", name=re.compile("^Reject")).click()
    expect()(page.locator("#decision-user")).to_have_value("alice")
    page.click("#decision-confirm")
    expect()(dialog.get_by_role("alert")).to_contain_text("needs a comment")
    assert ended_at(live, rejected) is None
    page.fill("#decision-comment", "the winter offer is over")
    page.click("#decision-confirm")
    expect()(dialog).to_be_hidden()
    wait_for(lambda: ended_at(live, rejected) == "dropped", 60, "the rejected branch")
    expect()(page.locator("#validations tbody tr", has_text=tag)).to_have_count(0, timeout=SEEN)


def test_live_updates_can_be_paused_and_resumed(page: Any, live: Live) -> None:
    name = running_workflow(live)
    login_org(page, live)
    page.goto(live.url(f"#/workflow/{name}"))
    expect()(page.locator("#workflow-state")).to_have_text("started")

    toggle = page.get_by_role("button", name="Pause live updates")
    toggle.click()
    expect()(page.get_by_role("button", name="Resume live updates")).to_have_attribute(
        "aria-pressed", "true"
    )
    expect()(page.locator("#status")).to_have_text("Live updates paused")
    # Changed behind the page's back (the CLI's way): seen once updates resume.
    live.stack.engine.command(None, name, "pause")
    page.get_by_role("button", name="Resume live updates").click()
    expect()(page.locator("#workflow-state")).to_have_text("paused", timeout=SEEN)
    expect()(page.locator("#live-text")).to_contain_text("Live · updated")
    live.stack.engine.command(None, name, "stop")


def test_hostile_text_from_the_api_is_shown_as_text(page: Any, live: Live) -> None:
    name = f"hostile{secrets.token_hex(3)}"
    label = '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script>'
    body = monitored(name)
    body["label"] = label
    live.stack.save(body, org=live.org)
    login_org(page, live)
    page.fill("#workflow-q", name)
    page.get_by_role("button", name="Filter").click()

    row = page.locator("#workflows tbody tr")
    expect()(row).to_have_count(1)
    expect()(row.get_by_role("link")).to_have_text(f"{label} ({name})")
    assert page.locator("#workflows img").count() == 0
    assert page.evaluate("window.pwned") is None
