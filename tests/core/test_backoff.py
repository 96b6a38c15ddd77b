"""Retry schedules: full jitter for backend retries, spread for reconnect hints."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidings.core.backoff import full_jitter, jittered


def test_full_jitter_grows_then_caps() -> None:
    """Retries wait longer each time, up to the cap, scaled by the random draw."""
    assert full_jitter(0, 0.5) == pytest.approx(0.05)
    assert full_jitter(3, 0.5) == pytest.approx(0.4)
    assert full_jitter(20, 0.5) == pytest.approx(15.0)
    assert full_jitter(2, 0.5, base=1.0, cap=3.0) == pytest.approx(1.5)
    assert full_jitter(5, 0.0) == 0.0


@pytest.mark.parametrize("attempt", [1023, 1024, 10_000, 10**9])
def test_full_jitter_huge_attempt_does_not_overflow(attempt: int) -> None:
    """A process that has retried for days still gets a capped delay, not an exception."""
    assert full_jitter(attempt, 0.5) == pytest.approx(15.0)
    assert full_jitter(attempt, 0.5, base=1e300, cap=60.0) == pytest.approx(30.0)


@pytest.mark.parametrize(("attempt", "rand"), [(-1, 0.5), (0, 1.0), (0, -0.1), (0, float("nan"))])
def test_full_jitter_rejects_bad_arguments(attempt: int, rand: float) -> None:
    """A negative attempt or a draw outside [0, 1) is a programming error."""
    with pytest.raises(ValueError, match="must be"):
        full_jitter(attempt, rand)


@settings(max_examples=200)
@given(st.integers(0, 5000), st.floats(0.0, 1.0, exclude_max=True))
def test_full_jitter_stays_within_its_window(attempt: int, rand: float) -> None:
    """Every delay lies in [0, min(cap, base * 2**attempt)]."""
    delay = full_jitter(attempt, rand)
    assert 0.0 <= delay <= min(30.0, 0.1 * 2.0 ** min(attempt, 1000))


def test_jittered_spreads_around_the_value() -> None:
    """A reconnect hint is moved by up to the spread either way, by the random draw."""
    assert jittered(1000, 0.0) == pytest.approx(500.0)
    assert jittered(1000, 0.5) == pytest.approx(1000.0)
    assert jittered(1000, 0.75, spread=0.2) == pytest.approx(1100.0)
    assert jittered(1000, 0.9, spread=0.0) == pytest.approx(1000.0)


@pytest.mark.parametrize(("rand", "spread"), [(1.0, 0.5), (0.5, -0.1), (0.5, 1.5)])
def test_jittered_rejects_bad_arguments(rand: float, spread: float) -> None:
    """A draw outside [0, 1) or a spread outside [0, 1] is a programming error."""
    with pytest.raises(ValueError, match="must be"):
        jittered(10.0, rand, spread)
