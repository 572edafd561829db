"""The soak tier (`make soak`, deselected from `make test`): the heavier faults of
RELIABILITY.md 5.3 beyond the quick tier, each bounded in time: F3, F6, F7 (immediate),
F14, F15, F16 (a curated hostile corpus, then schemathesis with every check), F17, F18,
F19. Faults without a scenario yet are listed by the soak runner's table.
"""

from __future__ import annotations

import http.client
import random
import signal
import socket
import threading
import time
import urllib.parse
from collections import Counter
from pathlib import Path

import pytest

from tests.faults import schemathesis_run
from tests.faults.conftest import require_restartable
from tests.faults.harness import Call, FaultStack
from tests.faults.scenario import emails_to, finish, launch, slow_smtp
from tests.faults.test_quick_tier import org_for
from tests.faults.workload import seed_segment, unique
from tests.integration.conftest import wait_for

pytestmark = [pytest.mark.faults, pytest.mark.soak, pytest.mark.timeout(240)]


def test_f3_a_warm_shutdown_mid_delivery_loses_nothing(
    live: FaultStack, rng: random.Random, fault_seed: int
) -> None:
    client = live.client(org_for(rng))
    with slow_smtp(live, 0.1):
        target = launch(live, client, "linear", rng)
        live.wait_running(target.name, "email1")
        wait_for(lambda: emails_to(live, target.segment) >= 5, 60, "5 emails out")
        # When the worker gets SIGTERM (warm shutdown) mid-delivery, and a new one starts (F3)
        fault_at = time.monotonic()
        live.kill("w1", signal.SIGTERM)
        live.start_worker("w1")
        finish(live, "F3", fault_seed, [target.name], fault_at)


def test_f6_a_redis_crash_mid_run_is_survived(
    live: FaultStack, rng: random.Random, fault_seed: int
) -> None:
    require_restartable(live)
    client = live.client(org_for(rng))
    with slow_smtp(live, 0.05):
        target = launch(live, client, "fork_join", rng)
        live.wait_running(target.name, "email1")
        # When Redis is SIGKILLed mid-run (AOF everysec: up to a second lost) (F6)
        fault_at = time.monotonic()
        live.restart_redis(crash=True, downtime=2.0)
        # The worker reconnects; a message lost with the crash is republished from the DB.
        finish(live, "F6", fault_seed, [target.name], fault_at)


def test_f7b_a_postgres_crash_mid_run_recovers_committed_state(
    live: FaultStack, rng: random.Random, fault_seed: int
) -> None:
    require_restartable(live)
    client = live.client(org_for(rng))
    with slow_smtp(live, 0.05):
        target = launch(live, client, "fork_join", rng)
        live.wait_running(target.name, "email1")
        # When PostgreSQL stops with -m immediate (crash recovery at restart) mid-run (F7)
        fault_at = time.monotonic()
        with live.pg_down("immediate"):
            during = client.call("GET", f"/workflow/execution/{target.name}")
        assert during.status == 503 and during.headers.get("Retry-After"), during
        finish(live, "F7", fault_seed, [target.name], fault_at)


