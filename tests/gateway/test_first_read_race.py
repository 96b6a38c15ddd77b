"""Issue 12 item 5, the server side of the bench stall: a live message that arrives while a stream's store read
is on its way is not lost and does not wait for a later message or a heartbeat: the session reads again and the
writer is woken for it. (The bench feeds its gateway without inbox rows, so there the second read found
nothing: a bench artifact, fixed in ``bench.servers.wait_streams_settled``; here the row is in the store.)"""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest

from tidings.backends.memory import MemoryBus
from tidings.backends.sql.sqlite import SqliteStore
from tidings.core import frames
from tidings.core.models import Event, InboxWrite, LiveMessage
from tidings.gateway.hub import Hub
from tidings.gateway.stream import LiveStream
from tidings.runtime import Runtime
from tidings.settings import Settings


class _NoLog:
    async def close(self) -> None:
        return None


async def test_a_live_message_during_the_first_store_read_is_delivered_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No heartbeat for an hour: nothing but the wake-up can deliver the notification.
    settings = Settings(data=str(tmp_path), sqlite_synchronous="NORMAL", heartbeat_interval=3600.0)
    store = await SqliteStore.open(settings.store_url, settings)
    bus = MemoryBus()
    runtime = Runtime(settings=settings, store=store, log=_NoLog(), bus=bus)  # type: ignore[arg-type]
    runtime.hub = Hub(bus)
    read_done, answer = asyncio.Event(), asyncio.Event()
    real_backlog = store.inbox.backlog
    reads = 0

    async def held_backlog(app: str, user: str, after: int, limit: int) -> list:  # type: ignore[type-arg]
        nonlocal reads
        reads += 1
        rows = await real_backlog(app, user, after, limit)  # read before the row below is committed
        if reads == 1:
            read_done.set()
            await answer.wait()
        return rows

    monkeypatch.setattr(store.inbox, "backlog", held_backlog)
    stream = LiveStream(
        runtime, "a", "alice", transport="ws", encode=lambda _s, p: frames.encode_notification(p)
    )
    try:
        await stream.open(after=0)
        batches = stream.batches()
        first = asyncio.ensure_future(anext(batches))
        await asyncio.wait_for(read_done.wait(), 10)
        # What the worker does meanwhile: commit the row, then publish it.
        event = Event(id="e1", app="a", type="t", accepted_at=0.0, recipients=("alice",))
        rows = await store.inbox.write([InboxWrite("a", "alice", event)])
        await bus.publish([LiveMessage(r.app, r.user, r.seq, r.payload) for r in rows])
        answer.set()  # the first read answers: without the row
        batch = await asyncio.wait_for(first, 10)  # a bound on a hang, not a measurement
        seqs = [orjson.loads(f)["notification"]["seq"] for f in batch]
        assert seqs == [1]
        assert reads == 2  # it read again because a live message proved a newer row
        await batches.aclose()
    finally:
        await stream.close()
        await store.close()
