"""Per-API-key rate limits: a token bucket per key, on the injected monotonic clock.

A bucket holds up to ``burst`` tokens and refills at ``rate`` tokens per second; an event costs one token
(a batch one per event). A request that finds too few tokens takes none and is refused with
``RateLimitedError`` whose ``retry_after`` is the time the deficit takes to refill. A cost above ``burst`` is
charged as ``burst`` (a full bucket), so a batch larger than the burst is slow but never refused forever.
A ``rate`` of 0 turns limiting off.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from tidings.core.clock import Clock
from tidings.errors import RateLimitedError


@dataclass(slots=True)
class TokenBucket:
    rate: float
    burst: float
    tokens: float
    updated: float

    def take(self, cost: float, now: float) -> float:
        """Takes ``cost`` tokens and returns 0.0, or takes none and returns the seconds until it could."""
        self.tokens = min(self.burst, self.tokens + max(0.0, now - self.updated) * self.rate)
        self.updated = now
        cost = min(cost, self.burst)
        if self.tokens >= cost:
            self.tokens -= cost
            return 0.0
        return (cost - self.tokens) / self.rate


class RateLimiter:
    """One bucket per key, at most ``max_keys`` of them (least recently used dropped: it restarts full)."""

    def __init__(self, clock: Clock, rate: float, burst: float, max_keys: int = 10_000) -> None:
        self._clock = clock
        self._rate = rate
        self._burst = burst
        self._max_keys = max_keys
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def check(self, key: str, cost: float = 1.0) -> None:
        """Charges ``cost`` to ``key``'s bucket or raises ``RateLimitedError`` (nothing charged)."""
        if self._rate <= 0:
            return  # rate limiting off
        wait = self._bucket(key).take(cost, self._clock.monotonic())
        if wait > 0:
            raise RateLimitedError("rate limit exceeded for this API key", retry_after=wait)

    async def charge(self, key: str, cost: float = 1.0) -> None:
        """``check`` with the shape of the shared limiter's (``api/shared_limits.py``): what routes call."""
        self.check(key, cost)

    def _bucket(self, key: str) -> TokenBucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = TokenBucket(self._rate, self._burst, self._burst, self._clock.monotonic())
            self._buckets[key] = bucket
            if len(self._buckets) > self._max_keys:
                self._buckets.popitem(last=False)
        self._buckets.move_to_end(key)
        return bucket
