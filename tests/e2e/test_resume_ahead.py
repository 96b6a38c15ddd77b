"""A resume cursor ahead of the server is never silent (contract v1.1), over a real ``tidings serve``.

``after`` / ``Last-Event-ID`` above the user's ``last_seq`` (the server lost data, or the client kept a cursor
of another store): ``ready`` then ``reset`` with the server's ``last_seq`` and ``epoch``, and the stream goes on
from ``last_seq``. A cursor at ``last_seq`` gets no reset. The epoch names the store's life: two fresh data
directories differ, a restart on the same data keeps it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from httpx_sse import ServerSentEvent, aconnect_sse

from .clients import auth_frame, open_ws, stream_ticket, ws_ready
from .conftest import StartServer, module_server
from .harness import AppCredentials, ServerProcess, http_client
from .ledger import fetch_inbox
from .producer import Producer

pytestmark = pytest.mark.e2e

WITHIN = 10.0


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, AppCredentials]]:
    with module_server(tmp_path_factory) as server:
        yield server, asyncio.run(server.create_app("resume"))


async def _notify(server: ServerProcess, creds: AppCredentials, user: str, n: int) -> None:
    """``n`` more notifications for ``user``, returned once all of them are in the inbox."""
    before = len(await fetch_inbox(server.base_url, creds.token(user)))
    async with Producer(f"p-{user}-{before}", server.base_url, creds.api_key) as producer:
        for _ in range(n):
            await producer.send([user])
    for _ in range(int(WITHIN / 0.05)):
        if len(await fetch_inbox(server.base_url, creds.token(user))) >= before + n:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{n} notifications for {user} not stored within {WITHIN} s")


async def _ws_frames(ws: Any, count: int) -> list[dict[str, Any]]:
    async with asyncio.timeout(WITHIN):
        return [json.loads(await ws.recv()) for _ in range(count)]


async def _ws_opening_then_next(
    server: ServerProcess, creds: AppCredentials, user: str, after: int, *, expect: int
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The first ``expect`` frames after auth with ``after``, then the frame a new notification brings."""
    async with open_ws(server.ws_url) as ws:
        await ws.send(auth_frame(creds.token(user), after))
        opening = await _ws_frames(ws, expect)
        await _notify(server, creds, user, 1)
        [following] = await _ws_frames(ws, 1)
    return opening, following


@pytest.mark.parametrize("ws_server", ["default", "uvicorn"])
async def test_ws_cursor_ahead_gets_ready_then_reset_then_what_comes_next(
    start_server: StartServer, ws_server: str
) -> None:
    env = {"ws_server": "uvicorn"} if ws_server == "uvicorn" else {}  # default: fastws on the one port
    server = await start_server(env)
    creds = await server.create_app("resume")
    await _notify(server, creds, "alice", 3)
    [ready, reset], following = await _ws_opening_then_next(server, creds, "alice", 99, expect=2)
    assert ready == {"type": "ready", "user": "alice", "last_seq": 3, "epoch": ready["epoch"]}
    assert reset == {"type": "reset", "last_seq": 3, "epoch": ready["epoch"]}
    assert following["type"] == "notification", following
    assert following["notification"]["seq"] == 4, following


async def test_ws_cursor_at_last_seq_gets_no_reset(served: tuple[ServerProcess, AppCredentials]) -> None:
    server, creds = served
    await _notify(server, creds, "bob", 3)
    [ready], following = await _ws_opening_then_next(server, creds, "bob", 3, expect=1)
    assert ready["type"] == "ready", ready
    assert ready["last_seq"] == 3, ready
    assert following["type"] == "notification", following  # not a reset
    assert following["notification"]["seq"] == 4, following


@pytest.mark.parametrize("resume", ["header", "query"])
async def test_sse_cursor_ahead_gets_ready_then_reset_then_what_comes_next(
    served: tuple[ServerProcess, AppCredentials], resume: str
) -> None:
    server, creds = served
    user = f"carol-{resume}"
    await _notify(server, creds, user, 3)
    headers, params = ({"Last-Event-ID": "99"}, {}) if resume == "header" else ({}, {"after": "99"})
    async with (
        http_client(server.base_url, token=creds.token(user), timeout=30.0) as http,
        aconnect_sse(http, "GET", "/v1/stream", headers=headers, params=params) as source,
    ):
        assert source.response.status_code == 200
        events = _events(source.aiter_sse())
        ready, reset = await _next(events), await _next(events)
        await _notify(server, creds, user, 1)
        following = await _next(events)
    assert ready.event == "ready", ready
    assert json.loads(ready.data) == {"user": user, "last_seq": 3, "epoch": json.loads(ready.data)["epoch"]}
    assert reset.event == "reset", reset
    assert json.loads(reset.data) == {
        "type": "reset",
        "last_seq": 3,
        "epoch": json.loads(ready.data)["epoch"],
    }
    assert reset.id == "3", reset  # the browser's Last-Event-ID moves back too
    assert following.event == "notification", following
    assert (following.id, json.loads(following.data)["seq"]) == ("4", 4), following


async def test_sse_cursor_at_last_seq_gets_no_reset(served: tuple[ServerProcess, AppCredentials]) -> None:
    server, creds = served
    await _notify(server, creds, "dave", 3)
    async with (
        http_client(server.base_url, token=creds.token("dave"), timeout=30.0) as http,
        aconnect_sse(http, "GET", "/v1/stream", headers={"Last-Event-ID": "3"}) as source,
    ):
        events = _events(source.aiter_sse())
        ready = await _next(events)
        await _notify(server, creds, "dave", 1)
        following = await _next(events)
    assert (ready.event, json.loads(ready.data)["last_seq"]) == ("ready", 3), ready
    assert following.event == "notification", following  # not a reset
    assert following.id == "4", following


async def test_the_epoch_differs_between_fresh_stores_and_survives_a_restart(
    start_server: StartServer,
) -> None:
    one = await start_server(name="one")
    two = await start_server(name="two")
    creds_one, creds_two = await one.create_app("same"), await two.create_app("same")
    first = await ws_ready(one.ws_url, creds_one.token("alice"))
    other = await ws_ready(two.ws_url, creds_two.token("alice"))
    assert isinstance(first["epoch"], str), first
    assert first["epoch"], first
    assert first["epoch"] != other["epoch"], (first, other)
    await one.stop()
    await one.restart()
    again = await ws_ready(one.ws_url, creds_one.token("alice"))
    assert again["epoch"] == first["epoch"], (first, again)
    async with (
        http_client(one.base_url, token=creds_one.token("alice"), timeout=30.0) as http,
        aconnect_sse(http, "GET", "/v1/stream") as source,
    ):
        sse_ready = await _next(_events(source.aiter_sse()))
    assert json.loads(sse_ready.data)["epoch"] == first["epoch"], sse_ready
    ticket = (await stream_ticket(one.base_url, creds_one.token("alice"))).json()["ticket"]
    async with (
        http_client(one.base_url, timeout=30.0) as http,
        aconnect_sse(http, "GET", "/v1/stream", params={"ticket": ticket}) as source,
    ):
        ticket_ready = await _next(_events(source.aiter_sse()))
    assert json.loads(ticket_ready.data)["epoch"] == first["epoch"], (
        ticket_ready
    )  # the app read from the store


async def _events(events: AsyncIterator[ServerSentEvent]) -> AsyncIterator[ServerSentEvent]:
    """Named events only (a retry-only block has no data)."""
    async for event in events:
        if event.data:
            yield event


async def _next(events: AsyncIterator[ServerSentEvent]) -> ServerSentEvent:
    async with asyncio.timeout(WITHIN):
        return await anext(events)
