"""F15 helpers: a rate-limited API beside the stack's, locust and wrk as bounded subprocesses,
latency samples, process memory from /proc, and the limiter's keys in Redis.

locust is never imported here (it patches the process with gevent): it runs as
`.venv/bin/locust --headless` with tests/faults/locustfile.py, and wrk (Debian's package,
optional) with tests/faults/signal.lua. Both target 127.0.0.1 only.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.faults.harness import ApiClient, FaultStack
from tests.faults.servers import free_port
from tests.integration.conftest import api_healthy, wait_for
from worker.stack import api_command

HERE = Path(__file__).resolve().parent
LOCUSTFILE = HERE / "locustfile.py"
WRK_SCRIPT = HERE / "signal.lua"
LIMITED_API = "api_limited"
#: The limiter's Redis keys (api/ratelimit.py KEY_PREFIX).
LIMITER_KEYS = "carillon:ratelimit:*"


@dataclass
class LoadReport:
    """What a load tool saw: answers by status, 429s without Retry-After, latency (ms)."""

    tool: str
    statuses: dict[int, int]
    missing_retry_after: int
    requests: int
    p50: float
    p99: float
    max: float
    seconds: float

    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500 or status == 0)

    def line(self) -> str:
        by_status = " ".join(f"{s}:{n}" for s, n in sorted(self.statuses.items()))
        return (
            f"{self.tool:<6} {self.requests:>6} requests in {self.seconds:4.0f}s  p50 "
            f"{self.p50:6.1f} ms  p99 {self.p99:7.1f} ms  max {self.max:7.1f} ms  [{by_status}]"
        )


def start_limited_api(stack: FaultStack, rate: str, workers: int = 2) -> str:
    """A second gunicorn on the stack's database with CARILLON_RATE_LIMIT=`rate` and the
    buckets in the stack's Redis; its base URL. Stopped by PID with stop_limited_api()."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    stack.spawn(
        LIMITED_API,
        api_command("127.0.0.1", port, workers),
        CARILLON_RATE_LIMIT=rate,
        CARILLON_RATE_LIMIT_REDIS=stack.servers.redis.url,
        CARILLON_PUBLIC_URL=base,
    )

    wait_for(
        lambda: api_healthy(base), 60, "the rate-limited gunicorn to answer /healthz", interval=0.2
    )
    return base


def stop_limited_api(stack: FaultStack) -> None:
    if LIMITED_API in stack.processes:
        stack.kill(LIMITED_API, signal.SIGTERM)


def process_tree(pid: int) -> list[int]:
    """`pid` and its children (gunicorn's master and workers), from /proc."""
    found = [pid]
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # ended meanwhile
        # The parent is the 2nd field after the command, which may hold spaces: from the ')'
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == pid:
            found.append(int(entry.name))
    return found


def rss_kib(pids: list[int]) -> dict[int, int]:
    """Resident memory (VmRSS, KiB) of each process still alive."""
    sizes = {}
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    sizes[pid] = int(line.split()[1])
        except OSError:
            continue
    return sizes


def sample_latency(client: ApiClient, base: str, path: str, count: int) -> list[float]:
    """`count` sequential GETs of `path` on `base` (ms each), for an unloaded baseline."""
    url = f"{base}/{client.org}/campaign{path}"
    headers = {"Authorization": f"Bearer {client.token}", "X-Api-Key": client.api_key}
    took = []
    for _ in range(count):
        started = time.perf_counter()
        request = urllib.request.Request(url, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=20) as response:
                response.read()
        except urllib.error.HTTPError as error:
            error.read()
            assert error.code < 500, (error.code, path)
        took.append((time.perf_counter() - started) * 1000)
    return took


