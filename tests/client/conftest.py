"""One real ``tidings serve`` for these tests (each test makes its own app, so tests share no users), and a
cuttable proxy in front of it for the tests that break the network."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from .proxy import CutProxy
from .server import AppKeys, TidingsServer
from .support import Sleeps


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TidingsServer]:
    running = TidingsServer(tmp_path_factory.mktemp("client") / "data").start()
    try:
        yield running
    finally:
        running.stop()
        print(f"--- server log tail ---\n{running.log_tail()}")


@pytest.fixture
def tenant(server: TidingsServer) -> AppKeys:
    """A fresh app on the module's server."""
    return server.create_app()


@pytest.fixture
async def proxy(server: TidingsServer) -> AsyncIterator[CutProxy]:
    opened = await CutProxy(server.port).start()
    yield opened
    await opened.close()


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()
