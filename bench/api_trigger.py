"""Signal triggers per second through gunicorn, and trigger-to-first-activity latency over HTTP.

Next to a minimal Flask endpoint served by the same gunicorn settings in the same run. The
broker and database come from CARILLON_* (the Makefile points them at the local Redis and
PostgreSQL).

    python bench/api_trigger.py [--requests 2000] [--threads 8] [--latency 200]

The last line is JSON: triggers_per_s, flask_min_per_s, ratio, trigger_p50_ms, trigger_p99_ms.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.engine_overhead import ensure_database, percentile, signal_body  # noqa: E402


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def gunicorn(app: str, port: int, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    out = open(log, "wb")  # noqa: SIM115  (the child keeps it)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-w",
            "2",
            "-b",
            f"127.0.0.1:{port}",
            "--log-level",
            "warning",
            app,
        ],
        cwd=ROOT,
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    out.close()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return process
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{app} did not start; see {log}")


def post(conn: http.client.HTTPConnection, path: str, body: bytes, headers: dict[str, str]) -> int:
    conn.request("POST", path, body=body, headers=headers)
    response = conn.getresponse()
    response.read()
    return response.status


def load(port: int, path: str, headers: dict[str, str], total: int, threads: int) -> float:
    """Requests per second: `total` POSTs over `threads` keep-alive connections."""
    body = json.dumps({"source": "bench", "parameters": {"n": 1}}).encode()
    statuses: list[int] = []
    lock = threading.Lock()
    per_thread = total // threads

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        got = [post(conn, path, body, headers) for _ in range(per_thread)]
        conn.close()
        with lock:
            statuses.extend(got)

    started = time.perf_counter()
    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    elapsed = time.perf_counter() - started
    bad = [s for s in statuses if s != 202]
    if bad:
        raise SystemExit(f"{len(bad)} of {len(statuses)} requests were not 202 (e.g. {bad[0]})")
    return len(statuses) / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="POSTs per side (2000)")
    parser.add_argument("--threads", type=int, default=8, help="client connections (8)")
    parser.add_argument("--latency", type=int, default=200, help="sequential triggers (200)")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="carillon-bench-api-"))
    api_port, min_port = free_port(), free_port()
    os.environ.setdefault("CARILLON_HOME", str(home))
    os.environ["CARILLON_ACTIVITY_MODULES"] = "tests.plugins"
    os.environ["CARILLON_SIGNAL_MIN_INTERVAL"] = "0"  # throughput, not the 10-minute rule
    os.environ["CARILLON_PUBLIC_URL"] = f"http://127.0.0.1:{api_port}"
    from worker.config import Settings

    settings = Settings.from_env()
    ensure_database(settings.database_url)

    from sqlalchemy import select

    import tests.plugins  # noqa: F401
    from bench.app import app as celery_app
    from worker import catalog, schema
    from worker.db import make_engine, make_session_factory
    from worker.engine import Engine
    from worker.models import Task
    from worker.queues import QUEUES
    from worker.tasks import CeleryDispatcher

    db = make_engine(settings.database_url)
    schema.upgrade(db)
    sessions = make_session_factory(db)
    engine = Engine(settings, sessions, CeleryDispatcher(celery_app), worker_name="bench")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    print(f"database {settings.database_url}\nbroker   {settings.broker_url}")

    log = open(home / "worker.log", "wb")  # noqa: SIM115
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "bench.app",
            "worker",
            "-c",
            "2",
            "--loglevel",
            "WARNING",
            "--without-gossip",
            "--without-mingle",
            "-Q",
            ",".join(QUEUES),
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    servers = [
        gunicorn("api.wsgi:app", api_port, env, home / "api.log"),
        gunicorn("bench.minimal_app:app", min_port, env, home / "minimal.log"),
    ]
    try:
        stamp = f"{int(time.time())}"
        with sessions() as s, s.begin():
            org = catalog.ensure_org(s, f"bench{stamp}")
            name = catalog.save_definition(s, org, signal_body(f"api{stamp}")).name
            creds = catalog.create_credentials(s, org.name)
        engine.command(None, name, "start")
        with sessions() as s:
            wf = engine.find_workflow(s, None, name)
            href = engine.trigger_href(wf, "signal1", s)
        path = urllib.parse.urlparse(href).path
        headers = {
            "Content-Type": "application/json",
            "X-Api-Key": creds["apiKey"],
            "Authorization": f"Bearer {creds['token']}",
        }

        load(api_port, path, headers, 200, args.threads)  # warm both servers
        load(min_port, "/trigger", {"Content-Type": "application/json"}, 200, args.threads)
        triggers_per_s = load(api_port, path, headers, args.requests, args.threads)
        flask_per_s = load(
            min_port, "/trigger", {"Content-Type": "application/json"}, args.requests, args.threads
        )

        # Let the worker drain the jobs the load created before timing single triggers.
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            with sessions() as s:
                pending = s.scalar(
                    select(Task.id)
                    .where(Task.workflow_id == wf.id, Task.state.in_(["pending", "running"]))
                    .limit(1)
                )
            if pending is None:
                break
            time.sleep(0.5)

        conn = http.client.HTTPConnection("127.0.0.1", api_port, timeout=30)
        latencies: list[float] = []
        for i in range(args.latency):
            body = json.dumps({"source": "bench", "parameters": {"n": i}}).encode()
            before = dt.datetime.now(dt.UTC)
            conn.request("POST", path, body=body, headers=headers)
            response = conn.getresponse()
            answer: dict[str, Any] = json.loads(response.read())
            job_id = answer["job"]["id"]
            started = None
            limit = time.monotonic() + 30
            while started is None and time.monotonic() < limit:
                with sessions() as s:
                    started = s.scalar(
                        select(Task.started_at).where(
                            Task.job_id == job_id, Task.activity == "noop1"
                        )
                    )
                if started is None:
                    time.sleep(0.001)
            if started is None:
                raise SystemExit("a trigger never reached its first activity")
            latencies.append((started - before).total_seconds() * 1000)
        conn.close()
        engine.command(None, name, "stop")
    finally:
        for process in [worker, *servers]:
            os.killpg(process.pid, signal.SIGTERM)
        for process in [worker, *servers]:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        log.close()

    figures = {
        "triggers_per_s": round(triggers_per_s, 1),
        "flask_min_per_s": round(flask_per_s, 1),
        "ratio": round(triggers_per_s / flask_per_s, 3),
        "trigger_p50_ms": round(percentile(latencies, 0.50), 3),
        "trigger_p99_ms": round(percentile(latencies, 0.99), 3),
    }
    print(f"{args.requests} POSTs per side over {args.threads} connections, gunicorn -w 2")
    print(f"triggers through the API  {triggers_per_s:8.1f} /s")
    print(f"minimal Flask endpoint    {flask_per_s:8.1f} /s   (ratio {figures['ratio']:.2f})")
    print(
        f"HTTP trigger -> first activity p50 {figures['trigger_p50_ms']:.1f} ms, "
        f"p99 {figures['trigger_p99_ms']:.1f} ms  (goal p99 < 50)"
    )
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
