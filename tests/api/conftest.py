"""An API over real backends (a SQLite file in tmp_path, the embedded log, the in-process bus), driven
through httpx's ASGI transport, with a fake clock for rates and times."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tidings.api.app import create_app
from tidings.backends import open_bus, open_log, open_store
from tidings.runtime import Runtime
from tidings.settings import Settings
from tidings.testing import FakeClock
from worker.stack import open_stack as open_stack  # the fan-out stack, shared with tests/worker
from worker.stack import stack as stack

from .support import ADMIN_TOKEN, Api, Tenant

OpenApi = Callable[..., Awaitable[Api]]


@pytest.fixture
async def open_api(tmp_path: Path) -> AsyncIterator[OpenApi]:
    """Opens an API with settings overrides; everything is closed after the test."""
    opened: list[Api] = []

    async def open_(**overrides: Any) -> Api:
        clock = FakeClock()
        settings = Settings(data=str(tmp_path), admin_token=ADMIN_TOKEN).replace(**overrides)
        store = await open_store(f"sqlite:///{tmp_path}/t{len(opened)}.db", settings, clock)
        log = await open_log("memory://", settings, store)
        bus = await open_bus("memory://", settings)
        runtime = Runtime(settings, store, log, bus, clock)
        transport = httpx.ASGITransport(app=create_app(runtime), raise_app_exceptions=False)
        client = httpx.AsyncClient(transport=transport, base_url="http://tidings.test")
        api = Api(runtime, client, clock)
        opened.append(api)
        return api

    yield open_
    for api in opened:
        await api.client.aclose()
        await api.runtime.log.close()
        await api.runtime.bus.close()
        await api.runtime.store.close()


@pytest.fixture
async def api(open_api: OpenApi) -> Api:
    return await open_api()


@pytest.fixture
async def acme(api: Api) -> Tenant:
    return await api.tenant("acme")
