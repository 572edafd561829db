"""The fault harness: a whole Carillon (API, worker, beat) on private servers, and the faults.

`FaultStack` extends the integration suite's `Stack` (processes in their own process group,
stopped by PID) with the API under gunicorn, an API client that records every call for the
oracle (I7), outage windows, and one method per fault of RELIABILITY.md 5.3. Every wait is
bounded in time and polls the database or the servers, never sleeps for a race.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select

import tests.faults.plugins  # noqa: F401  (registers `crash` for definitions saved here)
from tests.faults.servers import PrivatePostgres, PrivateRedis, free_port
from tests.faults.sinks import ProviderSink
from tests.integration.conftest import Stack, api_healthy, wait_for
from tests.smtp_server import SmtpServer
from worker import catalog
from worker.config import Settings
from worker.models import Task, Workflow
from worker.stack import api_command, beat_command

#: Compressed timings (seconds) for every process of the stack: RELIABILITY.md 5.1.
TIMINGS = {
    "lease_seconds": 3,
    "tick_seconds": 0.3,
    "republish_seconds": 4,
    "visibility_timeout": 15,
    "max_attempts": 5,
}


@dataclass(frozen=True)
class Call:
    """One API call as the scenario saw it (the oracle's history, Jepsen style)."""

    method: str
    path: str
    status: int
    retry_after: str | None
    at: float


@dataclass
class Answer:
    status: int
    body: Any
    headers: dict[str, str]


class ApiClient:
    """HTTP calls with an organization's credentials; every answer lands in `history`."""

    def __init__(self, base: str, org: str, api_key: str, token: str, history: list[Call]):
        self.base, self.org = base, org
        self.api_key, self.token = api_key, token
        self.history = history

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        timeout: float = 20,
    ) -> Answer:
        url = path if path.startswith("http") else f"{self.base}/{self.org}/campaign{path}"
        data = None if body is None else json.dumps(body).encode()
        sent = {"Authorization": f"Bearer {self.token}", "X-Api-Key": self.api_key}
        if data is not None:
            sent["Content-Type"] = "application/json"
        sent.update(headers or {})
        request = urllib.request.Request(url, data=data, method=method, headers=sent)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                answer = Answer(response.status, _json(response.read()), dict(response.headers))
        except urllib.error.HTTPError as error:
            answer = Answer(error.code, _json(error.read()), dict(error.headers))
        self.history.append(
            Call(method, path, answer.status, answer.headers.get("Retry-After"), time.time())
        )
        return answer

    def command(self, workflow: str, method: str) -> Answer:
        return self.call("POST", f"/workflow/execution/{workflow}/commands", {"method": method})

    def trigger(
        self,
        workflow: str,
        activity: str,
        parameters: dict[str, Any],
        key: str | None = None,
        timeout: float = 20,
    ) -> Answer:
        return self.call(
            "POST",
            f"/workflow/execution/{workflow}/activities/activity/{activity}/trigger",
            {"source": "faults", "parameters": parameters},
            headers={"Idempotency-Key": key} if key else None,
            timeout=timeout,
        )


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return raw.decode("utf-8", "replace")


@dataclass
class Servers:
    """The private servers of a session and the secrets nobody may log."""

    redis: PrivateRedis
    pg: PrivatePostgres
    smtp: SmtpServer
    sink: ProviderSink
    secrets: list[str] = field(default_factory=list)


