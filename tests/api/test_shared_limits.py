"""The shared limiter's choices that need no second process: which storage a setting names, and what a
request meets while Redis cannot be reached (this process's own bucket). Across real replicas:
tests/hardening/test_rate_limits_across_replicas.py."""

from __future__ import annotations

import pytest

from tidings.api.limits import RateLimiter
from tidings.api.shared_limits import RETRY_SECONDS, SharedRateLimiter, open_limiter
from tidings.errors import ConfigError, RateLimitedError
from tidings.testing import FakeClock


def test_no_storage_means_a_bucket_per_process() -> None:
    assert isinstance(open_limiter(FakeClock(), 1.0, 1.0, ""), RateLimiter)
    assert isinstance(open_limiter(FakeClock(), 1.0, 1.0, "memory://"), RateLimiter)


def test_a_storage_that_is_not_redis_is_refused_at_start_up_without_its_password() -> None:
    with pytest.raises(ConfigError) as refused:
        open_limiter(FakeClock(), 1.0, 1.0, "memcached://user:secret@host:11211")
    assert "secret" not in refused.value.message


def test_the_window_keeps_the_average_rate_and_the_burst() -> None:
    limiter = open_limiter(FakeClock(), 2000.0, 4000.0, "redis://127.0.0.1:1/0")
    assert isinstance(limiter, SharedRateLimiter)
    assert (limiter.amount, limiter.window) == (4000, 2)


async def test_unreachable_redis_falls_back_to_this_process_bucket_then_tries_again() -> None:
    clock = FakeClock()
    limiter = open_limiter(clock, 1.0, 2.0, "redis://127.0.0.1:1/0")  # nothing listens on port 1
    assert isinstance(limiter, SharedRateLimiter)
    await limiter.charge("k")
    assert not limiter.shared
    await limiter.charge("k")
    with pytest.raises(RateLimitedError):
        await limiter.charge("k")  # the local burst of 2 is spent: bounded, not open
    clock.advance(RETRY_SECONDS)
    await limiter.charge("k")  # tried Redis again, still down: the local bucket refilled one token
    assert not limiter.shared
