"""Run the schemathesis CLI against a live API's /openapi.json and collect its failures."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

#: The organization's credentials reach schemathesis through its environment (resolved by its
#: config file), never through a file on disk or its command line.
_CONFIG = """\
# As the document's security schemes, so that schemathesis knows them for what they are
# (it leaves one out on purpose to test a missing credential: a fixed header would not be).
[auth.openapi.bearerAuth]
bearer = "${CARILLON_ST_TOKEN}"

[auth.openapi.apiKey]
api_key = "${CARILLON_ST_API_KEY}"

# 413 is the documented answer to a body over 64 KB: a correct rejection of negative data.
[checks.negative_data_rejection]
expected-statuses = [400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 428, 429]

# 422 invalidDefinition / invalidTemplate: well-formed but not valid, for what no schema can
# say (a definition's activity types, options and graph; a template's Jinja). The document
# states the shapes exactly: a schema-valid request refused with 400 still fails the run.
[[operations]]
include-operation-id = [
  "definitions_create_definition_post",
  "definitions_put_definition_put",
  "templates_create_post",
]
checks.positive_data_acceptance.expected-statuses = [
  "2xx", "3xx", "401", "403", "404", "409", "422", "429", "5xx",
]

[parameters]
"path.org" = "${CARILLON_ST_ORG}"
"""

#: Makes generated Idempotency-Keys fresh per request (tests/faults/schemathesis_hooks.py).
HOOKS = "tests.faults.schemathesis_hooks"
ROOT = Path(__file__).resolve().parents[2]


#: schemathesis failure codes of a 5xx answer (`st explain ST101`).
SERVER_ERROR_CODES = frozenset({"ST101", "ST102"})
_SERVER_ERROR = re.compile(r"^\[5\d\d\]", re.MULTILINE)


@dataclass
class Finding:
    """One failed schemathesis test case: the operation, the failure codes, their report."""

    operation: str
    checks: set[str]
    detail: str

    def __str__(self) -> str:
        return f"{self.operation} [{', '.join(sorted(self.checks))}]\n{self.detail[:3000]}"


@dataclass
class Outcome:
    returncode: int
    output: str
    operations: int
    findings: list[Finding] = field(default_factory=list)

    def server_errors(self) -> list[Finding]:
        """Findings with a 5xx: ST101/ST102 (`not_a_server_error`) or any reported [5xx]."""
        return [
            f
            for f in self.findings
            if f.checks & SERVER_ERROR_CODES or _SERVER_ERROR.search(f.detail)
        ]


def st_binary() -> Path:
    return Path(sys.executable).with_name("st")


def run(
    base: str,
    org: str,
    api_key: str,
    token: str,
    work: Path,
    *,
    max_time: int = 200,
    max_examples: int = 5,
    seed: int = 1,
    pinned: dict[str, str] | None = None,
) -> Outcome:
    """`st run` with every check, one worker, bounded by `max_time` (and a hard timeout).

    `pinned` fixes path parameters (name -> value) so that some requests reach real rows.
    """
    assert base.startswith("http://127.0.0.1:"), base  # loopback only
    config = work / "schemathesis.toml"
    lines = [f'"path.{name}" = "{value}"' for name, value in (pinned or {}).items()]
    config.write_text(_CONFIG + "".join(f"{line}\n" for line in lines))
    junit = work / "junit.xml"
    command = [
        str(st_binary()),
        "--config-file",
        str(config),
        "run",
        f"{base}/openapi.json",
        "--checks",
        "all",
        "--max-examples",
        str(max_examples),
        "--max-time",
        str(max_time),
        "--workers",
        "1",
        "--seed",
        str(seed),
        "--request-timeout",
        "20",
        "--generation-database",
        "none",
        "--report",
        "junit",
        "--report-junit-path",
        str(junit),
        "--no-color",
    ]
    env = {
        **os.environ,
        "CARILLON_ST_ORG": org,
        "CARILLON_ST_API_KEY": api_key,
        "CARILLON_ST_TOKEN": token,
        "SCHEMATHESIS_HOOKS": HOOKS,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    done = subprocess.run(
        command,
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=max_time + 90,  # the hard bound if --max-time were not honoured
        check=False,
    )
    operations, findings = _junit(junit)
    return Outcome(done.returncode, done.stdout + done.stderr, operations, findings)


def _junit(path: Path) -> tuple[int, list[Finding]]:
    if not path.exists():
        return 0, []
    operations, findings = 0, []
    for case in ET.parse(path).getroot().iter("testcase"):
        operations += 1
        # A failure's `message` lists the failed checks' codes, its text the report with curl
        failed = [child for child in case if child.tag in ("failure", "error")]
        if failed:
            checks = {
                code.strip()
                for child in failed
                for code in (child.get("message") or child.tag).split(",")
                if child.tag == "failure"
            } | {"error" for child in failed if child.tag == "error"}
            detail = "\n".join((child.text or "").strip() for child in failed)
            findings.append(Finding(case.get("name", "?"), checks, detail))
    return operations, findings
