"""The opening reads of live streams, coalesced (``gateway.reads``): streams opening together share one store
read, each gets its own answer, a store error reaches each of them; and a live message heard while the stream
opens is delivered without waiting for a later one (the first page was read before the stream existed)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import orjson
import pytest

from tidings.backends.memory import MemoryBus
from tidings.backends.sql.sqlite import SqliteStore
from tidings.core import frames
from tidings.core.models import Event, InboxWrite, LiveMessage
from tidings.gateway import reads
from tidings.gateway.hub import Hub
from tidings.gateway.reads import OpenReads
from tidings.gateway.stream import LiveStream
from tidings.ports import Opening, OpenRequest
from tidings.runtime import Runtime
from tidings.settings import Settings


class _Inbox:
    """Answers ``openings`` with last_seq = len(user), after ``gate`` opens; records each batch."""

    def __init__(self, fail: bool = False) -> None:
        self.batches: list[list[OpenRequest]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail = fail

    async def openings(self, requests: Sequence[OpenRequest], limit: int) -> list[Opening]:
        self.batches.append(list(requests))
        await self.gate.wait()
        if self.fail:
            raise RuntimeError("store down")
        return [Opening(len(user), 0, None) for _app, user, _after in requests]


async def test_streams_opening_together_share_one_read_and_each_gets_its_answer() -> None:
    inbox = _Inbox()
    opener = OpenReads(inbox, 10)  # type: ignore[arg-type]
    users = ["a", "bb", "ccc", "dddd"]
    openings = await asyncio.gather(*(opener.open("app", user, 0) for user in users))
    assert [o.last_seq for o in openings] == [1, 2, 3, 4]
    assert inbox.batches == [[("app", user, 0) for user in users]]
    assert (await opener.open("app", "e", None)).last_seq == 1  # a lone one goes at once, alone
    assert inbox.batches[-1] == [("app", "e", None)]


async def _turns() -> None:
    for _ in range(5):  # a few event loop iterations: the tasks ask, the batches are sent
        await asyncio.sleep(0)


async def test_what_arrives_while_reads_are_in_flight_goes_in_the_next_batch() -> None:
    inbox = _Inbox()
    inbox.gate.clear()
    opener = OpenReads(inbox, 10, max_batch=2)  # type: ignore[arg-type]
    first = [asyncio.ensure_future(opener.open("app", f"u{i}", 0)) for i in range(4)]
    await _turns()
    assert len(inbox.batches) == reads.CONCURRENCY  # as many batches of two as may be in flight
    later = [asyncio.ensure_future(opener.open("app", f"v{i}", 0)) for i in range(2)]
    await _turns()
    assert len(inbox.batches) == reads.CONCURRENCY  # they wait for a batch to finish
    inbox.gate.set()
    await asyncio.wait_for(asyncio.gather(*first, *later), 10)  # a bound on a hang
    assert [len(batch) for batch in inbox.batches] == [2, 2, 2]


async def test_a_store_error_reaches_every_stream_of_the_batch() -> None:
    opener = OpenReads(_Inbox(fail=True), 10)  # type: ignore[arg-type]
    results = await asyncio.gather(*(opener.open("app", u, 0) for u in "xyz"), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)


class _NoLog:
    async def close(self) -> None:
        return None


def _event(i: int) -> Event:
    return Event(id=f"e{i}", app="a", type="t", accepted_at=0.0, recipients=("alice",))


async def test_a_live_message_heard_while_the_stream_opens_follows_the_first_page(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The resume read (last_seq and the first page) answers without row 3, committed and published while it
    was on its way: the stream still delivers 1, 2, 3 at once (no heartbeat for an hour)."""
    settings = Settings(data=str(tmp_path), sqlite_synchronous="NORMAL", heartbeat_interval=3600.0)
    store = await SqliteStore.open(settings.store_url, settings)
    bus = MemoryBus()
    runtime = Runtime(settings=settings, store=store, log=_NoLog(), bus=bus)  # type: ignore[arg-type]
    runtime.hub = Hub(bus)
    await store.inbox.write([InboxWrite("a", "alice", _event(i)) for i in (1, 2)])
    read_done, answer = asyncio.Event(), asyncio.Event()
    real_openings = store.inbox.openings

    async def held_openings(requests: Sequence[OpenRequest], limit: int) -> list[Opening]:
        found = await real_openings(requests, limit)
        read_done.set()
        await answer.wait()
        return found

    monkeypatch.setattr(store.inbox, "openings", held_openings)
    stream = LiveStream(
        runtime, "a", "alice", transport="ws", encode=lambda _s, p: frames.encode_notification(p)
    )
    try:
        opening = asyncio.ensure_future(stream.open(after=0))
        await asyncio.wait_for(read_done.wait(), 10)
        rows = await store.inbox.write([InboxWrite("a", "alice", _event(3))])
        await bus.publish([LiveMessage(r.app, r.user, r.seq, r.payload) for r in rows])
        answer.set()
        opened = await asyncio.wait_for(opening, 10)
        assert opened.last_seq == 2
        batches = stream.batches()
        seqs: list[int] = []
        while len(seqs) < 3:
            batch = await asyncio.wait_for(anext(batches), 10)  # a bound on a hang, not a measurement
            seqs += [orjson.loads(f)["notification"]["seq"] for f in batch]
        assert seqs == [1, 2, 3]
        await batches.aclose()
    finally:
        await stream.close()
        await store.close()
