"""LiveStream over a real SQLite inbox and a lossy bus: what a connected client sees."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from tidings.backends.memory import LossyBus, MemoryBus
from tidings.backends.sql.sqlite import SqliteStore
from tidings.core import frames
from tidings.core.models import Event, InboxWrite, LiveMessage
from tidings.gateway.hub import Hub
from tidings.gateway.stream import EndReason, LiveStream
from tidings.ports import Bus
from tidings.runtime import Runtime
from tidings.settings import Settings


class _NoLog:
    async def close(self) -> None:
        return None


async def _runtime(tmp_path: Path, bus: Bus, **settings: object) -> Runtime:
    s = Settings(data=str(tmp_path), sqlite_synchronous="NORMAL", heartbeat_interval=0.05).replace(**settings)
    store = await SqliteStore.open(s.store_url, s)
    runtime = Runtime(settings=s, store=store, log=_NoLog(), bus=bus)  # type: ignore[arg-type]
    runtime.hub = Hub(bus)
    return runtime


@pytest.fixture
async def lossy(tmp_path: Path) -> AsyncIterator[tuple[Runtime, LossyBus]]:
    bus = LossyBus(MemoryBus(), random.Random(7), drop=0.2, duplicate=0.2, reorder=0.2)
    runtime = await _runtime(tmp_path, bus)
    yield runtime, bus
    await runtime.store.close()


async def _notify(runtime: Runtime, user: str, n: int, start: int = 0) -> None:
    """What the worker does: commit inbox rows, then publish them on the bus."""
    for i in range(start, start + n):
        event = Event(id=f"e{i:05d}", app="a", type="t", accepted_at=0.0, recipients=(user,))
        rows = await runtime.store.inbox.write([InboxWrite("a", user, event)])
        await runtime.bus.publish([LiveMessage(r.app, r.user, r.seq, r.payload) for r in rows])


def _stream(runtime: Runtime, user: str = "alice") -> LiveStream:
    return LiveStream(
        runtime,
        "a",
        user,
        transport="ws",
        encode=lambda _seq, payload: frames.encode_notification(payload),
        heartbeat=frames.encode_ping,
    )


async def _collect(stream: LiveStream, seen: list[int], until: int) -> None:
    async for batch in stream.batches():
        for frame in batch:
            obj = orjson.loads(frame)
            if obj["type"] == "notification":
                seen.append(obj["notification"]["seq"])
        if seen and seen[-1] >= until:
            return


async def test_lossy_bus_still_gives_every_notification_once_in_order(
    lossy: tuple[Runtime, LossyBus],
) -> None:
    """A client sees 1..N exactly once and in order although the bus drops, duplicates and reorders."""
    runtime, bus = lossy
    stream = _stream(runtime)
    await stream.open(after=0)
    seen: list[int] = []
    consumer = asyncio.create_task(_collect(stream, seen, until=300))
    await _notify(runtime, "alice", 300)
    await bus.flush()
    await asyncio.wait_for(consumer, timeout=10)
    await stream.close()
    assert seen == list(range(1, 301))
    assert bus.dropped > 0
    assert bus.duplicated > 0
    assert bus.reordered > 0


async def test_resume_after_seq_gets_only_what_follows(lossy: tuple[Runtime, LossyBus]) -> None:
    """Reconnecting with after=40 yields 41.. once each, then live ones."""
    runtime, bus = lossy
    await _notify(runtime, "alice", 50)
    stream = _stream(runtime)
    assert (await stream.open(after=40)).last_seq == 50
    seen: list[int] = []
    consumer = asyncio.create_task(_collect(stream, seen, until=60))
    await _notify(runtime, "alice", 10, start=50)
    await bus.flush()
    await asyncio.wait_for(consumer, timeout=10)
    await stream.close()
    assert seen == list(range(41, 61))


async def test_other_users_notifications_never_reach_the_stream(lossy: tuple[Runtime, LossyBus]) -> None:
    """Bob's notifications are not delivered on alice's stream."""
    runtime, _ = lossy
    stream = _stream(runtime)
    await stream.open(after=0)
    seen: list[int] = []
    consumer = asyncio.create_task(_collect(stream, seen, until=3))
    await _notify(runtime, "bob", 5)
    await _notify(runtime, "alice", 3, start=5)
    await asyncio.wait_for(consumer, timeout=10)
    await stream.close()
    assert seen == [1, 2, 3]


async def test_a_consumer_that_does_not_read_is_closed_as_slow(tmp_path: Path) -> None:
    """Past the outbox limit the stream ends as a slow consumer instead of buffering without bound."""
    runtime = await _runtime(tmp_path, MemoryBus(), outbox_max_frames=10)
    stream = _stream(runtime)
    await stream.open(after=0)
    batches = stream.batches()
    await _notify(runtime, "alice", 1)
    assert len(await anext(batches)) == 1  # then the client stops reading: the write never returns
    await _notify(runtime, "alice", 30, start=1)
    assert stream.end_reason is EndReason.SLOW_CONSUMER
    with pytest.raises(StopAsyncIteration):
        await anext(batches)
    await stream.close()
    await runtime.store.close()


async def test_drain_ends_every_stream_and_the_last_connection_unsubscribes(tmp_path: Path) -> None:
    """On drain all streams end with DRAINING; closing them releases the user's bus subscription."""
    bus = MemoryBus()
    runtime = await _runtime(tmp_path, bus)
    first, second = _stream(runtime), _stream(runtime)
    for stream in (first, second):
        runtime.hub.register(stream)
        await stream.open(after=None)
    assert bus.subscriber_count() == 1
    runtime.hub.drain(EndReason.DRAINING)
    for stream in (first, second):
        assert [b async for b in stream.batches()] == []
        assert stream.end_reason is EndReason.DRAINING
        await stream.close()
    assert bus.subscriber_count() == 0
    await runtime.store.close()


async def test_a_resume_longer_than_the_outbox_is_paced_not_closed(tmp_path: Path) -> None:
    """A client resuming 1,200 notifications behind, with a 10-frame outbox, gets them all, in order."""
    runtime = await _runtime(tmp_path, MemoryBus(), outbox_max_frames=10, backlog_page=100)
    await _notify(runtime, "alice", 1200)
    stream = _stream(runtime)
    await stream.open(after=0)
    seen: list[int] = []
    await asyncio.wait_for(_collect(stream, seen, until=1200), timeout=10)
    assert seen == list(range(1, 1201))
    assert stream.end_reason is None
    await stream.close()
    await runtime.store.close()
