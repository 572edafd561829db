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
import socket
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import Bench, prepare
from bench.engine_overhead import percentile, signal_body


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def gunicorn(bench: Bench, app: str, port: int, name: str) -> None:
    """Serve `app` with 2 gunicorn workers on `port`; return once it accepts connections."""
    bench.spawn(
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
        name,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{app} did not start; see {bench.home / name}.log")


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

    api_port, min_port = free_port(), free_port()
    os.environ["CARILLON_PUBLIC_URL"] = f"http://127.0.0.1:{api_port}"
    bench = prepare(Path(tempfile.mkdtemp(prefix="carillon-bench-api-")))
    from sqlalchemy import select

    from worker import catalog
    from worker.models import Task

    sessions, engine = bench.sessions, bench.engine
    bench.start_worker(2)
    gunicorn(bench, "api.wsgi:app", api_port, "api")
    gunicorn(bench, "bench.minimal_app:app", min_port, "minimal")
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
        bench.stop()

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
