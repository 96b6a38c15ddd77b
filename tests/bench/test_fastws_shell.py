"""``gateway.listener`` (``--ws-server fastws``): the /v1/ws protocol over a real socket, as a client sees it
(same as the ASGI shell)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
import websockets
from websockets.asyncio.client import ClientConnection, connect

from tidings.auth import create_app_record, mint_user_token
from tidings.backends.memory import MemoryBus
from tidings.backends.sql.sqlite import SqliteStore
from tidings.core.models import App, Event, InboxWrite, LiveMessage
from tidings.core.resume import epoch_of
from tidings.gateway.hub import Hub
from tidings.gateway.listener import FastGateway, encode_frames, frame_header
from tidings.runtime import Runtime
from tidings.settings import Settings


@dataclass
class Gateway:
    runtime: Runtime
    gateway: FastGateway
    app: App

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.gateway.port}/v1/ws"

    def token(self, user: str) -> str:
        return mint_user_token(self.app, user, 3600, time.time())

    async def notify(self, user: str, n: int) -> None:
        """What the worker does: commit inbox rows, then publish them on the bus."""
        for i in range(n):
            event = Event(id=f"{user}-{i}-{time.monotonic_ns()}", app="a", type="t", accepted_at=time.time())
            rows = await self.runtime.store.inbox.write([InboxWrite("a", user, event)])
            await self.runtime.bus.publish([LiveMessage(r.app, r.user, r.seq, r.payload) for r in rows])


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[Gateway]:
    settings = Settings(
        data=str(tmp_path), sqlite_synchronous="NORMAL", auth_timeout=0.5, outbox_max_frames=20
    )
    store = await SqliteStore.open(settings.store_url, settings)
    await create_app_record(store, "a", ["https://app.example"], time.time())
    app = await store.apps.get("a")
    assert app is not None
    bus = MemoryBus()
    runtime = Runtime(settings=settings, store=store, log=store.embedded_log(settings), bus=bus)
    runtime.hub = Hub(bus)
    gateway = FastGateway(runtime, "127.0.0.1", 0)
    await gateway.start()
    yield Gateway(runtime, gateway, app)
    await gateway.close(timeout=1.0)
    await runtime.log.close()
    await store.close()


async def _auth(ws: ClientConnection, token: str, after: int | None = None) -> dict[str, object]:
    frame: dict[str, object] = {"type": "auth", "token": token}
    if after is not None:
        frame["after"] = after
    await ws.send(orjson.dumps(frame).decode())
    return dict(orjson.loads(await asyncio.wait_for(ws.recv(), 5)))


async def _next(ws: ClientConnection) -> dict[str, object]:
    return dict(orjson.loads(await asyncio.wait_for(ws.recv(), 5)))


async def _closed_with(ws: ClientConnection) -> tuple[dict[str, object], int | None]:
    error = await _next(ws)
    with pytest.raises(websockets.ConnectionClosed):
        await asyncio.wait_for(ws.recv(), 5)
    return error, ws.close_code


async def test_auth_then_ready_then_live_notifications_in_order(gw: Gateway) -> None:
    """A client that authenticates gets ready with its last seq, then each notification once, in order."""
    await gw.notify("alice", 2)
    async with connect(gw.url) as ws:
        epoch = epoch_of(gw.app.name, gw.app.created_at)
        assert await _auth(ws, gw.token("alice")) == {
            "type": "ready",
            "user": "alice",
            "last_seq": 2,
            "epoch": epoch,
        }
        await gw.notify("alice", 3)
        seqs = [(await _next(ws))["notification"]["seq"] for _ in range(3)]  # type: ignore[index]
    assert seqs == [3, 4, 5]


async def test_resume_with_after_sends_the_backlog_first(gw: Gateway) -> None:
    """Reconnecting with after=1 replays 2..N from the store before anything live."""
    await gw.notify("bob", 4)
    async with connect(gw.url) as ws:
        await _auth(ws, gw.token("bob"), after=1)
        seqs = [(await _next(ws))["notification"]["seq"] for _ in range(3)]  # type: ignore[index]
    assert seqs == [2, 3, 4]


async def test_ping_frame_is_answered_with_pong(gw: Gateway) -> None:
    """The application-level ping gets a pong."""
    async with connect(gw.url) as ws:
        await _auth(ws, gw.token("carol"))
        await ws.send('{"type":"ping"}')
        assert await _next(ws) == {"type": "pong"}


async def test_bad_token_is_refused_with_1008(gw: Gateway) -> None:
    """An invalid token gets an error frame, then close code 1008."""
    async with connect(gw.url) as ws:
        await ws.send('{"type":"auth","token":"not-a-jwt"}')
        error, code = await _closed_with(ws)
    assert error["type"] == "error"
    assert code == 1008


async def test_no_auth_frame_in_time_is_closed(gw: Gateway) -> None:
    """A client that never authenticates is told auth_timeout and closed (1008)."""
    async with connect(gw.url) as ws:
        error, code = await _closed_with(ws)
    assert error["code"] == "auth_timeout"
    assert code == 1008


async def test_foreign_origin_is_refused(gw: Gateway) -> None:
    """A browser page from an origin the app does not allow cannot connect."""
    async with connect(gw.url, origin="https://evil.example") as ws:  # type: ignore[arg-type]
        await ws.send(orjson.dumps({"type": "auth", "token": gw.token("dave")}).decode())
        error, code = await _closed_with(ws)
    assert error["code"] == "origin_not_allowed"
    assert code == 1008


async def test_invalid_frame_after_auth_closes_with_1007(gw: Gateway) -> None:
    """Garbage after auth ends the connection with 1007."""
    async with connect(gw.url) as ws:
        await _auth(ws, gw.token("erin"))
        await ws.send("not json")
        error, code = await _closed_with(ws)
    assert error["type"] == "error"
    assert code == 1007


async def test_other_paths_are_not_found(gw: Gateway) -> None:
    """Only /v1/ws upgrades; any other path is a 404 handshake refusal."""
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with connect(f"ws://127.0.0.1:{gw.gateway.port}/elsewhere"):
            pass
    assert refused.value.response.status_code == 404


async def test_drain_tells_clients_to_resume_elsewhere(gw: Gateway) -> None:
    """Closing the gateway ends open streams with 1012 (draining)."""
    async with connect(gw.url) as ws:
        await _auth(ws, gw.token("frank"))
        closing = asyncio.create_task(gw.gateway.close(timeout=2.0))
        error, code = await _closed_with(ws)
        await closing
    assert error["code"] == "draining"
    assert code == 1012


async def test_queued_frames_leave_in_one_write(gw: Gateway) -> None:
    """Frames queued for a connection while it was busy are coalesced: fewer writes than frames."""
    async with connect(gw.url) as ws:
        await _auth(ws, gw.token("gina"))
        events = [Event(id=f"g{i}", app="a", type="t", accepted_at=time.time()) for i in range(10)]
        rows = await gw.runtime.store.inbox.write([InboxWrite("a", "gina", e) for e in events])
        await gw.runtime.bus.publish([LiveMessage(r.app, r.user, r.seq, r.payload) for r in rows])
        seqs = [(await _next(ws))["notification"]["seq"] for _ in range(10)]  # type: ignore[index]
    assert seqs == list(range(1, 11))
    stats = gw.gateway.statistics()
    assert stats.frames_sent == 11  # ready + 10
    assert stats.writes <= 3  # ready, then the ten in one write (or two, if a store read raced the bus)


def test_frame_headers_follow_rfc6455_length_encoding() -> None:
    """Server text frames use the 7-bit, 16-bit and 64-bit length forms at the RFC's boundaries."""
    assert frame_header(125) == bytes((0x81, 125))
    assert frame_header(126) == bytes((0x81, 126, 0, 126))
    assert frame_header(65536) == bytes((0x81, 127)) + (65536).to_bytes(8, "big")
    assert encode_frames([b"a", b"bc"]) == b"\x81\x01a\x81\x02bc"


