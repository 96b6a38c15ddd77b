"""The bounded per-connection send queue: exact limits, FIFO order, policy "close", statistics."""

from __future__ import annotations

from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidings.core.outbox import Outbox, OutboxStatistics


def test_frame_limit_is_exact() -> None:
    """A connection may have exactly max_frames frames queued; the next one overflows it."""
    outbox = Outbox(max_frames=3, max_bytes=1000)
    assert all(outbox.push(b"x") for _ in range(3))
    assert len(outbox) == 3
    assert not outbox.overflowed
    assert outbox.push(b"x") is False
    assert outbox.overflowed
    assert len(outbox) == 3


def test_byte_limit_is_exact() -> None:
    """Frames totalling exactly max_bytes fit; one more byte overflows the queue."""
    outbox = Outbox(max_frames=100, max_bytes=10)
    assert outbox.push(b"abcd")
    assert outbox.push(b"efghij")
    assert outbox.nbytes == 10
    assert not outbox.overflowed
    assert outbox.push(b"k") is False
    assert outbox.overflowed
    assert outbox.nbytes == 10


def test_a_frame_larger_than_the_byte_limit_overflows_an_empty_queue() -> None:
    """A frame that can never fit closes the connection rather than being sent in part."""
    outbox = Outbox(max_frames=10, max_bytes=4)
    assert outbox.push(b"12345") is False
    assert outbox.overflowed
    assert len(outbox) == 0


def test_once_overflowed_every_push_is_refused() -> None:
    """After an overflow nothing more is queued, even after draining: the consumer is to be closed."""
    outbox = Outbox(max_frames=1, max_bytes=100)
    assert outbox.push(b"a")
    assert not outbox.push(b"b")
    assert outbox.drain() == [b"a"]
    assert not outbox.push(b"c")
    assert outbox.statistics().pushed_total == 1


def test_drain_is_fifo_and_frees_room() -> None:
    """Frames leave in the order they were queued, and drained room can be used again."""
    outbox = Outbox(max_frames=3, max_bytes=100)
    for frame in (b"1", b"22", b"333"):
        assert outbox.push(frame)
    assert outbox.drain(2) == [b"1", b"22"]
    assert outbox.nbytes == 3
    assert len(outbox) == 1
    assert outbox.push(b"4")
    assert outbox.push(b"5")
    assert outbox.drain() == [b"333", b"4", b"5"]
    assert outbox.drain() == []
    assert outbox.nbytes == 0


@pytest.mark.parametrize(("limit", "taken"), [(0, 0), (-1, 0), (1, 1), (5, 2), (None, 2)])
def test_drain_limits(limit: int | None, taken: int) -> None:
    """drain takes at most the number asked for, and never fails on odd counts."""
    outbox = Outbox(max_frames=5, max_bytes=100)
    outbox.push(b"a")
    outbox.push(b"b")
    assert outbox.drain(limit) == [b"a", b"b"][:taken]
    assert len(outbox) == 2 - taken


def test_statistics() -> None:
    """statistics() reports the queue's size, limits, overflow and totals, for metrics."""
    outbox = Outbox(max_frames=2, max_bytes=50)
    outbox.push(b"hello")
    outbox.push(b"world!")
    outbox.drain(1)
    outbox.push(b"x" * 60)
    assert outbox.statistics() == OutboxStatistics(
        frames=1, bytes=6, max_frames=2, max_bytes=50, overflowed=True, pushed_total=2, drained_total=1
    )
    assert Outbox.policy == "close"


@pytest.mark.parametrize(("max_frames", "max_bytes"), [(0, 10), (10, 0)])
def test_limits_must_be_positive(max_frames: int, max_bytes: int) -> None:
    """An outbox that could hold nothing is a configuration error."""
    with pytest.raises(ValueError, match=">= 1"):
        Outbox(max_frames, max_bytes)


@settings(max_examples=300)
@given(
    max_frames=st.integers(1, 6),
    max_bytes=st.integers(1, 30),
    ops=st.lists(st.one_of(st.binary(max_size=12), st.none() | st.integers(0, 4)), max_size=40),
)
def test_outbox_matches_a_simple_model(
    max_frames: int, max_bytes: int, ops: list[bytes | int | None]
) -> None:
    """Whatever the mix of pushes and drains, the outbox keeps within its limits and keeps the order."""
    outbox = Outbox(max_frames, max_bytes)
    model: deque[bytes] = deque()
    overflowed = False
    for op in ops:
        if isinstance(op, bytes):
            fits = not overflowed and len(model) < max_frames and sum(map(len, model)) + len(op) <= max_bytes
            overflowed = overflowed or not fits
            assert outbox.push(op) is fits
            if fits:
                model.append(op)
        else:
            count = len(model) if op is None else min(op, len(model))
            assert outbox.drain(op) == [model.popleft() for _ in range(count)]
        assert outbox.overflowed is overflowed
        assert len(outbox) == len(model) <= max_frames
        assert outbox.nbytes == sum(map(len, model)) <= max_bytes


def test_pulled_frames_pass_the_limits_but_count_against_later_pushes() -> None:
    """A backlog page read at the writer's pace is queued whole; live frames behind it see a full outbox."""
    outbox = Outbox(max_frames=2, max_bytes=10)
    assert all(outbox.push(b"12345", pulled=True) for _ in range(4))
    assert (len(outbox), outbox.nbytes, outbox.overflowed) == (4, 20, False)
    assert not outbox.push(b"x")
    assert outbox.overflowed
