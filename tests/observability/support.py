"""An in-process Tidings for the observability tests: a real SQLite file, the embedded log, the in-process bus,
the real API app (with the admin routes), the fan-out worker run on demand, and live streams driven directly
(the socket shells only write the bytes a ``LiveStream`` hands them)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

from tidings.auth import create_app_record, mint_user_token
from tidings.backends import open_bus, open_log, open_store
from tidings.core import frames
from tidings.gateway.hub import Hub
from tidings.gateway.stream import EndReason, LiveStream
from tidings.runtime import Runtime
from tidings.service import build_app
from tidings.settings import Settings
from tidings.worker import FanoutWorker

ADMIN_TOKEN = "observability-admin-token"


@dataclass
class Tenant:
    name: str
    api_key: str
    jwt_secret: str

    @property
    def producer(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}


@dataclass
class Client:
    """One live connection, as a transport shell drives it: each ``frames()`` call is one socket write of
    the previous batch done, then the next batch."""

    stream: LiveStream
    _batches: AsyncIterator[list[bytes]] | None = None

    async def frames(self, within: float = 5.0) -> list[dict[str, Any]]:
        if self._batches is None:
            self._batches = self.stream.batches()
        batch = await asyncio.wait_for(anext(self._batches), within)
        return [orjson.loads(frame) for frame in batch if frame.startswith(b"{")]

    async def notifications(self, count: int, within: float = 5.0) -> list[dict[str, Any]]:
        """The next ``count`` notifications (heartbeats skipped), then their write is completed."""
        got: list[dict[str, Any]] = []
        while len(got) < count:  # bounded by ``within`` per batch
            got += [f["notification"] for f in await self.frames(within) if f["type"] == "notification"]
        await self.flush()
        return got

    async def flush(self) -> None:
        """Completes the write of the last batch (its observations run when the shell asks for more)."""
        self.stream.push_control(frames.encode_pong())
        await self.frames()

    async def close(self) -> None:
        self.stream.end(EndReason.CLIENT_GONE)
        if self._batches is not None:
            with contextlib.suppress(StopAsyncIteration):
                await anext(self._batches)
        await self.stream.close()


@dataclass
class Stack:
    runtime: Runtime
    http: httpx.AsyncClient
    worker: FanoutWorker
    clients: list[Client] = field(default_factory=list)

    async def tenant(self, name: str) -> Tenant:
        record = await create_app_record(self.runtime.store, name, [], self.runtime.clock.time())
        return Tenant(name, record["api_key"], record["jwt_secret"])

    async def user_token(self, tenant: Tenant, user: str) -> str:
        app = await self.runtime.store.apps.get(tenant.name)
        assert app is not None
        return mint_user_token(app, user, 3600, self.runtime.clock.time())

    async def fan_out(self, rounds: int = 100) -> int:
        """Runs the worker until the log is drained; returns the events processed."""
        done = 0
        for _ in range(rounds):
            deliveries = await self.runtime.log.read(self.runtime.settings.worker_batch, timeout=0.01)
            if not deliveries:
                return done
            await self.worker.process(deliveries)
            done += len(deliveries)
        raise AssertionError(f"the log was not drained in {rounds} rounds")

    async def connect(self, app: str, user: str, transport: str = "ws", after: int | None = None) -> Client:
        stream = LiveStream(
            self.runtime,
            app,
            user,
            transport=transport,
            encode=lambda _seq, payload: frames.encode_notification(payload),
            heartbeat=frames.encode_ping,
        )
        await stream.open(after)
        client = Client(stream)
        self.clients.append(client)
        return client

    @property
    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@contextlib.asynccontextmanager
async def open_stack(data: Path, **overrides: Any) -> AsyncIterator[Stack]:
    settings = Settings(
        data=str(data),
        admin_token=ADMIN_TOKEN,
        sqlite_synchronous="OFF",  # tests: durability against power loss is not what they check
        rate_per_key=1e9,
        rate_burst=1e9,
        heartbeat_interval=30.0,
    ).replace(**overrides)
    store = await open_store(settings.store_url, settings)
    log = await open_log(settings.broker, settings, store)
    bus = await open_bus(settings.broker, settings)
    runtime = Runtime(settings, store, log, bus)
    runtime.hub = Hub(bus)
    app = build_app(runtime)  # with the admin routes, as every process has them
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    http = httpx.AsyncClient(transport=transport, base_url="http://tidings.test")
    stack = Stack(runtime, http, FanoutWorker(runtime))
    try:
        yield stack
    finally:
        for client in stack.clients:
            await client.close()
        await http.aclose()
        await log.close()
        await bus.close()
        await store.close()
