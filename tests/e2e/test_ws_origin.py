"""The own-origin check of an app without allowed origins compares the scheme too, on both WebSocket servers: a
page on ``https://host:port`` may not open a stream on an ``http`` server at ``host:port``; a trusted proxy's
``X-Forwarded-Proto`` (uvicorn's ``FORWARDED_ALLOW_IPS`` rule, 127.0.0.1 by default) says the scheme is https."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from .clients import auth_frame
from .conftest import module_server
from .harness import AppCredentials, ServerProcess

pytestmark = pytest.mark.e2e

POLICY_VIOLATION = 1008


@pytest.fixture(scope="module", params=["fastws", "uvicorn"])
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerProcess, AppCredentials]]:
    """A server with the WebSocket server ``param`` and one app that lists no origins (its own only)."""
    with module_server(tmp_path_factory, {"ws_server": request.param}) as server:
        yield server, asyncio.run(server.create_app("own-origin"))


async def _first_frame(
    server: ServerProcess, creds: AppCredentials, origin: str, forwarded_proto: str | None = None
) -> tuple[dict[str, Any], int | None]:
    headers = {"X-Forwarded-Proto": forwarded_proto} if forwarded_proto else None
    async with connect(
        server.ws_url,
        origin=origin,
        additional_headers=headers,
        proxy=None,
        open_timeout=5,  # type: ignore[arg-type]
    ) as ws:
        await ws.send(auth_frame(creds.token("alice")))
        async with asyncio.timeout(5.0):
            frame = json.loads(await ws.recv())
            if frame.get("type") != "ready":
                with pytest.raises(ConnectionClosed):
                    await ws.recv()
        return frame, ws.close_code


async def test_the_servers_own_origin_is_admitted(served: tuple[ServerProcess, AppCredentials]) -> None:
    server, creds = served
    frame, _ = await _first_frame(server, creds, f"http://127.0.0.1:{server.port}")
    assert frame.get("type") == "ready", frame


async def test_the_same_host_and_port_over_https_is_another_origin(
    served: tuple[ServerProcess, AppCredentials],
) -> None:
    """An http server at host:port is not the origin https://host:port (a different site to a browser)."""
    server, creds = served
    frame, code = await _first_frame(server, creds, f"https://127.0.0.1:{server.port}")
    assert frame.get("code") == "origin_not_allowed", frame
    assert code == POLICY_VIOLATION


async def test_a_trusted_proxys_forwarded_proto_sets_the_scheme(
    served: tuple[ServerProcess, AppCredentials],
) -> None:
    """Behind a TLS proxy on a trusted address the page is https, and so is the server as the browser sees it."""
    server, creds = served
    origin = f"https://127.0.0.1:{server.port}"
    frame, _ = await _first_frame(server, creds, origin, forwarded_proto="https")
    assert frame.get("type") == "ready", frame
    frame, code = await _first_frame(
        server, creds, f"http://127.0.0.1:{server.port}", forwarded_proto="https"
    )
    assert frame.get("code") == "origin_not_allowed", frame
    assert code == POLICY_VIOLATION
