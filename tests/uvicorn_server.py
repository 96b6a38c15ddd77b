"""An ASGI app under uvicorn on a free 127.0.0.1 port, in the test's own event loop, for the block."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import uvicorn


@contextlib.asynccontextmanager
async def serving_app(app: Any, *, start_within: float = 5.0, **config: Any) -> AsyncIterator[int]:
    """Serves ``app`` (uvicorn ``config`` options: ``log_level``, ``ws``...) and yields its port; start-up is
    waited for at most ``start_within`` seconds (the loop is busy, not timing anything)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, lifespan="off", access_log=False, **config))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        for _ in range(round(start_within / 0.01)):  # bounded
            if server.started:
                break
            await asyncio.sleep(0.01)
        assert server.started
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()
