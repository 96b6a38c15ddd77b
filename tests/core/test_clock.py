"""Time (``tidings.core.clock``): the system clock and the RFC 3339 timestamps users see."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from tidings.core.clock import Clock, SystemClock, isoformat
from tidings.testing import FakeClock


def test_the_system_clock_reads_wall_time_and_a_monotonic_time_that_never_goes_back() -> None:
    clock: Clock = SystemClock()
    before = time.time()
    assert before - 1 <= clock.time() <= time.time() + 1
    readings = [clock.monotonic() for _ in range(1000)]
    assert readings == sorted(readings)


def test_the_fake_clock_satisfies_the_same_protocol() -> None:
    clock: Clock = FakeClock(100.0)
    assert (clock.time(), clock.monotonic()) == (100.0, 0.0)


def test_isoformat_is_utc_with_milliseconds() -> None:
    assert isoformat(0) == "1970-01-01T00:00:00.000Z"
    assert isoformat(1_790_000_000.123) == "2026-09-21T14:13:20.123Z"
    assert isoformat(1_790_000_000.0004) == "2026-09-21T14:13:20.000Z"


def test_isoformat_rounds_up_into_the_next_second_rather_than_printing_1000_ms() -> None:
    assert isoformat(59.9996) == "1970-01-01T00:01:00.000Z"
    assert isoformat(1_790_000_009.9999) == "2026-09-21T14:13:30.000Z"


@given(st.floats(min_value=0, max_value=4_102_444_800, allow_nan=False))  # up to 2100
def test_isoformat_parses_back_to_the_same_instant_within_half_a_millisecond(ts: float) -> None:
    text = isoformat(ts)
    assert len(text) == 24
    assert text.endswith("Z")
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    assert parsed.tzinfo is not None
    assert parsed.utcoffset() == UTC.utcoffset(None)
    assert abs(parsed.timestamp() - ts) <= 0.0005 + 1e-6
