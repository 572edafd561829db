"""Per-key rate limiting (429 + Retry-After): a token bucket in Redis, or in the process.

Why not flask-limiter: the bucket is a dozen lines of Lua, one round trip per request with
Redis's own clock (API hosts' clocks may differ), and this module decides exactly what a
down Redis does: the request is let through (fail open) with one log line per outage,
never a 500. A limiter protects the API; an outage of it must not become one of the API.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Protocol

from flask import Flask, request

from api.errors import ApiError
from worker.config import Settings

log = logging.getLogger(__name__)

#: Endpoints never limited: the liveness probe, and the open pixel and click redirects that
#: recipients' mail clients follow (many of them from one proxy address).
EXEMPT_ENDPOINTS = frozenset({"health.healthz", "tracking.open_pixel", "tracking.click"})
#: Seconds Redis is left alone after it failed, so that each request does not wait for it.
REDIS_PAUSE = 5.0
#: Largest number of buckets one process keeps (the least recently used go first).
MAX_LOCAL_BUCKETS = 10_000
KEY_PREFIX = "carillon:ratelimit:"

# KEYS[1] bucket; ARGV capacity, tokens per second, ttl ms. Returns {allowed, wait seconds}.
# TIME is Redis's clock: every API process sees the same one.
_LUA = """
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local bucket = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(bucket[1])
local at = tonumber(bucket[2])
if tokens == nil or at == nil then
  tokens = capacity
  at = now
end
tokens = math.min(capacity, tokens + math.max(0, now - at) * rate)
local allowed = 0
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  wait = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {allowed, tostring(wait)}
"""


@dataclass(frozen=True)
class Limit:
    """A bucket of `capacity` tokens refilled at `rate` tokens per second."""

    capacity: int
    rate: float
    description: str

    @classmethod
    def from_settings(cls, settings: Settings) -> Limit | None:
        if settings.rate_limit is None:
            return None
        count, period = settings.rate_limit
        unit = {1.0: "second", 60.0: "minute", 3600.0: "hour"}.get(period, f"{period:g}s")
        capacity = settings.rate_limit_burst or 2 * count
        return cls(capacity, count / period, f"{count}/{unit}, burst {capacity}")

    @property
    def ttl_ms(self) -> int:
        """How long an idle bucket takes to fill up again: then it can be forgotten."""
        return math.ceil(self.capacity / self.rate * 1000) + 1000


class Store(Protocol):
    def take(self, key: str, limit: Limit) -> tuple[bool, float]:
        """Take one token from `key`'s bucket: (allowed, seconds until one is there)."""


class LocalStore:
    """Buckets in this process (the embedded default: one API process)."""

    def __init__(self, clock: Any = time.monotonic, max_buckets: int = MAX_LOCAL_BUCKETS) -> None:
        self._clock = clock
        self._max = max_buckets
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, key: str, limit: Limit) -> tuple[bool, float]:
        now = self._clock()
        with self._lock:
            tokens, at = self._buckets.pop(key, (float(limit.capacity), now))
            tokens = min(float(limit.capacity), tokens + max(0.0, now - at) * limit.rate)
            allowed = tokens >= 1
            wait = 0.0 if allowed else (1 - tokens) / limit.rate
            self._buckets[key] = (tokens - 1 if allowed else tokens, now)
            while len(self._buckets) > self._max:  # bounded memory: forget the idlest
                self._buckets.popitem(last=False)
        return allowed, wait

    def __len__(self) -> int:
        return len(self._buckets)


class RedisStore:
    """Buckets in Redis, shared by every API process; keys expire once full again."""

    def __init__(self, url: str) -> None:
        import redis

        self._client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self._script = self._client.register_script(_LUA)

    def take(self, key: str, limit: Limit) -> tuple[bool, float]:
        allowed, wait = self._script(
            keys=[KEY_PREFIX + key], args=[limit.capacity, limit.rate, limit.ttl_ms]
        )
        return bool(int(allowed)), float(wait)

    def close(self) -> None:
        """Close the store's Redis connections (a process's limiter lives as long as it)."""
        self._client.close()


class Limiter:
    """Takes a token per request; a store that fails lets the request through."""

    def __init__(self, limit: Limit, store: Store) -> None:
        self.limit = limit
        self.store = store
        self._paused_until = 0.0
        self._lock = threading.Lock()

    def check(self, key: str) -> None:
        """Raise a 429 ApiError when `key` has no token left."""
        if time.monotonic() < self._paused_until:
            return
        try:
            allowed, wait = self.store.take(key, self.limit)
        except Exception as exc:
            with self._lock:
                first = time.monotonic() >= self._paused_until
                self._paused_until = time.monotonic() + REDIS_PAUSE
            if first:
                log.warning(
                    "rate limiter unavailable (%s); requests are not limited for %.0fs",
                    type(exc).__name__,
                    REDIS_PAUSE,
                )
            return
        if not allowed:
            retry_after = max(1, math.ceil(wait))
            raise ApiError(
                429,
                f"too many requests for this API key (at most {self.limit.description}); "
                f"retry in {retry_after}s",
                code="rateLimited",
                details={"retryAfter": retry_after},
                headers={"Retry-After": str(retry_after)},
            )


def client_key() -> str:
    """The caller's bucket: its API key (hashed: keys are secrets) or its address."""
    api_key = request.headers.get("X-Api-Key", "").strip()
    if api_key:
        return "key:" + hashlib.sha256(api_key.encode("utf-8", "replace")).hexdigest()[:32]
    return f"addr:{request.remote_addr or 'unknown'}"


def build(settings: Settings) -> Limiter | None:
    """The limiter the settings ask for, or None when limiting is off."""
    limit = Limit.from_settings(settings)
    if limit is None:
        return None
    url = settings.rate_limit_redis
    if not url and settings.broker_url.startswith(("redis://", "rediss://")):
        url = settings.broker_url
    return Limiter(limit, RedisStore(url) if url else LocalStore())


def init_app(app: Flask, settings: Settings) -> None:
    """Install the limiter as the first before_request (before authentication: failed
    logins are limited too)."""
    limiter = build(settings)
    app.extensions["carillon_limiter"] = limiter
    if limiter is None:
        return

    def _limit() -> None:
        if request.endpoint in EXEMPT_ENDPOINTS:
            return
        limiter.check(client_key())

    app.before_request(_limit)
