"""The body limit over a real socket: a chunked upload (no Content-Length) is cut off at the limit by
uvicorn and the middleware, before any route runs."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import orjson
import pytest

from tidings.api.app import create_app
from uvicorn_server import serving_app

from .conftest import OpenApi
from .support import Api, Tenant, event


@contextlib.asynccontextmanager
async def serving(api: Api) -> AsyncIterator[int]:
    """Runs the API under uvicorn on a free 127.0.0.1 port for the duration of the block."""
    async with serving_app(create_app(api.runtime), start_within=2.0, log_level="warning") as port:
        yield port


async def chunked_post(port: int, api_key: str, chunks: list[bytes]) -> tuple[int, bytes]:
    """Sends a chunked POST /v1/events and returns the status and body of the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (
        "POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {api_key}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    writer.write(head.encode())
    for chunk in chunks:
        writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    writer.write(b"0\r\n\r\n")
    with contextlib.suppress(ConnectionError):
        await writer.drain()
    response = await asyncio.wait_for(reader.read(), 10)  # until the server closes
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()
    status_line, _, rest = response.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


@pytest.fixture
async def small_limit(open_api: OpenApi) -> tuple[Api, Tenant]:
    api = await open_api(max_body_bytes=4096)
    return api, await api.tenant()


async def test_a_chunked_upload_over_the_limit_is_refused_before_the_route(
    small_limit: tuple[Api, Tenant],
) -> None:
    """A valid event padded with whitespace past the limit answers 413 and is not accepted."""
    api, acme = small_limit
    padded = [orjson.dumps(event())] + [b" " * 1024] * 8
    async with serving(api) as port:
        status, body = await chunked_post(port, acme.api_key, padded)
        assert status == 413
        assert orjson.loads(body)["error"]["code"] == "body_too_large"
        assert await api.lag() == 0
        ok_status, _ = await chunked_post(port, acme.api_key, [orjson.dumps(event()), b" " * 1024])
        assert ok_status == 202
    assert await api.lag() == 1
