"""deliverabilityUpdate: load the bounce qualification rules and the mail domains with their MX.

The source is CARILLON_DELIVERABILITY_URL (GET, JSON) or, by default, the list shipped with
Carillon (worker/technical/data/deliverability.json). The whole list is checked before
anything is written, then replaces the previous one in the run's transaction: a bad or
partial answer changes nothing. `qualify` is how a bounce text becomes hard, soft, complaint
or ignored.
"""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from worker.activities.base import ActivityType, Context, Outcome
from worker.config import Settings
from worker.errors import ActivityError
from worker.registry import register
from worker.technical import http
from worker.technical.tables import bounce_rule, mail_domain

DEFAULT_SOURCE = Path(__file__).parent / "data" / "deliverability.json"
KINDS = ("hard", "soft", "complaint", "ignored")
MAX_RULES = 1_000
MAX_DOMAINS = 10_000
DOMAIN_RE = re.compile(r"^(?=.{1,253}\Z)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}\Z")
REASON_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}\Z")


def fetch(settings: Settings) -> Any:
    """The raw list, from the configured URL or the shipped file."""
    if not settings.deliverability_url:
        return json.loads(DEFAULT_SOURCE.read_text(encoding="utf-8"))
    base = http.checked_base_url(settings.deliverability_url, "CARILLON_DELIVERABILITY_URL")
    raw = http.call(urllib.request.Request(base), "deliverability source")
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise ActivityError(f"deliverability source: not JSON ({exc})") from None


def _problem(where: str, message: str) -> ActivityError:
    return ActivityError(f"deliverability source: {where}: {message}; nothing was changed")


def check(document: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The rules and domains of a source document, or ActivityError saying what is wrong."""
    if not isinstance(document, Mapping):
        raise _problem("document", "must be an object with 'rules' and 'domains'")
    rules, domains = document.get("rules"), document.get("domains")
    if not isinstance(rules, list) or not isinstance(domains, list):
        raise _problem("document", "'rules' and 'domains' must be lists")
    if len(rules) > MAX_RULES or len(domains) > MAX_DOMAINS:
        raise _problem("document", f"at most {MAX_RULES} rules and {MAX_DOMAINS} domains")
    checked_rules: dict[str, dict[str, Any]] = {}
    for index, rule in enumerate(rules):
        where = f"rule {index + 1}"
        if not isinstance(rule, Mapping):
            raise _problem(where, "must be an object")
        pattern, kind, reason = rule.get("pattern"), rule.get("kind"), rule.get("reason", "")
        if not isinstance(pattern, str) or not 0 < len(pattern) <= 255:
            raise _problem(where, "'pattern' must be a string of 1 to 255 characters")
        try:
            re.compile(pattern)
        except re.error as exc:
            raise _problem(where, f"'pattern' is not a regular expression ({exc})") from None
        if kind not in KINDS:
            raise _problem(where, f"'kind' must be one of {', '.join(KINDS)}")
        if reason and (not isinstance(reason, str) or not REASON_RE.match(reason)):
            raise _problem(where, "'reason' must be a name (letters, digits, _)")
        checked_rules[pattern] = {
            "pattern": pattern,
            "kind": kind,
            "reason": reason,
            "position": index,
        }
    checked_domains: dict[str, dict[str, Any]] = {}
    for index, entry in enumerate(domains):
        where = f"domain {index + 1}"
        if not isinstance(entry, Mapping):
            raise _problem(where, "must be an object")
        domain, mx = entry.get("domain"), entry.get("mx", [])
        limit = entry.get("maxConnections", 10)
        if not isinstance(domain, str) or not DOMAIN_RE.match(domain.lower()):
            raise _problem(where, "'domain' must be a domain name")
        if not isinstance(mx, list) or len(mx) > 20:
            raise _problem(where, "'mx' must be a list of at most 20 host names")
        if not all(isinstance(host, str) and DOMAIN_RE.match(host.lower()) for host in mx):
            raise _problem(where, "'mx' must hold host names")
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 1000:
            raise _problem(where, "'maxConnections' must be an integer from 1 to 1000")
        checked_domains[domain.lower()] = {
            "domain": domain.lower(),
            "mx": [host.lower() for host in mx],
            "maxConnections": limit,
        }
    return list(checked_rules.values()), list(checked_domains.values())


def replace(s: Session, rules: list[dict[str, Any]], domains: list[dict[str, Any]]) -> None:
    s.execute(delete(bounce_rule))
    s.execute(delete(mail_domain))
    if rules:
        s.execute(insert(bounce_rule), rules)
    if domains:
        s.execute(insert(mail_domain), domains)


def qualify(s: Session, text: str) -> tuple[str, str]:
    """(kind, reason) of a bounce text by the first matching rule; ("soft", "unknown") else."""
    rules = s.execute(
        select(bounce_rule.c.pattern, bounce_rule.c.kind, bounce_rule.c.reason).order_by(
            bounce_rule.c.position
        )
    ).all()
    sample = text[:2000]  # bounded work per bounce whatever the provider sends
    for pattern, kind, reason in rules:
        if _compiled(pattern).search(sample):
            return kind, reason
    return "soft", "unknown"


@lru_cache(maxsize=2048)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


@register
class DeliverabilityUpdate(ActivityType):
    """Loads the bounce qualification rules, the mail domains and their MX."""

    name = "deliverabilityUpdate"
    family = "data"

    def run(self, ctx: Context) -> Outcome:
        rules, domains = check(fetch(ctx.settings))
        replace(ctx.session, rules, domains)
        ctx.log(f"{len(rules):,} bounce rule(s) and {len(domains):,} domain(s) loaded")
        return Outcome(counts={ctx.activity.name: len(rules) + len(domains)})