class FaultStack(Stack):
    """API + worker + beat on the private servers, with fault injection."""

    def __init__(self, settings: Settings, home: Path, servers: Servers) -> None:
        super().__init__(settings, home)
        self.servers = servers
        self.history: list[Call] = []
        #: (start, end) wall-clock windows in which a server was down on purpose (I7 allows 503).
        self.outages: list[tuple[float, float]] = []
        #: `unacked` delivery tags left by earlier scenarios (already judged by them).
        self.unacked_baseline: set[bytes] = set()
        self.api_base = ""
        self.env.update(
            CARILLON_SMTP_HOST="127.0.0.1",
            CARILLON_SMTP_PORT=str(servers.smtp.port),
            CARILLON_SMS_URL=servers.sink.url,
            CARILLON_SECRET_KEY=settings.secret_key,
            CARILLON_MAX_ATTEMPTS=str(settings.max_attempts),
            CARILLON_CONNECTOR_TIMEOUT="10",
            # The 10-minute rule on: F13 relies on it (the integration stack turns it off).
            CARILLON_SIGNAL_MIN_INTERVAL="600",
            CARILLON_ACTIVITY_MODULES="tests.plugins,tests.faults.plugins",
            # Downloads reach public addresses only (F17: loopback is where Redis and PG are).
            CARILLON_TRANSFER_ALLOW_HOSTS="",
        )

    # ------------------------------------------------------------------ processes

    def start_all(self) -> None:
        self.start_worker("w1")
        self.spawn("beat", beat_command(self.settings))
        self.start_api()

    def start_api(self) -> None:
        port = free_port()
        self.api_base = f"http://127.0.0.1:{port}"
        self.env["CARILLON_PUBLIC_URL"] = self.api_base
        self.spawn("api", api_command("127.0.0.1", port, 1))
        wait_for(self.api_healthy, 60, "gunicorn to answer /healthz", interval=0.2)

    def api_healthy(self) -> bool:
        return api_healthy(self.api_base)

    def alive(self, name: str) -> bool:
        process = self.processes.get(name)
        return process is not None and process.poll() is None

    def ensure_servers(self) -> None:
        """Restart a private server an interrupted scenario left down."""
        if not self.servers.redis.ping():
            self.servers.redis.start()
        if not self.pg_up():
            self.servers.pg.start()

    def ensure_running(self) -> None:
        """Bring back whatever an earlier scenario left down (servers first)."""
        self.ensure_servers()
        for name in [n for n in self.processes if not self.alive(n)]:
            self.processes.pop(name)
        if not self.alive("w1"):
            self.start_worker("w1")
        if not self.alive("beat"):
            self.spawn("beat", beat_command(self.settings))
        if not self.alive("api"):
            self.start_api()

    def pg_up(self) -> bool:
        try:
            with self.sessions() as s:
                s.execute(select(1))
            return True
        except Exception:
            return False

    # ------------------------------------------------------------------ clients and data

    def client(self, org: str) -> ApiClient:
        with self.sessions() as s, s.begin():
            created = catalog.create_credentials(s, org)
        self.servers.secrets.extend([created["apiKey"], created["token"]])
        return ApiClient(self.api_base, org, created["apiKey"], created["token"], self.history)

    def tasks(self, workflow: str) -> list[Any]:
        with self.sessions() as s:
            return list(
                s.execute(
                    select(
                        Task.id,
                        Task.job_id,
                        Task.activity,
                        Task.activity_type,
                        Task.state,
                        Task.attempt,
                        Task.worker,
                    )
                    .join(Workflow)
                    .where(Workflow.name == workflow)
                    .order_by(Task.created_at)
                ).all()
            )

    def running(self, workflow: str, activity: str, attempt: int = 1) -> Any:
        """The task of `activity` once it runs its `attempt`-th execution (else None)."""
        for row in self.tasks(workflow):
            if row.activity == activity and row.state == "running" and row.attempt >= attempt:
                return row
        return None

    def wait_running(
        self, workflow: str, activity: str, attempt: int = 1, timeout: float = 60
    ) -> Any:
        return wait_for(
            lambda: self.running(workflow, activity, attempt),
            timeout,
            f"{workflow}/{activity} attempt {attempt} running",
        )

    # ------------------------------------------------------------------ faults

    @contextmanager
    def outage(self) -> Iterator[None]:
        """Mark a window in which 503 answers are expected (and only them, I7)."""
        start = time.time()
        try:
            yield
        finally:
            self.outages.append((start, time.time()))

    def worker_pid_of(self, row: Any) -> int:
        """The prefork child running a task (Task.worker is `host:pid`)."""
        pid = int(str(row.worker).rsplit(":", 1)[1])
        assert pid in self.children("w1"), f"pid {pid} is not a child of w1"
        return pid

    def kill_child(self, pid: int) -> None:
        """F1: SIGKILL one prefork child; the main process replaces it."""
        os.kill(pid, signal.SIGKILL)

    def kill_worker(self, downtime: float = 3.0) -> float:
        """F2: SIGKILL the whole worker (main and children), restart it after `downtime`."""
        self.kill("w1", signal.SIGKILL)
        # Fault timing, not a race: the worker stays down for a while, as a host reboot would.
        time.sleep(downtime)
        started = time.time()
        self.start_worker("w1")
        return started

    @contextmanager
    def frozen(self, pid: int) -> Iterator[None]:
        """F4: SIGSTOP a process (a zombie holding its lease), SIGCONT it on exit."""
        os.kill(pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(pid, signal.SIGCONT)

    def restart_redis(self, crash: bool = False, downtime: float = 3.0) -> None:
        """F5 (graceful SHUTDOWN) or F6 (kill -9), then the same port again after `downtime`."""
        with self.outage():
            if crash:
                self.servers.redis.crash()
            else:
                self.servers.redis.shutdown()
            time.sleep(downtime)  # fault timing: the broker stays away for a while
            self.servers.redis.start()

    @contextmanager
    def pg_down(self, mode: str = "fast") -> Iterator[None]:
        """F7: PostgreSQL stopped (`fast` or `immediate`) for the body, then started again."""
        with self.outage():
            self.servers.pg.stop(mode)
            try:
                yield
            finally:
                self.servers.pg.start()

    def second_beat(self, name: str, **extra_env: str) -> subprocess.Popen[bytes]:
        """F8: another beat with its own schedule file and PID file (a second host)."""
        command = beat_command(self.settings)
        command[command.index("--schedule") + 1] = str(self.home / f"{name}-schedule")
        return self.spawn(
            name, [*command, "--pidfile", str(self.home / f"{name}.pid")], **extra_env
        )

    def duplicate_unacked(self, task_id: str, timeout: float = 30) -> str:
        """F11(b): copy the in-flight message of `task_id` from `unacked` back onto its queue."""
        client = self.servers.redis.client()
        try:

            def find() -> tuple[str, bytes] | None:
                for raw in client.hvals("unacked"):
                    message, _exchange, routing_key = json.loads(raw)
                    if message.get("headers", {}).get("id") == task_id:
                        return routing_key, json.dumps(message).encode()
                return None

            queue, payload = wait_for(find, timeout, f"{task_id} in unacked")
            client.lpush(queue, payload)
            return str(queue)
        finally:
            client.close()

    def failpoint_worker(self, marker: Path) -> None:
        """F12: a worker that dies once between a commit and its publish."""
        if self.alive("w1"):
            self.kill("w1", signal.SIGTERM)
        self.start_worker("w1", CARILLON_FAILPOINT=f"after_commit_before_publish@{marker}")

    def log_files(self) -> list[Path]:
        files = sorted(self.home.glob("*.log"))
        for folder in (self.servers.redis.folder, self.servers.pg.folder):
            files.extend(sorted(folder.glob("*.log")))
        return files


def faketime_env(clock: str, zone: str | None = None) -> dict[str, str]:
    """Environment that runs a process, and the children it forks, on a fake wall clock.

    `clock` is libfaketime's FAKETIME: '+60s' / '-30s' offsets from the real clock (what every
    process started with it agrees on), '@2026-03-29 01:59:50' a start instant. Monotonic
    clocks stay real (DONT_FAKE_MONOTONIC), so timeouts and sleeps are not skewed; PostgreSQL
    and Redis are not started with it and keep the real time.
    """
    import libfaketime

    _reload, preload = libfaketime.get_reload_information()
    env = {key: str(value) for key, value in preload.items()}
    env.update(FAKETIME=clock, DONT_FAKE_MONOTONIC="1")
    if zone is not None:
        env["TZ"] = zone
    return env


def offset_to(instant: dt.datetime) -> str:
    """FAKETIME offset (whole seconds) that puts the clock at `instant` now."""
    return f"{round(instant.timestamp() - time.time()):+d}"


def timed(action: Callable[[], Any]) -> tuple[Any, float]:
    """Run `action`, return its value and how long it took (a scenario's recovery time)."""
    start = time.monotonic()
    value = action()
    return value, time.monotonic() - start
