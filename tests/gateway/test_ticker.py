"""The process's ticker (``gateway.ticker``): every registered stream ticks once per interval with its user's
top, one store read per slot of streams; a failed read still ticks (no check, ``top`` None); the timer stops
when the last stream leaves."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence

from tidings.gateway.ticker import Ticker

INTERVAL = 0.2  # long enough that a busy machine does not skip a period


class _Inbox:
    def __init__(self, fail: bool = False) -> None:
        self.reads: list[list[tuple[str, str]]] = []
        self.fail = fail

    async def last_seqs(self, users: Sequence[tuple[str, str]]) -> dict[tuple[str, str], int]:
        self.reads.append(list(users))
        if self.fail:
            raise RuntimeError("store down")
        return {(app, user): len(user) for app, user in users}


class _Stream:
    def __init__(self, user: str) -> None:
        self.app, self.user = "a", user
        self.tops: list[int | None] = []

    def tick(self, top: int | None) -> None:
        self.tops.append(top)


async def test_every_stream_ticks_each_interval_with_its_users_top_in_few_reads() -> None:
    """40 streams of 20 users over 8 slots: each ticks about once per interval with its user's top; the store
    is read at most once per slot and per user in each read."""
    inbox = _Inbox()
    ticker = Ticker(inbox, INTERVAL, slots=8, rng=random.Random(3))  # type: ignore[arg-type]
    streams = [_Stream("u" * (1 + i % 20)) for i in range(40)]
    for stream in streams:
        ticker.add(stream)
    await asyncio.sleep(3.5 * INTERVAL)
    for stream in streams:
        ticker.discard(stream)
    assert all(2 <= len(s.tops) <= 5 for s in streams), [len(s.tops) for s in streams]
    assert all(top == len(s.user) for s in streams for top in s.tops)
    assert len(inbox.reads) <= 5 * 8
    assert all(len(read) == len(set(read)) for read in inbox.reads)  # a user once per read
    assert len(ticker) == 0
    assert ticker._timer is None  # no streams, no timer


async def test_a_failed_read_still_ticks_without_a_top_and_the_next_period_reads_again() -> None:
    inbox = _Inbox(fail=True)
    ticker = Ticker(inbox, INTERVAL, slots=2)  # type: ignore[arg-type]
    stream = _Stream("alice")
    ticker.add(stream)
    await asyncio.sleep(1.6 * INTERVAL)
    inbox.fail = False
    await asyncio.sleep(1.2 * INTERVAL)
    ticker.discard(stream)
    assert stream.tops[0] is None
    assert stream.tops[-1] == 5
    assert len(inbox.reads) == len(stream.tops)


async def test_a_stream_closed_while_its_read_is_on_its_way_is_not_ticked() -> None:
    gate = asyncio.Event()

    class _Slow(_Inbox):
        async def last_seqs(self, users: Sequence[tuple[str, str]]) -> dict[tuple[str, str], int]:
            await gate.wait()
            return await super().last_seqs(users)

    ticker = Ticker(_Slow(), INTERVAL, slots=1)  # type: ignore[arg-type]
    stream = _Stream("alice")
    ticker.add(stream)
    await asyncio.sleep(1.2 * INTERVAL)  # the read started, and waits
    ticker.discard(stream)
    gate.set()
    await asyncio.sleep(0.01)
    assert stream.tops == []
