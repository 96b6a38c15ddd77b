"""Per-key rate limits shared by every API process: the ``limits`` library's moving window, kept in Redis.

Chosen with ``TIDINGS_RATE_LIMIT_STORAGE=redis://host:port/db`` (or ``rediss://``); without it each process
keeps its own token bucket (``api/limits.py``), so N replicas behind a round-robin balancer admit up to N times
the rate. With it, every replica charges the same Redis counters and a key gets its rate once, whatever the
number of replicas.

Shape. The token bucket's ``rate`` and ``burst`` become one moving window of ``ceil(burst / rate)`` whole
seconds (the library's finest unit) admitting ``rate * window`` events: at the defaults (2000/s, burst 4000),
4000 events in any 2 s. A batch costs one per event, at most the whole window (as the bucket charges at most
``burst``). The window is timed by the replicas' clocks (the library's Lua script takes the caller's time):
keep them NTP-synchronised, as any deployment does.

Redis down. The limiter falls back to this process's own token bucket (the per-process limit documented as
the default) and tries Redis again after ``RETRY_SECONDS``; it neither admits everything (a Redis outage
must not lift every producer's limit) nor refuses everything (the rate limit guards fairness, not
durability: refusing all ingest while the event log is healthy would turn a cache outage into an outage).
Each outage and recovery is logged once.

Why the per-process limiter stays hand-written: it is a synchronous 30-line token bucket on the injected
clock (fake time in its tests), O(1) per request on the ingest hot path, with a true burst; the library's
memory storage would add a wall-clock window, an await and a background expiry task, and change the
documented semantics for every single-process deployment.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import structlog

from tidings.api.limits import RateLimiter
from tidings.core.clock import Clock
from tidings.errors import ConfigError, RateLimitedError

__all__ = ["RETRY_SECONDS", "SharedRateLimiter", "open_limiter"]

log = structlog.get_logger("tidings.api.limits")

RETRY_SECONDS = 1.0  # how long an unreachable Redis is left alone before the next try
REDIS_TIMEOUT_SECONDS = 0.25  # connect and read timeout: a black-holed Redis costs one request this long
SCHEMES = ("redis://", "rediss://", "unix://")


def open_limiter(clock: Clock, rate: float, burst: float, storage: str) -> RateLimiter | SharedRateLimiter:
    """The limiter ``storage`` names: ``""`` or ``memory://`` per process, a Redis URL shared."""
    local = RateLimiter(clock, rate, burst)
    if storage in ("", "memory://"):
        return local
    if not storage.startswith(SCHEMES):
        raise ConfigError(
            f"rate_limit_storage must be empty (per process) or a redis:// URL, not {storage.split('@')[-1]!r}"
        )
    return SharedRateLimiter(storage, clock, rate, burst, local=local)


class SharedRateLimiter:
    """One moving window per key in Redis; this process's token bucket while Redis cannot be reached."""

    def __init__(self, url: str, clock: Clock, rate: float, burst: float, *, local: RateLimiter) -> None:
        try:
            from limits import RateLimitItemPerSecond
            from limits.aio.storage import RedisStorage
            from limits.aio.strategies import MovingWindowRateLimiter
            from limits.errors import StorageError
        except ImportError as exc:
            raise ConfigError(
                f"shared rate limits need the redis extra: pip install 'tidings[redis]' ({exc})"
            ) from exc
        self._clock = clock
        self._rate = rate
        self._local = local
        window = max(1, math.ceil(burst / rate)) if rate > 0 else 1
        self.window = window
        self.amount = max(1, round(rate * window))
        self._item = RateLimitItemPerSecond(self.amount, window, namespace="tidings")
        self._storage = RedisStorage(
            "async+" + url,
            implementation="redispy",
            wrap_exceptions=True,
            key_prefix="tidings-rate",
            socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
            socket_timeout=REDIS_TIMEOUT_SECONDS,
        )
        self._limiter = MovingWindowRateLimiter(self._storage)
        self._storage_errors: tuple[type[BaseException], ...] = (StorageError, OSError, asyncio.TimeoutError)
        self._down_until: float | None = None

    @property
    def shared(self) -> bool:
        """False while Redis is unreachable and this process's own bucket decides."""
        return self._down_until is None

    async def charge(self, key: str, cost: float = 1.0) -> None:
        """Charges ``cost`` to ``key`` across every replica, or raises ``RateLimitedError`` (nothing charged)."""
        if self._rate <= 0:
            return  # rate limiting off
        if self._down_until is not None and self._clock.monotonic() < self._down_until:
            self._local.check(key, cost)
            return
        units = min(max(1, math.ceil(cost)), self.amount)
        try:
            admitted = await self._limiter.hit(self._item, key, cost=units)
            stats: Any = None if admitted else await self._limiter.get_window_stats(self._item, key)
        except self._storage_errors as error:
            if self._down_until is None:
                log.warning("rate_limit_storage_down", error=type(error).__name__, fallback="per_process")
            self._down_until = self._clock.monotonic() + RETRY_SECONDS
            self._local.check(key, cost)
            return
        if self._down_until is not None:
            self._down_until = None
            log.info("rate_limit_storage_back")
        if not admitted:
            wait = max(0.001, float(stats.reset_time) - time.time())
            raise RateLimitedError("rate limit exceeded for this API key", retry_after=wait)