def test_f15_an_api_flood_gets_429_never_5xx(
    live: FaultStack, rng: random.Random, fault_seed: int
) -> None:
    client = live.client(org_for(rng))
    target = launch(live, client, "signal_wait", rng, trigger=False)
    background = launch(live, client, "linear", rng)
    statuses: Counter[int] = Counter()
    lock = threading.Lock()
    stop_at = time.monotonic() + 20  # bounded flood: 20 s, 4 threads

    def flood(n: int) -> None:
        for i in range(5000):
            if time.monotonic() > stop_at:
                return
            if i % 2:
                answer = client.call("GET", f"/workflow/execution/{target.name}", timeout=10)
            else:
                answer = client.trigger(
                    target.name, "signal1", {"segmentCode": target.segment}, timeout=10
                )
            with lock:
                statuses[answer.status] += 1

    fault_at = time.monotonic()
    threads = [threading.Thread(target=flood, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    # Then: one trigger accepted, the rest refused with 429 + Retry-After, nothing 5xx
    assert statuses[202] == 1, statuses
    assert statuses[429] > 0, statuses
    assert not [s for s in statuses if s >= 500], statuses
    assert all(c.retry_after for c in live.history if c.status == 429)
    finish(live, "F15", fault_seed, [target.name, background.name], fault_at)


def test_f19_a_poison_activity_is_capped_and_dead_lettered(
    live: FaultStack, rng: random.Random, fault_seed: int
) -> None:
    client = live.client(org_for(rng))
    name = unique(rng, "poison")
    seed_segment(live, client.org, name, count=1)
    live.save(
        {
            "id": name,
            "activities": [
                {"name": "start1", "type": "start", "transitions": {"done": "crash1"}},
                {"name": "crash1", "type": "crash", "transitions": {"done": "end1"}},
                {"name": "end1", "type": "end"},
            ],
        },
        org=client.org,
    )
    fault_at = time.monotonic()
    # When an activity kills its worker process every time it runs (F19)
    assert client.command(name, "start").status == 202
    # Then after CARILLON_MAX_ATTEMPTS it is dead (or failed), the workflow in error, and
    # the worker lives on
    finish(live, "F19", fault_seed, [name], fault_at, poison=frozenset({"crash1"}))
    (crash,) = [r for r in live.tasks(name) if r.activity == "crash1"]
    assert crash.state in ("dead", "failed")
    assert crash.attempt <= live.settings.max_attempts
    assert live.alive("w1")


class Listener:
    """A loopback TCP port counting the connections it accepts (none may arrive)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


def test_f17_a_transfer_never_connects_to_loopback_in_any_spelling(
    live: FaultStack, rng: random.Random, fault_seed: int
) -> None:
    client = live.client(org_for(rng))
    listener = Listener()
    port = listener.port
    spellings = [
        f"http://127.0.0.1:{port}/x.csv",
        f"http://localhost:{port}/x.csv",
        f"http://127.1:{port}/x.csv",
        f"http://0x7f000001:{port}/x.csv",
        f"http://2130706433:{port}/x.csv",
        f"http://[::ffff:127.0.0.1]:{port}/x.csv",
        f"http://127.0.0.1:{live.servers.redis.port}/",
    ]
    started: list[str] = []
    fault_at = time.monotonic()
    try:
        for url in spellings:
            name = unique(rng, "ssrf")
            try:
                live.save(
                    {
                        "id": name,
                        "activities": [
                            {"name": "start1", "type": "start", "transitions": {"done": "get1"}},
                            {
                                "name": "get1",
                                "type": "transferFile",
                                "url": url,
                                "retries": 0,
                                "transitions": {"done": "end1", "noFile": "end1"},
                            },
                            {"name": "end1", "type": "end"},
                        ],
                    },
                    org=client.org,
                )
            except Exception:  # refused when saved: even better, nothing can run
                continue
            assert client.command(name, "start").status == 202
            started.append(name)
        assert started, "every URL was refused when saved: the run-time check went untested"
        # Then every download failed without a single connection to the loopback port
        finish(live, "F17", fault_seed, started, fault_at, poison=frozenset({"get1"}))
    finally:
        listener.close()
    assert listener.accepted == 0


def test_f18_redis_out_of_memory_fails_publishes_loudly_and_recovers(
    live: FaultStack, rng: random.Random, fault_seed: int
) -> None:
    require_restartable(live)
    client = live.client(org_for(rng))
    waiting = [launch(live, client, "signal_wait", rng, trigger=False) for _ in range(3)]
    redis_client = live.servers.redis.client()
    fault_at = time.monotonic()
    try:
        # When Redis refuses every write (maxmemory under its use, noeviction) (F18)
        used = int(redis_client.info("memory")["used_memory"])
        with live.outage():
            redis_client.config_set("maxmemory", str(max(used // 2, 1024 * 1024)))
            try:
                answers = [
                    client.trigger(w.name, "signal1", {"segmentCode": w.segment}) for w in waiting
                ]
            finally:
                redis_client.config_set("maxmemory", "0")
    finally:
        redis_client.close()
    # Then each trigger was either accepted (the tick publishes it later) or refused with
    # 503 + Retry-After, never a 500; and every accepted one runs to its end
    assert all(a.status in (202, 503) for a in answers), [(a.status, a.body) for a in answers]
    finish(live, "F18", fault_seed, [w.name for w in waiting], fault_at)
    for w, answer in zip(waiting, answers, strict=True):
        ends = [r.state for r in live.tasks(w.name) if r.activity == "end1"]
        assert ends == (["done"] if answer.status == 202 else []), (w.name, answer.status)


def _raw(
    base: str, method: str, path: str, body: bytes, headers: dict[str, str], chunked: bool = False
) -> int:
    """One request with exactly these bytes (http.client: chunked bodies, bad encodings)."""
    parts = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=20)
    try:
        if chunked:
            conn.putrequest(method, path)
            for name, value in {**headers, "Transfer-Encoding": "chunked"}.items():
                conn.putheader(name, value)
            conn.endheaders()
            for start in range(0, len(body), 8192):
                chunk = body[start : start + 8192]
                conn.send(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            conn.send(b"0\r\n\r\n")
        else:
            conn.request(method, path, body=body, headers=headers)
        answer = conn.getresponse()
        answer.read(1 << 20)
        return answer.status
    finally:
        conn.close()


def test_f16_hostile_payloads_get_4xx_and_change_nothing(
    live: FaultStack, rng: random.Random, fault_seed: int
) -> None:
    client = live.client(org_for(rng))
    target = launch(live, client, "signal_wait", rng, trigger=False)
    path = (
        f"/{client.org}/campaign/workflow/execution/{target.name}"
        "/activities/activity/signal1/trigger"
    )
    auth = {"Authorization": f"Bearer {client.token}", "X-Api-Key": client.api_key}
    json_type = {**auth, "Content-Type": "application/json"}
    deep = b"[" * 30_000 + b"]" * 30_000  # under 64 KiB: the parser must meet it
    corpus: list[tuple[str, bytes, dict[str, str], bool]] = [
        ("64 KiB + 1", b'{"source": "' + b"a" * (64 * 1024) + b'"}', json_type, False),
        ("chunked 1 MiB", b'{"source": "' + b"a" * (1 << 20) + b'"}', json_type, True),
        ("depth 1e5", deep, json_type, False),
        ("NaN", b'{"source": "x", "parameters": {"segmentCode": NaN}}', json_type, False),
        ("1e999", b'{"source": "x", "parameters": {"segmentCode": 1e999}}', json_type, False),
        ("missing source", b'{"parameters": {}}', json_type, False),
        ("wrong type", b'{"source": "x", "parameters": {"segmentCode": [1, 2]}}', json_type, False),
        ("unknown parameter", b'{"source": "x", "parameters": {"zz": "1"}}', json_type, False),
        ("not UTF-8", b'{"source": "\xff\xfe\xfa"}', json_type, False),
        ("not JSON", b"source=x", {**auth, "Content-Type": "text/plain"}, False),
        ("array body", b"[]", json_type, False),
        ("empty body", b"", json_type, False),
        ("no credentials", b'{"source": "x"}', {"Content-Type": "application/json"}, False),
    ]
    fault_at = time.monotonic()
    answers = {}
    for label, body, headers, chunked in corpus:
        answers[label] = _raw(live.api_base, "POST", path, body, headers, chunked)
        live.history.append(Call("POST", f"[{label}] {path}", answers[label], None, time.time()))
    # Then only 4xx came back, and the signal started nothing
    assert all(400 <= status < 500 for status in answers.values()), list(answers.items())
    finish(live, "F16", fault_seed, [target.name], fault_at)
    assert [r.activity for r in live.tasks(target.name)] == ["signal1"]


def test_f16b_a_body_with_duplicate_keys_is_refused(
    live: FaultStack, rng: random.Random, fault_seed: int
) -> None:
    client = live.client(org_for(rng))
    target = launch(live, client, "signal_wait", rng, trigger=False)
    path = (
        f"/{client.org}/campaign/workflow/execution/{target.name}"
        "/activities/activity/signal1/trigger"
    )
    headers = {
        "Authorization": f"Bearer {client.token}",
        "X-Api-Key": client.api_key,
        "Content-Type": "application/json",
    }
    status = _raw(live.api_base, "POST", path, b'{"source": "x", "source": "y"}', headers)
    assert status == 400, status


def test_f14_racing_commands_and_signals_keep_states_legal(
    live: FaultStack, rng: random.Random, fault_seed: int
) -> None:
    """A seeded random interleaving from two threads (a lighter F14 than hypothesis.stateful):
    start/pause/resume/stop and triggers race; only allowed transitions, no 5xx."""
    client = live.client(org_for(rng))
    target = launch(live, client, "signal_wait", rng, trigger=False)
    methods = ["start", "pause", "resume", "stop", "trigger"]
    plans = [[rng.choice(methods) for _ in range(25)] for _ in range(2)]
    statuses: Counter[tuple[str, int]] = Counter()
    lock = threading.Lock()

    def run(plan: list[str]) -> None:
        for method in plan:
            if method == "trigger":
                answer = client.trigger(target.name, "signal1", {"segmentCode": target.segment})
            else:
                answer = client.command(target.name, method)
            with lock:
                statuses[(method, answer.status)] += 1

    fault_at = time.monotonic()
    threads = [threading.Thread(target=run, args=(plan,)) for plan in plans]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    # Then every answer was a documented one, and a final stop settles everything
    assert {status for _, status in statuses} <= {202, 409, 429}, statuses
    wait_for(lambda: client.command(target.name, "stop").status in (202, 409), 30, "a stop")
    wait_for(lambda: live.state(target.name) == "stopped", 60, "the workflow to stop")
    finish(live, "F14", fault_seed, [target.name], fault_at, restarts=True)


class ContractViolations(AssertionError):
    """schemathesis checks other than "no 5xx" that failed (the document's known gaps)."""


@pytest.mark.timeout(420)
@pytest.mark.xfail(
    strict=True,
    raises=ContractViolations,
    reason="api/openapi.py under-documents what the views enforce (schemathesis 4.32.5, "
    "seed 1): ST202 schema-valid requests refused with 400/422 (POST bounce `[]` or a "
    "`messageId: ''`; trigger `{source: ''}`; validation decision 'reject' without "
    "'comment'; _lineStart > 1e9 on the list endpoints; q/activity with control characters; "
    "monitoring logs `level` not a log level; event `mobilePhone: ''`; definitions "
    "consecutiveErrors 0 and a PUT body id other than the path's; commands Idempotency-Key "
    "reused or not printable ASCII; messageTemplate content with an unknown key) and ST103 "
    "GET messageTemplate `_lineStart=-1` answers an undocumented 400. No 5xx.",
)
def test_f16c_schemathesis_finds_no_5xx_and_no_schema_violation(
    live: FaultStack, tmp_path: Path
) -> None:
    """Issue 8: schemathesis with every check against /openapi.json, an organization's
    credentials and one live workflow pinned in the paths; bounded to ~4 minutes, one seed
    (not one run per fault seed: the fuzzer has its own). A 5xx fails the test outright;
    the other check failures are the declared (xfail) ones."""
    rng = random.Random("f16c")
    client = live.client(org_for(rng))
    target = launch(live, client, "signal_wait", rng, trigger=False)
    outcome = schemathesis_run.run(
        live.api_base,
        client.org,
        client.api_key,
        client.token,
        tmp_path,
        max_time=200,
        max_examples=5,
        pinned={"workflow_ref": target.name, "definition_id": target.name},
    )
    assert outcome.operations > 0, outcome.output[-4000:]
    # Then no 5xx at all
    assert not outcome.server_errors(), "\n".join(map(str, outcome.server_errors()))
    # And no other check failed (each finding: operation, failure codes, report with curl)
    if outcome.findings:
        raise ContractViolations("\n\n".join(map(str, outcome.findings)))
    assert outcome.returncode == 0, outcome.output[-4000:]
