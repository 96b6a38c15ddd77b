"""The per-key token bucket, on a fake clock."""

from __future__ import annotations

import pytest

from tidings.api.limits import RateLimiter
from tidings.errors import RateLimitedError
from tidings.testing import FakeClock


def test_the_burst_is_available_at_once_then_the_rate() -> None:
    """A fresh key may send `burst` events at once, then `rate` per second."""
    clock = FakeClock()
    limiter = RateLimiter(clock, rate=10.0, burst=5.0)
    for _ in range(5):
        limiter.check("k")
    with pytest.raises(RateLimitedError) as refused:
        limiter.check("k")
    assert refused.value.retry_after == pytest.approx(0.1)
    clock.advance(0.1)
    limiter.check("k")


def test_a_refused_request_costs_nothing() -> None:
    """Being refused does not push the wait further out."""
    clock = FakeClock()
    limiter = RateLimiter(clock, rate=1.0, burst=3.0)
    limiter.check("k", 3)
    for _ in range(5):
        with pytest.raises(RateLimitedError):
            limiter.check("k", 2)
    clock.advance(2.0)
    limiter.check("k", 2)


def test_keys_have_separate_buckets() -> None:
    """One producer using up its tokens does not slow another."""
    limiter = RateLimiter(FakeClock(), rate=1.0, burst=1.0)
    limiter.check("a")
    limiter.check("b")
    with pytest.raises(RateLimitedError):
        limiter.check("a")


def test_a_cost_above_the_burst_waits_for_a_full_bucket() -> None:
    """A batch larger than the burst is charged a full bucket instead of being refused forever."""
    clock = FakeClock()
    limiter = RateLimiter(clock, rate=1.0, burst=4.0)
    limiter.check("k", 1)
    with pytest.raises(RateLimitedError) as refused:
        limiter.check("k", 100)
    assert refused.value.retry_after == pytest.approx(1.0)
    clock.advance(1.0)
    limiter.check("k", 100)


def test_the_bucket_count_is_bounded() -> None:
    """Many keys cannot grow memory past max_keys."""
    limiter = RateLimiter(FakeClock(), rate=1.0, burst=1.0, max_keys=3)
    for key in "abcdef":
        limiter.check(key)
    assert len(limiter._buckets) == 3


def test_rate_zero_turns_limiting_off() -> None:
    """With rate 0 nothing is ever refused."""
    limiter = RateLimiter(FakeClock(), rate=0.0, burst=0.0)
    for _ in range(100):
        limiter.check("k", 1000)