async def test_protocol_ping_is_answered_and_fragments_are_joined(gw: Gateway) -> None:
    """A WebSocket-level ping gets its pong, and an auth frame sent in fragments is understood."""
    async with connect(gw.url) as ws:
        pong = await ws.ping()
        await asyncio.wait_for(pong, 5)
        auth = orjson.dumps({"type": "auth", "token": gw.token("hank")}).decode()
        await ws.send([auth[:10], auth[10:30], auth[30:]])
        assert (await _next(ws))["type"] == "ready"


async def test_client_close_is_answered_with_the_same_handshake(gw: Gateway) -> None:
    """A client that closes gets a clean close (1000) and the server drops the stream."""
    async with connect(gw.url) as ws:
        await _auth(ws, gw.token("ivy"))
        await ws.close()
    assert ws.close_code == 1000
    for _ in range(50):
        if not gw.gateway.connections:
            break
        await asyncio.sleep(0.02)
    assert not gw.gateway.connections


async def test_a_frame_over_the_size_limit_closes_with_1009(gw: Gateway) -> None:
    """A client frame larger than max_frame_bytes is refused with 1009."""
    async with connect(gw.url, max_size=None) as ws:
        await ws.send("x" * (gw.runtime.settings.max_frame_bytes + 1))
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
    assert ws.close_code == 1009


