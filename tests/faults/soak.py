"""`make soak`: every fault scenario (quick tier and soak tier) with several seeds, then a table.

    python -m tests.faults.soak [--seeds 1,2,3] [-k EXPR]

Runs pytest on tests/faults (soak-marked scenarios included) with CARILLON_FAULT_SEEDS, and
prints one row per fault of RELIABILITY.md (F1-F19): seeds run, invariants held on every
seed, worst recovery time (fault to settled stack) and the outcome; a fault with no
scenario (or deselected by -k) says `not run`. Exit status: pytest's.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
FAULTS = [f"F{i}" for i in range(1, 20)]
TEST_NAME = re.compile(r"test_(f\d+)[a-z]?_")


def _outcomes(junit: Path) -> dict[str, list[str]]:
    """Fault -> outcome per test case (passed, failed, xfail, skipped)."""
    found: dict[str, list[str]] = defaultdict(list)
    if not junit.exists():
        return found
    for case in ET.parse(junit).getroot().iter("testcase"):
        match = TEST_NAME.match(case.get("name", ""))
        if not match:
            continue
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error"):
                outcome = "failed"
            elif child.tag == "skipped":
                outcome = "xfail" if child.get("type") == "pytest.xfail" else "skipped"
        found[match.group(1).upper()].append(outcome)
    return found


def _reports(path: Path) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = defaultdict(list)
    if path.exists():
        for line in path.read_text().splitlines():
            row = json.loads(line)
            found[row["fault"]].append(row)
    return found


def table(outcomes: dict[str, list[str]], reports: dict[str, list[dict[str, Any]]]) -> str:
    lines = [
        f"{'fault':<6} {'seeds':>5}  {'invariants held (all seeds)':<30} {'recovery':>9}  result",
        "-" * 78,
    ]
    for fault in FAULTS:
        cases, rows = outcomes.get(fault, []), reports.get(fault, [])
        if not cases:
            lines.append(f"{fault:<6} {'-':>5}  {'-':<30} {'-':>9}  not run")
            continue
        held = set.intersection(*(set(r["held"]) for r in rows)) if rows else set()
        checked = sorted({i for r in rows for i in r["checked"]})
        shown = ",".join(i for i in checked if i in held) or "-"
        broken = sorted({i for i in checked if i not in held})
        if broken:
            shown += f" (broke {','.join(broken)})"
        recovery = f"{max(r['recovery'] for r in rows):.1f}s" if rows else "-"
        counts = {o: cases.count(o) for o in sorted(set(cases))}
        result = " ".join(f"{n} {o}" for o, n in counts.items())
        lines.append(f"{fault:<6} {len(cases):>5}  {shown:<30} {recovery:>9}  {result}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="1,2,3", help="comma-separated seeds (1,2,3)")
    parser.add_argument("-k", default="", help="pytest -k expression (a subset of faults)")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="carillon-soak-"))
    report, junit = work / "report.jsonl", work / "junit.xml"
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/faults"]
    command += ["--junitxml", str(junit)]
    if args.k:
        command += ["-k", args.k]
    env = {**os.environ, "CARILLON_FAULT_SEEDS": args.seeds, "CARILLON_FAULT_REPORT": str(report)}
    status = subprocess.run(command, cwd=ROOT, env=env, check=False).returncode
    print()
    print(f"soak: seeds {args.seeds}; report {report}")
    print(table(_outcomes(junit), _reports(report)))
    return status


if __name__ == "__main__":
    sys.exit(main())
