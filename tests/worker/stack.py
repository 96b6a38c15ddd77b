"""A fan-out stack on real embedded backends (a SQLite file with its event log, the in-process bus) and a fake
clock, driven one batch at a time: no worker loop, no sleeps.

A support module, not a conftest: ``tests/worker/conftest.py`` and ``tests/api/conftest.py`` both re-export its
``open_stack`` and ``stack`` fixtures, so the planner tests and the social route tests share one stack."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tidings.api.app import create_app
from tidings.auth import create_app_record, mint_user_token
from tidings.backends.memory import MemoryBus
from tidings.backends.sql.sqlite import SqliteStore
from tidings.core.models import App, Event, LiveMessage
from tidings.gateway.hub import Hub
from tidings.ports import Append, Delivery
from tidings.runtime import Runtime
from tidings.settings import Settings
from tidings.testing import FakeClock
from tidings.worker import FanoutWorker


@dataclass
class Stack:
    runtime: Runtime
    clock: FakeClock
    worker: FanoutWorker
    handled: list[Delivery] = field(default_factory=list)  # every delivery processed, in order
    live: list[LiveMessage] = field(default_factory=list)  # what the worker published for "alice"
    client: httpx.AsyncClient | None = None
    app: App | None = None
    api_key: str = ""

    async def open_api(self, name: str = "app1") -> httpx.AsyncClient:
        """The HTTP API over this stack, with the app ``name`` created; ``producer``/``user`` sign requests."""
        record = await create_app_record(self.store, name, [], self.clock.time())
        self.app, self.api_key = await self.store.apps.get(name), record["api_key"]
        transport = httpx.ASGITransport(app=create_app(self.runtime), raise_app_exceptions=False)
        self.client = httpx.AsyncClient(transport=transport, base_url="http://tidings.test")
        return self.client

    @property
    def producer(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def user(self, user: str) -> dict[str, str]:
        assert self.app is not None
        return {"Authorization": f"Bearer {mint_user_token(self.app, user, 3600, self.clock.time())}"}

    @property
    def store(self) -> Any:
        return self.runtime.store

    async def send(self, *events: Event) -> None:
        await self.runtime.log.append([Append(e) for e in events])

    async def drain(self, max_batches: int = 10_000) -> int:
        """Processes the log until it is empty; returns the number of batches."""
        for batch in range(max_batches):
            deliveries = await self.runtime.log.read(self.runtime.settings.worker_batch, timeout=0)
            if not deliveries:
                return batch
            self.handled.extend(deliveries)
            await self.worker.process(deliveries)
        raise AssertionError("the log never emptied")

    async def inbox(self, user: str, app: str = "app1") -> list[dict[str, Any]]:
        items = await self.store.inbox.page(app, user, after=0, before=None, limit=100, unread_only=False)
        return [item.to_json() for item in items]


OpenStack = Callable[..., Awaitable[Stack]]


@pytest.fixture
async def open_stack(tmp_path: Path) -> AsyncIterator[OpenStack]:
    opened: list[Stack] = []

    async def open_(**overrides: Any) -> Stack:
        clock = FakeClock()
        settings = Settings(data=str(tmp_path / str(len(opened))), sqlite_synchronous="OFF").replace(
            **overrides
        )
        store = await SqliteStore.open(settings.store_url, settings, clock)
        bus = MemoryBus()
        runtime = Runtime(settings, store, store.embedded_log(settings), bus, clock)
        runtime.hub = Hub(bus)
        stack = Stack(runtime, clock, FanoutWorker(runtime))
        await runtime.hub.attach("app1", "alice", stack.live.append)  # the bus has one subscriber: the hub
        opened.append(stack)
        return stack

    yield open_
    for stack in opened:
        if stack.client is not None:
            await stack.client.aclose()
        await stack.runtime.log.close()
        await stack.runtime.bus.close()
        await stack.runtime.store.close()


@pytest.fixture
async def stack(open_stack: OpenStack) -> Stack:
    return await open_stack()


def event(
    event_id: str,
    *,
    recipients: tuple[str, ...] | None = ("alice",),
    topic: str | None = None,
    type_: str = "post.liked",
    actor: str = "bob",
    group: str | None = None,
    accepted_at: float = 1_790_000_000.0,
    priority: Any = "normal",
    obj: dict[str, str] | None = None,
) -> Event:
    return Event(
        id=event_id,
        app="app1",
        type=type_,
        accepted_at=accepted_at,
        recipients=recipients if topic is None else None,
        topic=topic,
        actor={"id": actor, "name": actor.title()},
        object=obj or {"id": "post:42"},
        data={"text": "hi"},
        group_key=group,
        priority=priority,
    )
