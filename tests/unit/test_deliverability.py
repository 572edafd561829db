"""deliverabilityUpdate: rules and domains loaded whole or not at all; bounce texts qualified."""

from __future__ import annotations

import copy
import dataclasses
import json
from typing import Any

import pytest
from sqlalchemy import func, select

from tests.conftest import Harness
from tests.technical import run_technical
from tests.unit.test_analytics import Sink
from worker.errors import ActivityError
from worker.technical import deliverability
from worker.technical.tables import bounce_rule, mail_domain

SHIPPED = json.loads(deliverability.DEFAULT_SOURCE.read_text())


def _run(harness: Harness) -> str:
    return run_technical(harness, "deliverabilityUpdate")


def _counts(harness: Harness) -> tuple[int, int]:
    with harness.sessions() as s:
        rules = s.execute(select(func.count()).select_from(bounce_rule)).scalar_one()
        domains = s.execute(select(func.count()).select_from(mail_domain)).scalar_one()
    return rules, domains


def test_the_shipped_list_loads_and_qualifies_bounces(harness: Harness) -> None:
    assert _run(harness) == "finished"
    assert _counts(harness) == (len(SHIPPED["rules"]), len(SHIPPED["domains"]))
    with harness.sessions() as s:
        assert deliverability.qualify(s, "550 5.1.1 <a@b.fr>: User unknown") == (
            "hard",
            "unknownUser",
        )
        assert deliverability.qualify(s, "452 4.2.2 Mailbox full") == ("soft", "mailboxFull")
        assert deliverability.qualify(s, "Out of office until Monday")[0] == "ignored"
        assert deliverability.qualify(s, "x" * 10**6) == ("soft", "unknown")


class _Source(Sink):
    """The loopback sink answering GET with a fixed document."""

    def __init__(self, document: Any) -> None:
        super().__init__()
        body = json.dumps(document).encode()

        def handler(request: Any) -> None:
            request.send_response(200)
            request.send_header("Content-Length", str(len(body)))
            request.end_headers()
            request.wfile.write(body)

        self.server.RequestHandlerClass.do_GET = handler  # type: ignore[attr-defined]


def _with_source(harness: Harness, document: Any) -> _Source:
    source = _Source(document)
    harness.settings = dataclasses.replace(harness.settings, deliverability_url=source.url)
    harness.engine.settings = harness.settings
    return source


def test_an_http_source_replaces_the_list(harness: Harness) -> None:
    assert _run(harness) == "finished"
    document = {
        "rules": [{"pattern": "(?i)gone", "kind": "hard", "reason": "gone"}],
        "domains": [{"domain": "Example.ORG", "mx": ["mx.example.org"]}],
    }
    source = _with_source(harness, document)
    try:
        assert _run(harness) == "finished"
    finally:
        source.close()
    assert _counts(harness) == (1, 1)
    assert harness.query(select(mail_domain.c.domain, mail_domain.c.mx)) == [
        ("example.org", ["mx.example.org"])
    ]


def _broken(change: Any) -> dict[str, Any]:
    document = copy.deepcopy(SHIPPED)
    change(document)
    return document


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([], "must be an object"),
        ({"rules": {}, "domains": []}, "must be lists"),
        (_broken(lambda d: d["rules"].append({"pattern": "(", "kind": "hard"})), "regular"),
        (_broken(lambda d: d["rules"].append({"pattern": "x", "kind": "rm"})), "'kind'"),
        (_broken(lambda d: d["rules"].append({"pattern": "x" * 256, "kind": "hard"})), "255"),
        (_broken(lambda d: d["domains"].append({"domain": "../etc"})), "domain name"),
        (_broken(lambda d: d["domains"].append({"domain": "a.fr", "mx": ["x;rm"]})), "host"),
        (
            _broken(lambda d: d["domains"].append({"domain": "a.fr", "maxConnections": True})),
            "maxConnections",
        ),
        ({"rules": [{"pattern": "a", "kind": "hard"}] * 1001, "domains": []}, "at most"),
    ],
)
def test_a_bad_source_fails_the_run_and_changes_nothing(
    harness: Harness, document: Any, message: str
) -> None:
    assert _run(harness) == "finished"
    before = _counts(harness)
    with pytest.raises(ActivityError, match=message):
        deliverability.check(document)
    source = _with_source(harness, document)
    try:
        assert _run(harness) == "error"
    finally:
        source.close()
    assert _counts(harness) == before
