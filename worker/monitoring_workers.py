"""Celery workers and queue depths, as the monitoring page shows them; bounded in time.

Workers are asked with Celery's remote control (a broadcast answered within INSPECT_TIMEOUT),
queue depths are read from the broker itself: LLEN on Redis, message files of the embedded
filesystem transport; any other transport's depths are unknown (None). A broker that is down
gives no workers and unknown depths, never an exception.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from celery import Celery
from celery.worker.control import inspect_command

from worker.config import Settings
from worker.db import utcnow
from worker.queues import QUEUES

log = logging.getLogger(__name__)

#: Seconds a broadcast waits for the workers' replies (every worker answers within it).
INSPECT_TIMEOUT = 1.0
#: Seconds to connect to, or wait on, the broker for depths.
BROKER_TIMEOUT = 1.0
#: kombu's Redis transport keeps a queue's prioritised messages under these suffixed keys.
REDIS_PRIORITY_SUFFIXES = ("", "\x06\x163", "\x06\x166", "\x06\x169")
#: The remote-control commands asked at once; `carillon_load` is registered below.
COMMANDS = ("stats", "active", "active_queues", "carillon_load")


@inspect_command()
def carillon_load(state: Any) -> dict[str, Any]:
    """Run by each worker: its host's load average (Celery's own stats do not hold it)."""
    try:
        return {"loadavg": [round(value, 2) for value in os.getloadavg()]}
    except OSError:
        return {"loadavg": None}


def transport_of(broker_url: str) -> str:
    return broker_url.partition("://")[0].lower()


def queue_depths(settings: Settings) -> dict[str, int | None]:
    """Messages waiting in each queue; None where the broker cannot say (or is down)."""
    transport = transport_of(settings.broker_url)
    try:
        if transport in ("redis", "rediss"):
            return _redis_depths(settings.broker_url)
        if transport == "filesystem":
            return _folder_depths(settings)
    except Exception as exc:  # a broker down or refusing: unknown depths
        log.info("queue depths unavailable: %s", type(exc).__name__)
    return dict.fromkeys(QUEUES, None)


def _redis_depths(url: str) -> dict[str, int | None]:
    import redis

    client = redis.Redis.from_url(
        url, socket_connect_timeout=BROKER_TIMEOUT, socket_timeout=BROKER_TIMEOUT
    )
    try:
        pipe = client.pipeline(transaction=False)
        for queue in QUEUES:
            for suffix in REDIS_PRIORITY_SUFFIXES:
                pipe.llen(f"{queue}{suffix}")
        lengths = pipe.execute()
    finally:
        client.close()
    step = len(REDIS_PRIORITY_SUFFIXES)
    return {
        queue: sum(int(n) for n in lengths[i * step : (i + 1) * step])
        for i, queue in enumerate(QUEUES)
    }


def _folder_depths(settings: Settings) -> dict[str, int | None]:
    # worker.fs_transport names a message "<time>_<uuid>.<queue>.msg" in the queue folder.
    folder = settings.broker_folder / "queue"
    depths: dict[str, int | None] = dict.fromkeys(QUEUES, 0)
    if not folder.is_dir():
        return depths
    with os.scandir(folder) as entries:
        for entry in entries:
            queue = entry.name.rpartition(".msg")[0].partition(".")[2]
            if entry.name.endswith(".msg") and queue in depths:
                depths[queue] = (depths[queue] or 0) + 1
    return depths


def _broadcast(app: Celery, command: str) -> dict[str, Any]:
    replies = app.control.broadcast(command, reply=True, timeout=INSPECT_TIMEOUT) or []
    merged: dict[str, Any] = {}
    for reply in replies:
        if isinstance(reply, dict):
            merged.update(reply)
    return merged


def inspect_workers(app: Celery) -> list[dict[str, Any]]:
    """The workers answering a broadcast: active tasks, processed counts, queues, load.

    The commands go out in parallel, so the whole takes about INSPECT_TIMEOUT; a broadcast
    that raises or hangs past twice that counts as no answer."""
    answers: dict[str, dict[str, Any]] = {}
    pool = ThreadPoolExecutor(max_workers=len(COMMANDS), thread_name_prefix="inspect")
    try:
        futures = {command: pool.submit(_broadcast, app, command) for command in COMMANDS}
        for command, future in futures.items():
            try:
                answers[command] = future.result(timeout=INSPECT_TIMEOUT * 2 + 1)
            except (FutureTimeout, Exception) as exc:
                log.info("inspect %s: no answer (%s)", command, type(exc).__name__)
                answers[command] = {}
    finally:
        # Never wait for a hung broadcast: the request must answer in bounded time.
        pool.shutdown(wait=False, cancel_futures=True)
    names = sorted(set().union(*(set(found) for found in answers.values())))
    return [_worker(name, answers) for name in names]


def _worker(name: str, answers: dict[str, dict[str, Any]]) -> dict[str, Any]:
    stats = answers["stats"].get(name) or {}
    active = answers["active"].get(name)
    queues = answers["active_queues"].get(name) or []
    load = answers["carillon_load"].get(name) or {}
    total = stats.get("total") if isinstance(stats, dict) else None
    pool = stats.get("pool") if isinstance(stats, dict) else None
    return {
        "name": name,
        "online": True,
        "active": len(active) if isinstance(active, list) else None,
        "processed": sum(total.values()) if isinstance(total, dict) else None,
        "queues": sorted(
            q.get("name") for q in queues if isinstance(q, dict) and isinstance(q.get("name"), str)
        ),
        "loadavg": load.get("loadavg") if isinstance(load, dict) else None,
        "concurrency": pool.get("max-concurrency") if isinstance(pool, dict) else None,
        "pid": stats.get("pid") if isinstance(stats, dict) else None,
    }


def snapshot(settings: Settings, app_factory: Callable[[], Celery]) -> dict[str, Any]:
    """Workers and queue depths now. Workers are asked only when the broker answered (a
    down Redis would have Celery retry its connection far longer than the page can wait)."""
    depths = queue_depths(settings)
    reachable = transport_of(settings.broker_url) == "filesystem" or any(
        depth is not None for depth in depths.values()
    )
    workers: list[dict[str, Any]] = []
    if reachable:
        try:
            workers = inspect_workers(app_factory())
        except Exception as exc:
            log.info("workers unavailable: %s", type(exc).__name__)
    return {
        "workers": workers,
        "queues": [{"name": name, "depth": depth} for name, depth in depths.items()],
        "inspectedAt": utcnow().isoformat(),
    }
