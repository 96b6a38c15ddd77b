"""Read-sync over real sockets: a mark made over HTTP reaches the same user's WebSocket and SSE connections."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
from websockets.asyncio.client import ClientConnection, connect

from tidings.service import build_app
from uvicorn_server import serving_app
from worker.stack import Stack, event


@contextlib.asynccontextmanager
async def serving(stack: Stack) -> AsyncIterator[int]:
    """API and gateway under uvicorn on a free 127.0.0.1 port for the duration of the block."""
    app = build_app(stack.runtime, ("api", "gateway"))
    async with serving_app(app, log_level="warning", ws="websockets-sansio") as port:
        yield port


async def ws_frame(ws: ClientConnection, kind: str) -> dict[str, Any]:
    for _ in range(20):  # bounded: skips notifications and pings on the way
        frame: dict[str, Any] = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
        if frame["type"] == kind:
            return frame
    raise AssertionError(f"no {kind} frame")


async def sse_event(lines: AsyncIterator[str], kind: str) -> dict[str, Any]:
    current = None
    for _ in range(100):  # bounded: a handful of events at most
        line = await asyncio.wait_for(anext(lines), 10)
        if line.startswith("event: "):
            current = line.removeprefix("event: ")
        elif line.startswith("data: ") and current == kind:
            data: dict[str, Any] = orjson.loads(line.removeprefix("data: "))
            return data
    raise AssertionError(f"no {kind} event")


async def test_a_read_reaches_the_users_websocket_and_sse_connections(stack: Stack) -> None:
    """Alice reads on her phone: her browser tab (WebSocket) and her laptop (SSE) hear it with the new counts."""
    client = await stack.open_api()
    await stack.send(event("E1"), event("E2"))
    await stack.drain()
    token = stack.user("alice")["Authorization"].removeprefix("Bearer ")
    async with serving(stack) as port, connect(f"ws://127.0.0.1:{port}/v1/ws") as ws:
        await ws.send(orjson.dumps({"type": "auth", "token": token, "after": 0}).decode())
        assert (await ws_frame(ws, "ready"))["last_seq"] == 2
        base = f"http://127.0.0.1:{port}"
        async with (
            httpx.AsyncClient(base_url=base, timeout=10) as http,
            http.stream("GET", "/v1/stream", headers=stack.user("alice")) as sse,
        ):
            lines = sse.aiter_lines()
            assert (await sse_event(lines, "ready"))["last_seq"] == 2
            marked = await client.post(
                "/v1/me/notifications/read", json={"up_to": 1}, headers=stack.user("alice")
            )
            assert marked.json() == {"updated": 1}
            expected = {"type": "read", "field": "read", "up_to": 1, "unread": 1, "unseen": 2}
            assert await ws_frame(ws, "read") == expected
            assert await sse_event(lines, "read") == expected