async def _raw_exchange(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    try:
        return await asyncio.wait_for(reader.read(4096), 5)
    finally:
        writer.close()


_UPGRADE = (
    b"GET /v1/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
)


@pytest.mark.parametrize(
    ("request_head", "status"),
    [
        (_UPGRADE + b"Sec-WebSocket-Version: 13\r\n\r\n", b"101"),
        (_UPGRADE + b"Sec-WebSocket-Version: 8\r\n\r\n", b"426"),
        (b"GET /v1/ws HTTP/1.1\r\nHost: x\r\n\r\n", b"400"),
        (b"POST /v1/ws HTTP/1.1\r\nHost: x\r\n\r\n", b"400"),
    ],
)
async def test_handshakes_are_checked(gw: Gateway, request_head: bytes, status: bytes) -> None:
    """Only a GET with a valid key and version 13 upgrades; the RFC 6455 sample key gets its known accept."""
    answer = await _raw_exchange(gw.gateway.port, request_head)
    assert answer.split(b" ")[1] == status
    if status == b"101":
        assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in answer


async def test_unmasked_client_frame_is_a_protocol_error(gw: Gateway) -> None:
    """Clients must mask their frames: an unmasked one is answered with close 1002."""
    answer = await _raw_exchange(
        gw.gateway.port, _UPGRADE + b"Sec-WebSocket-Version: 13\r\n\r\n" + b"\x81\x02hi"
    )
    close = answer[answer.index(b"\r\n\r\n") + 4 :]
    assert close[0] == 0x88
    assert int.from_bytes(close[2:4], "big") == 1002


def test_frame_reader_joins_fragments_and_enforces_limits() -> None:
    """The sans-I/O reader: fragments become one message; bad frames raise with the right close code."""
    from websockets.utils import apply_mask

    from tidings.gateway.rfc6455 import FrameReader, WireError

    def masked(first: int, payload: bytes) -> bytes:
        mask = b"\x01\x02\x03\x04"
        return bytes((first, 0x80 | len(payload))) + mask + apply_mask(payload, mask)

    reader = FrameReader(max_size=16)
    data = masked(0x01, b"ab") + masked(0x89, b"p") + masked(0x80, b"cd")
    assert reader.feed(data[:3]) == []
    assert reader.feed(data[3:]) == [(0x9, b"p"), (0x1, b"abcd")]
    with pytest.raises(WireError) as too_big:
        FrameReader(max_size=4).feed(masked(0x81, b"abcdef"))
    assert too_big.value.code == 1009
    with pytest.raises(WireError) as stray:
        FrameReader(max_size=16).feed(masked(0x80, b"x"))
    assert stray.value.code == 1002
