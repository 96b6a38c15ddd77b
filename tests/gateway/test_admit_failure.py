"""A store that fails while a WebSocket is being admitted (the app looked up for its token) must end that
connection with an error frame and a close code the client resumes on, not leave it open and silent.

Found by the reconnect storm (``tests/chaos/test_storm.py``, 600 clients): a cold gateway's app lookups queued
for the store's pool, some timed out, and those WebSocket connections stayed open with no ready and no close.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tidings.api import errors
from tidings.backends.memory import MemoryBus
from tidings.backends.sql.sqlite import SqliteStore
from tidings.errors import UnavailableError
from tidings.gateway.hub import Hub
from tidings.gateway.listener import FastGateway
from tidings.runtime import Runtime
from tidings.settings import Settings

TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJhIiwic3ViIjoidSJ9.c2ln"  # issuer "a": its lookup is what fails


class _NoLog:
    async def close(self) -> None:
        return None


async def _runtime(tmp_path: Path) -> Runtime:
    s = Settings(data=str(tmp_path), sqlite_synchronous="NORMAL", auth_timeout=30.0)
    store = await SqliteStore.open(s.store_url, s)
    bus = MemoryBus()
    runtime = Runtime(settings=s, store=store, log=_NoLog(), bus=bus)  # type: ignore[arg-type]
    runtime.hub = Hub(bus)
    return runtime


async def test_a_store_failure_during_auth_closes_the_websocket_to_be_resumed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = await _runtime(tmp_path)

    async def unavailable(name: str) -> None:
        raise UnavailableError("QueuePool limit reached")

    monkeypatch.setattr(runtime.store.apps, "get", unavailable)
    gateway = FastGateway(runtime, "127.0.0.1", 0)
    port = await gateway.start()
    try:
        async with connect(f"ws://127.0.0.1:{port}/v1/ws", proxy=None, open_timeout=5) as ws:
            await ws.send(json.dumps({"type": "auth", "token": TOKEN, "after": 0}))
            async with asyncio.timeout(5.0):  # the auth deadline is 30 s: an answer, not a timeout
                frame = json.loads(await ws.recv())
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.recv()
        assert (frame["type"], frame["code"]) == ("error", "unavailable"), frame
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == errors.close_code_for(UnavailableError())  # 1012: back off, resume
    finally:
        await gateway.close()
        await runtime.store.close()