def p99(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[98]


def _load_env(client: ApiClient, workflow: str, segment: str, report: Path) -> dict[str, str]:
    trigger = f"/{client.org}/campaign/workflow/execution/{workflow}/activities/activity/signal1"
    return {
        **os.environ,
        "CARILLON_LOAD_ORG": client.org,
        "CARILLON_LOAD_TOKEN": client.token,
        "CARILLON_LOAD_API_KEY": client.api_key,
        "CARILLON_LOAD_WORKFLOW": workflow,
        "CARILLON_LOAD_SEGMENT": segment,
        "CARILLON_LOAD_REPORT": str(report),
        "CARILLON_LOAD_PATH": f"{trigger}/trigger",
        "CARILLON_LOAD_BODY": json.dumps({"source": "wrk", "parameters": {"segmentCode": segment}}),
    }


def _run_tool(
    command: list[str], work: Path, env: dict[str, str], *, timeout: float
) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run a load tool in `work` (bounded by `timeout`); its outcome and the seconds it took."""
    started = time.monotonic()
    done = subprocess.run(
        command, cwd=work, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    return done, time.monotonic() - started


def _load_report(
    tool: str, found: dict[str, Any], statuses: dict[int, int], took: float
) -> LoadReport:
    """A tool's JSON summary (same keys from locustfile.py and signal.lua) as a LoadReport."""
    return LoadReport(
        tool,
        statuses,
        int(found["missingRetryAfter"]),
        int(found["requests"]),
        float(found["p50"] or 0),
        float(found["p99"] or 0),
        float(found["max"] or 0),
        took,
    )


def run_locust(
    base: str,
    client: ApiClient,
    workflow: str,
    segment: str,
    work: Path,
    *,
    users: int = 32,
    seconds: int = 30,
) -> LoadReport:
    """`locust --headless` for `seconds` (at most 60) with `users` users; its report."""
    assert base.startswith("http://127.0.0.1:") and 0 < seconds <= 60, (base, seconds)
    report = work / "locust.json"
    command = [
        str(Path(sys.executable).with_name("locust")),
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "--host",
        base,
        "-u",
        str(users),
        "-r",
        str(users),
        "-t",
        f"{seconds}s",
        "--stop-timeout",
        "5",
        "--only-summary",
        "--exit-code-on-error",
        "0",
        "--loglevel",
        "WARNING",
    ]
    env = _load_env(client, workflow, segment, report)
    done, took = _run_tool(command, work, env, timeout=seconds + 60)
    assert done.returncode == 0 and report.exists(), (done.returncode, done.stderr[-3000:])
    found = json.loads(report.read_text())
    return _load_report("locust", found, {int(s): n for s, n in found["statuses"].items()}, took)


def wrk_binary() -> str | None:
    return shutil.which("wrk")


def run_wrk(
    base: str,
    client: ApiClient,
    workflow: str,
    segment: str,
    work: Path,
    *,
    connections: int = 32,
    seconds: int = 20,
) -> LoadReport:
    """`wrk -t2 -c<connections> -d<seconds>s -s signal.lua` (at most 60 s); its report."""
    binary = wrk_binary()
    assert binary, "wrk is not installed (make soak installs Debian's wrk)"
    assert base.startswith("http://127.0.0.1:") and 0 < seconds <= 60, (base, seconds)
    command = [
        binary,
        "-t2",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        "10s",
        "-s",
        str(WRK_SCRIPT),
        base,
    ]
    env = _load_env(client, workflow, segment, work / "unused.json")
    done, took = _run_tool(command, work, env, timeout=seconds + 30)
    lines = [line for line in done.stdout.splitlines() if line.startswith("WRK-JSON ")]
    assert done.returncode == 0 and lines, (done.returncode, done.stdout[-2000:], done.stderr)
    found: dict[str, Any] = json.loads(lines[-1].removeprefix("WRK-JSON "))
    statuses = {int(s): n for s, n in found["statuses"].items()}
    if found["socketErrors"]:
        statuses[0] = found["socketErrors"]  # counted as server errors: none may happen
    return _load_report("wrk", found, statuses, took)


def limiter_ttls(stack: FaultStack) -> dict[str, int]:
    """Each limiter key in Redis and its TTL in ms (-1: none, which must never be)."""
    client = stack.servers.redis.client()
    try:
        keys = list(client.scan_iter(match=LIMITER_KEYS, count=1000))[:10_000]
        return {(k.decode() if isinstance(k, bytes) else str(k)): int(client.pttl(k)) for k in keys}
    finally:
        client.close()
