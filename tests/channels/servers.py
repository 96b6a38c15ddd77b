"""A local HTTP(S) server for the channel tests: a real listener on 127.0.0.1, answering with a handler."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Seen:
    """What the server received: (method, path, headers, body) per request."""

    requests: list[tuple[str, str, dict[str, str], bytes]] = field(default_factory=list)


@asynccontextmanager
async def serve(
    handler: Handler, ssl_context: ssl.SSLContext | None = None, host: str = "127.0.0.1"
) -> AsyncIterator[tuple[str, Seen]]:
    """Run ``handler`` for every path on ``host`` (a free port); yields (base URL, Seen)."""
    seen = Seen()

    async def record(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        seen.requests.append((request.method, request.path_qs, dict(request.headers), body))
        return await handler(request)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, 0, ssl_context=ssl_context)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    scheme = "https" if ssl_context else "http"
    try:
        netloc = f"[{host}]" if ":" in host else host
        yield f"{scheme}://{netloc}:{port}", seen
    finally:
        await runner.cleanup()
