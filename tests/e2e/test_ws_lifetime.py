"""Token lifetime and client floods over real sockets, on both WebSocket servers (uvicorn's and ``fastws``) and
SSE: a token's expiry is told and the connection closed after the grace unless a fresh token comes in-band; a
client that floods is closed 1008 while another client on the same gateway still gets every notification."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import websockets
from httpx_sse import aconnect_sse

from .clients import auth_frame, open_ws
from .conftest import module_server
from .harness import AppCredentials, ServerProcess, free_port, http_client

pytestmark = pytest.mark.e2e

GRACE = 1.0
SETTINGS = {"token_grace": GRACE, "ws_client_rate": 5, "ws_client_burst": 10}


@pytest.fixture(scope="module")
def server_and_app(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ServerProcess, AppCredentials]]:
    """One server with both WebSocket servers: uvicorn's on the API port, ``fastws`` on its own port."""
    env: dict[str, object] = {**SETTINGS, "ws_server": "fastws", "ws_port": free_port()}
    with module_server(tmp_path_factory, env) as server:
        yield server, asyncio.run(server.create_app("lifetime"))


@dataclass(frozen=True)
class Served:
    server: ServerProcess
    creds: AppCredentials
    ws_url: str
    shell: str


@pytest.fixture(params=["uvicorn", "fastws"])
def served(request: pytest.FixtureRequest, server_and_app: tuple[ServerProcess, AppCredentials]) -> Served:
    server, creds = server_and_app
    uvicorn_url = server.base_url.replace("http", "ws", 1) + "/v1/ws"
    return Served(server, creds, server.ws_url if request.param == "fastws" else uvicorn_url, request.param)


# Serial: a wall-clock bound. The token expires 1-2 s after it is minted (``exp`` is whole seconds), so
# the connection must be ready within 1 s of minting, and a fresh token must reach the server within the
# 1 s grace after ``token_expired``: a stall of the test's or the server's loop, which the other workers'
# CPU use causes on two cores, would close the connection or refuse the token.
WALL_CLOCK = pytest.mark.serial


async def _send(server: ServerProcess, creds: AppCredentials, user: str, n: int) -> None:
    async with http_client(server.base_url, token=creds.api_key) as http:
        for i in range(n):
            body = {"type": "t", "actor": {"id": "bob"}, "recipients": [user], "data": {"i": i}}
            assert (await http.post("/v1/events", json=body)).status_code == 202


async def _recv(ws: Any, within: float = 10.0) -> dict[str, Any]:
    """The next frame that is not a heartbeat."""
    async with asyncio.timeout(within):
        while True:
            frame: dict[str, Any] = json.loads(await ws.recv())
            if frame["type"] != "ping":
                return frame


async def test_a_flooder_is_closed_1008_and_a_reader_on_the_same_gateway_gets_everything(
    served: Served,
) -> None:
    server, creds = served.server, served.creds
    async with open_ws(served.ws_url) as reader, open_ws(served.ws_url) as flooder:
        await reader.send(auth_frame(creds.token(f"reader-{served.shell}")))
        assert (await _recv(reader))["type"] == "ready"
        await flooder.send(auth_frame(creds.token(f"flooder-{served.shell}")))
        assert (await _recv(flooder))["type"] == "ready"

        async def flood() -> None:
            for _ in range(2000):  # bounded; the server closes it long before
                await flooder.send('{"type":"ping"}')

        flooding = asyncio.create_task(flood())
        await _send(server, creds, f"reader-{served.shell}", 20)
        seqs: list[int] = []
        while len(seqs) < 20:
            frame = await _recv(reader)
            if frame["type"] == "notification":
                seqs.append(frame["notification"]["seq"])
        assert seqs == list(range(1, 21))
        flood_frames: list[dict[str, Any]] = []
        with contextlib.suppress(websockets.ConnectionClosed):
            async with asyncio.timeout(10):
                async for raw in flooder:
                    flood_frames.append(json.loads(raw))
        flooding.cancel()
        assert flooder.close_code == 1008
        assert flood_frames[-1]["type"] == "error"
        assert flood_frames[-1]["code"] == "rate_limited"
        await reader.send('{"type":"ping"}')
        assert (await _recv(reader))["type"] == "pong"  # the reader was not touched


