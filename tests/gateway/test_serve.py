"""The one serve loop (``gateway.serve``) over a fake transport: what every shell gets from it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import orjson

from tidings.api import errors
from tidings.backends.memory import MemoryBus
from tidings.backends.sql.sqlite import SqliteStore
from tidings.core import frames
from tidings.core.models import Event, InboxWrite, LiveMessage
from tidings.core.resume import epoch_of
from tidings.gateway import serve
from tidings.gateway.admission import Refused
from tidings.gateway.hub import Hub
from tidings.gateway.stream import EndReason, LiveStream
from tidings.runtime import Runtime
from tidings.settings import Settings


class _NoLog:
    async def close(self) -> None:
        return None


async def _runtime(tmp_path: Path, **settings: object) -> Runtime:
    s = Settings(data=str(tmp_path), sqlite_synchronous="NORMAL", heartbeat_interval=0.05).replace(**settings)
    store = await SqliteStore.open(s.store_url, s)
    bus = MemoryBus()
    runtime = Runtime(settings=s, store=store, log=_NoLog(), bus=bus)  # type: ignore[arg-type]
    runtime.hub = Hub(bus)
    return runtime


async def _notify(runtime: Runtime, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        event = Event(id=f"e{i:05d}", app="a", type="t", accepted_at=0.0, recipients=("alice",))
        rows = await runtime.store.inbox.write([InboxWrite("a", "alice", event)])
        await runtime.bus.publish([LiveMessage(r.app, r.user, r.seq, r.payload) for r in rows])


class Recorder:
    """A transport that records what it is given; ``gate`` (when set) holds every write after the first."""

    def __init__(self, gate: asyncio.Event | None = None, gone_after: int | None = None) -> None:
        self.sent: list[list[bytes]] = []
        self.closed: list[Refused | None] = []
        self.gate, self.gone_after = gate, gone_after
        self._changed = asyncio.Event()

    async def send(self, batch: list[bytes]) -> None:
        if self.gone_after is not None and len(self.sent) >= self.gone_after:
            raise serve.Gone
        self.sent.append(list(batch))
        self._changed.set()
        if self.gate is not None and len(self.sent) > 1:
            await self.gate.wait()

    async def close(self, refused: Refused | None) -> None:
        self.closed.append(refused)

    async def until(self, condition: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait, write by write, until ``condition`` holds."""
        async with asyncio.timeout(timeout):
            while not condition():
                self._changed.clear()
                await self._changed.wait()

    def seqs(self) -> list[int]:
        objs = [orjson.loads(frame) for batch in self.sent for frame in batch]
        return [obj["notification"]["seq"] for obj in objs if obj["type"] == "notification"]


async def test_ready_first_then_the_backlog_then_live_and_drain_closes_with_1012(tmp_path: Path) -> None:
    """The loop registers, sends ready with the resume backlog, then live messages; a drain ends it with 1012."""
    runtime = await _runtime(tmp_path)
    await _notify(runtime, 3)
    stream = LiveStream(runtime, "a", "alice", transport="ws")
    transport = Recorder()
    task = asyncio.create_task(serve.serve(runtime, stream, 1, serve.websocket_ready, transport))
    await transport.until(lambda: transport.seqs() == [2, 3])
    # The backlog's first page was read while opening: it leaves in the ready frame's write.
    assert len(transport.sent) == 1
    assert transport.sent[0][0] == frames.encode_ready("alice", 3, epoch_of("a", 0.0))  # "a" is not stored
    assert runtime.hub.open_streams == 1
    await _notify(runtime, 2, start=3)
    await transport.until(lambda: transport.seqs() == [2, 3, 4, 5])
    runtime.hub.drain(EndReason.DRAINING)
    await asyncio.wait_for(task, 5)
    [refused] = transport.closed
    assert refused is not None
    assert (refused.code, refused.close_code) == ("draining", errors.WS_DRAINING)
    assert runtime.hub.open_streams == 0
    await runtime.store.close()


async def test_a_slow_consumer_is_closed_with_1013(tmp_path: Path) -> None:
    """A write that does not return while the outbox fills: the loop ends and closes with try-again (1013)."""
    runtime = await _runtime(tmp_path, outbox_max_frames=5)
    stream = LiveStream(runtime, "a", "alice", transport="ws")
    gate = asyncio.Event()
    transport = Recorder(gate)
    task = asyncio.create_task(serve.serve(runtime, stream, None, serve.websocket_ready, transport))
    await transport.until(lambda: len(transport.sent) == 1)  # ready
    await _notify(runtime, 1)
    await transport.until(lambda: len(transport.sent) == 2)  # that write never returns (until the gate opens)
    await _notify(runtime, 10, start=1)
    assert stream.end_reason is EndReason.SLOW_CONSUMER
    gate.set()
    await asyncio.wait_for(task, 5)
    [refused] = transport.closed
    assert refused is not None
    assert (refused.code, refused.close_code) == ("slow_consumer", errors.WS_TRY_AGAIN)
    await runtime.store.close()


async def test_a_gone_peer_ends_the_stream_without_a_refusal(tmp_path: Path) -> None:
    """A transport that reports its peer gone: the stream ends as CLIENT_GONE and is simply closed."""
    runtime = await _runtime(tmp_path)
    stream = LiveStream(runtime, "a", "alice", transport="ws")
    transport = Recorder(gone_after=1)
    task = asyncio.create_task(serve.serve(runtime, stream, None, serve.websocket_ready, transport))
    await transport.until(lambda: len(transport.sent) == 1)
    await _notify(runtime, 1)
    await asyncio.wait_for(task, 5)
    assert transport.closed == [None]
    assert stream.end_reason is EndReason.CLIENT_GONE
    assert runtime.hub.open_streams == 0
    await runtime.store.close()


async def test_a_cursor_ahead_gets_a_reset_right_after_ready_and_then_what_comes_next(tmp_path: Path) -> None:
    """after=99 with last_seq 3: ready and reset in the first write, then seq 4 on, never silent."""
    runtime = await _runtime(tmp_path)
    await _notify(runtime, 3)
    stream = LiveStream(runtime, "a", "alice", transport="ws")
    transport = Recorder()
    task = asyncio.create_task(serve.serve(runtime, stream, 99, serve.websocket_ready, transport))
    await transport.until(lambda: len(transport.sent) == 1)
    epoch = epoch_of("a", 0.0)
    assert transport.sent[0] == [frames.encode_ready("alice", 3, epoch), frames.encode_reset(3, epoch)]
    assert orjson.loads(transport.sent[0][1]) == {"type": "reset", "last_seq": 3, "epoch": epoch}
    await _notify(runtime, 2, start=3)
    await transport.until(lambda: transport.seqs() == [4, 5])
    runtime.hub.drain(EndReason.DRAINING)
    await asyncio.wait_for(task, 5)
    await runtime.store.close()


async def test_a_cursor_at_last_seq_gets_no_reset(tmp_path: Path) -> None:
    runtime = await _runtime(tmp_path)
    await _notify(runtime, 3)
    stream = LiveStream(runtime, "a", "alice", transport="ws")
    transport = Recorder()
    task = asyncio.create_task(serve.serve(runtime, stream, 3, serve.websocket_ready, transport))
    await transport.until(lambda: len(transport.sent) == 1)
    assert transport.sent[0] == [frames.encode_ready("alice", 3, epoch_of("a", 0.0))]
    await _notify(runtime, 1, start=3)
    await transport.until(lambda: transport.seqs() == [4])
    runtime.hub.drain(EndReason.DRAINING)
    await asyncio.wait_for(task, 5)
    await runtime.store.close()
