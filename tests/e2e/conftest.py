"""Fixtures that start real ``tidings serve`` processes on free ports and temporary data directories."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import pytest

from .harness import ServerProcess

StartServer = Callable[..., Awaitable[ServerProcess]]


def _teardown(server: ServerProcess) -> None:
    """Kills what is still running and prints the log tail, which pytest shows when a test failed."""
    if server.running:
        asyncio.run(server.kill())
    print(f"--- {server.data_dir.name}: server log tail (exit {server.returncode}) ---\n{server.log_tail()}")


@pytest.fixture
async def start_server(tmp_path: Path) -> AsyncIterator[StartServer]:
    """Starts servers for one test (``env`` gives ``TIDINGS_*`` settings); all are gone after the test."""
    started: list[ServerProcess] = []

    async def start(env: Mapping[str, object] | None = None, name: str = "data") -> ServerProcess:
        server = ServerProcess(tmp_path / name, env=env)
        started.append(server)
        await server.start()
        return server

    yield start
    for server in started:
        if server.running:
            await server.kill()
        _teardown(server)


@pytest.fixture
async def server(start_server: StartServer) -> ServerProcess:
    """One server with default settings, for one test."""
    return await start_server()


@contextmanager
def module_server(
    tmp_path_factory: pytest.TempPathFactory, env: Mapping[str, object] | None = None
) -> Iterator[ServerProcess]:
    """One server shared by a module's tests (for tests that only read or use their own users).

    It is started from a synchronous fixture on a throwaway loop: ``ServerProcess`` holds no loop-bound state.
    """
    server = ServerProcess(tmp_path_factory.mktemp("e2e") / "data", env=env)
    try:
        asyncio.run(server.start())
        yield server
    finally:
        _teardown(server)