@WALL_CLOCK
async def test_an_expired_token_is_told_then_closed_1008(
    served: Served,
) -> None:
    creds = served.creds
    async with open_ws(served.ws_url) as ws:
        await ws.send(auth_frame(creds.token(f"lapsed-{served.shell}", ttl=2)))
        assert (await _recv(ws))["type"] == "ready"
        assert await _recv(ws) == {"type": "token_expired", "grace": GRACE}
        assert await _recv(ws) == {
            "type": "error",
            "code": "token_expired",
            "message": "the token has expired: get a fresh one",
        }
        with pytest.raises(websockets.ConnectionClosed):
            await _recv(ws)
        assert ws.close_code == 1008


@WALL_CLOCK
async def test_a_fresh_token_in_band_keeps_the_connection(
    served: Served,
) -> None:
    server, creds = served.server, served.creds
    async with open_ws(served.ws_url) as ws:
        await ws.send(auth_frame(creds.token(f"renewed-{served.shell}", ttl=2)))
        assert (await _recv(ws))["type"] == "ready"
        assert (await _recv(ws))["type"] == "token_expired"
        await ws.send(json.dumps({"type": "auth", "token": creds.token(f"renewed-{served.shell}", ttl=600)}))
        reauthed = await _recv(ws)
        assert reauthed["type"] == "reauthed"
        assert isinstance(reauthed["expires_at"], float)
        await asyncio.sleep(GRACE + 0.5)  # past the old deadline
        await _send(server, creds, f"renewed-{served.shell}", 1)
        frame = await _recv(ws)
        assert frame["type"] == "notification"
        assert frame["notification"]["seq"] == 1


@WALL_CLOCK
async def test_an_sse_stream_ends_at_expiry_and_a_fresh_token_resumes_it(
    served: Served,
) -> None:
    """SSE cannot re-auth in-band: told, ended after the grace; the reconnect with Last-Event-ID loses nothing."""
    server, creds = served.server, served.creds
    if served.shell == "fastws":
        pytest.skip("SSE is served by the API listener either way")
    events: list[tuple[str, str]] = []
    async with http_client(server.base_url, token=creds.token(f"sse-user-{served.shell}", ttl=2)) as http:
        await _send(server, creds, f"sse-user-{served.shell}", 1)
        async with aconnect_sse(http, "GET", "/v1/stream", params={"after": "0"}) as source:
            async with asyncio.timeout(10):
                async for event in source.aiter_sse():
                    if event.data:  # not the retry hint nor a heartbeat comment
                        events.append((event.event, event.data))
    kinds = [kind for kind, _ in events]
    assert kinds == ["ready", "notification", "token_expired", "error"], events
    assert json.loads(events[2][1]) == {"type": "token_expired", "grace": GRACE}
    assert json.loads(events[3][1]) == {"code": "token_expired"}
    await _send(server, creds, f"sse-user-{served.shell}", 1)
    async with http_client(server.base_url, token=creds.token(f"sse-user-{served.shell}")) as http:
        headers = {"Last-Event-ID": "1"}
        async with aconnect_sse(http, "GET", "/v1/stream", headers=headers) as source:
            async for event in source.aiter_sse():
                if event.event == "notification":
                    assert json.loads(event.data)["seq"] == 2
                    break


async def test_a_flood_of_protocol_pings_is_closed_on_the_fast_listener(served: Served) -> None:
    """WebSocket ping control frames count against the same budget on ``fastws`` (uvicorn's websockets layer
    answers them itself, below the gateway)."""
    if served.shell != "fastws":
        pytest.skip("uvicorn's WebSocket layer answers control pings before the gateway sees them")
    async with open_ws(served.ws_url) as ws:
        await ws.send(auth_frame(served.creds.token("pinger")))
        assert (await _recv(ws))["type"] == "ready"
        with contextlib.suppress(websockets.ConnectionClosed):
            for _ in range(200):  # bounded: far over the burst
                await ws.ping()
        frames: list[dict[str, Any]] = []
        with contextlib.suppress(websockets.ConnectionClosed):
            async with asyncio.timeout(10):
                async for raw in ws:
                    frames.append(json.loads(raw))
    assert ws.close_code == 1008
    assert frames[-1]["code"] == "rate_limited"
