"""A connection's token lifetime and frame budget (``core.guard``): what is due when, with time passed in."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidings.core.guard import Due, Lifetime, TokenBucket


def test_warned_once_at_expiry_then_closed_after_the_grace() -> None:
    life = Lifetime(expires_at=100.0, grace=30.0)
    assert life.check(99.9) is Due.NOTHING
    assert life.next_due == 100.0
    assert life.check(100.0) is Due.WARN
    assert life.check(110.0) is Due.NOTHING  # warned once, not on every check
    assert life.next_due == 130.0
    assert life.check(129.9) is Due.NOTHING
    assert life.check(130.0) is Due.CLOSE


def test_a_renewed_token_starts_over_and_is_warned_about_in_turn() -> None:
    life = Lifetime(expires_at=100.0, grace=30.0)
    assert life.check(100.0) is Due.WARN
    life.renew(200.0)
    assert life.check(150.0) is Due.NOTHING  # past the old deadline: the fresh token counts
    assert life.next_due == 200.0
    assert life.check(200.0) is Due.WARN
    assert life.check(230.0) is Due.CLOSE


def test_a_check_after_the_whole_grace_or_with_no_grace_closes_at_once() -> None:
    assert Lifetime(100.0, 30.0).check(131.0) is Due.CLOSE
    assert Lifetime(100.0, 0.0).check(100.0) is Due.CLOSE
    with pytest.raises(ValueError, match="grace"):
        Lifetime(100.0, -1.0)


def test_bucket_allows_the_burst_then_the_rate() -> None:
    bucket = TokenBucket(rate=2.0, burst=3.0, now=0.0)
    assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.take(0.5)  # one token back after 1/rate s
    assert not bucket.take(0.5)
    assert [bucket.take(10.0) for _ in range(4)] == [True, True, True, False]  # refilled to the burst only


def test_bucket_refuses_nonsense_settings() -> None:
    with pytest.raises(ValueError, match="rate must be"):
        TokenBucket(rate=0.0, burst=3.0, now=0.0)
    with pytest.raises(ValueError, match="rate must be"):
        TokenBucket(rate=1.0, burst=0.5, now=0.0)


@given(
    rate=st.floats(0.5, 100.0),
    burst=st.integers(1, 50),
    gaps=st.lists(st.floats(0.0, 2.0), min_size=1, max_size=200),
)
def test_bucket_never_lets_more_than_burst_plus_rate_times_elapsed(
    rate: float, burst: int, gaps: list[float]
) -> None:
    """Whatever the arrival times, frames taken <= burst + rate * elapsed (the sustained limit holds)."""
    bucket = TokenBucket(rate=rate, burst=float(burst), now=0.0)
    now, taken = 0.0, 0
    for gap in gaps:
        now += gap
        taken += bucket.take(now)
        assert taken <= burst + rate * now + 1e-6
