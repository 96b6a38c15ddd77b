"""A client resuming from a range the retention sweep deleted is told, and gets the latest page (contract v1.1,
docs/protocol.md "Retention"), over a real ``tidings serve`` whose sweeper runs (SQLite; PostgreSQL with Redis).

The app keeps 3 notifications per user (``/v1/rules``), the stream's page is 2: alice gets 8 notifications, the
sweep deletes 1..5 (floor 5). A cursor at 1 gets ``ready`` (last_seq 8), ``reset`` with ``reason: expired`` and
``last_seq`` 6 (where the stream goes on), then 7 and 8, then what comes next. A cursor at the floor is not
reset: 6, 7, 8 follow as usual.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator, Iterator
from typing import Any, Literal

import asyncpg  # type: ignore[import-untyped]
import pytest
from httpx_sse import ServerSentEvent, aconnect_sse
from redis.asyncio import Redis

from tidings.client.user import UserClient

from .clients import auth_frame, open_ws
from .conftest import module_server
from .harness import AppCredentials, ServerProcess, http_client
from .ledger import fetch_inbox
from .producer import Producer

pytestmark = pytest.mark.e2e

WITHIN = 15.0
POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
REDIS = "redis://127.0.0.1:6379/0"
SETTINGS = {"retention_interval": 0.2, "retention_pause": 0.0, "backlog_page": 2}


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerProcess, AppCredentials]]:
    """One server per store for the module, with an app that keeps 3 notifications per user."""
    namespace = "retain_" + secrets.token_hex(4)
    env: dict[str, object] = dict(SETTINGS)
    if request.param == "postgres":
        env |= {"store": POSTGRES, "broker": REDIS, "namespace": namespace}
    try:
        with module_server(tmp_path_factory, env) as server:
            creds = asyncio.run(_keeping_three(server))
            yield server, creds
            if server.running:
                asyncio.run(server.stop())  # before its schema goes
    finally:
        if request.param == "postgres":
            asyncio.run(_drop(namespace))


async def _keeping_three(server: ServerProcess) -> AppCredentials:
    creds = await server.create_app("retain")
    async with http_client(server.base_url) as http:
        rules = await http.put(
            "/v1/rules",
            headers={"Authorization": f"Bearer {creds.api_key}"},
            json={"retention": {"max_count": 3}},
        )
        assert rules.status_code == 200, rules.text
    return creds


async def _drop(namespace: str) -> None:
    """The namespace's schema and its Redis streams and keys."""
    connection = await asyncpg.connect(POSTGRES, timeout=10)
    try:
        await connection.execute(f'DROP SCHEMA IF EXISTS "{namespace}" CASCADE')
    finally:
        await connection.close()
    client = Redis.from_url(REDIS)
    try:
        async for key in client.scan_iter(match=f"{namespace}:*", count=1000):  # ends with the keyspace
            await client.delete(key)
    finally:
        await client.aclose()


async def _notify(server: ServerProcess, creds: AppCredentials, user: str, n: int, until: Any) -> None:
    """``n`` notifications for ``user``; returns once its inbox's seqs satisfy ``until`` (the sweep ran)."""
    async with Producer(f"p-{secrets.token_hex(3)}", server.base_url, creds.api_key) as producer:
        for _ in range(n):
            await producer.send([user])
    seqs: list[int] = []
    for _ in range(int(WITHIN / 0.1)):
        seqs = [int(n["seq"]) for n in await fetch_inbox(server.base_url, creds.token(user))]
        if until(seqs):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{user}'s inbox is {seqs} after {WITHIN} s")


async def _swept(server: ServerProcess, creds: AppCredentials, user: str) -> None:
    """8 notifications; the sweep leaves 6, 7, 8."""
    await _notify(server, creds, user, 8, until=lambda seqs: seqs == [6, 7, 8])


async def _ws_frames(ws: Any, count: int) -> list[dict[str, Any]]:
    async with asyncio.timeout(WITHIN):
        return [json.loads(await ws.recv()) for _ in range(count)]


async def test_ws_resume_from_a_swept_range_is_reset_with_the_latest_page(
    served: tuple[ServerProcess, AppCredentials],
) -> None:
    server, creds = served
    await _swept(server, creds, "alice")
    async with open_ws(server.ws_url) as ws:
        await ws.send(auth_frame(creds.token("alice"), 1))
        ready, reset, seventh, eighth = await _ws_frames(ws, 4)
        await _notify(server, creds, "alice", 1, until=lambda seqs: 9 in seqs)
        [ninth] = await _ws_frames(ws, 1)
    assert (ready["type"], ready["last_seq"]) == ("ready", 8), ready
    assert reset == {"type": "reset", "last_seq": 6, "epoch": ready["epoch"], "reason": "expired"}
    assert [f["notification"]["seq"] for f in (seventh, eighth, ninth)] == [7, 8, 9]


async def test_ws_resume_from_the_floor_is_not_reset(served: tuple[ServerProcess, AppCredentials]) -> None:
    server, creds = served
    await _swept(server, creds, "bob")
    async with open_ws(server.ws_url) as ws:
        await ws.send(auth_frame(creds.token("bob"), 5))
        frames = await _ws_frames(ws, 4)
    assert frames[0]["type"] == "ready", frames
    assert [f["notification"]["seq"] for f in frames[1:]] == [6, 7, 8], frames


async def test_sse_resume_from_a_swept_range_is_reset_with_the_latest_page(
    served: tuple[ServerProcess, AppCredentials],
) -> None:
    server, creds = served
    await _swept(server, creds, "carol")
    async with (
        http_client(server.base_url, token=creds.token("carol"), timeout=30.0) as http,
        aconnect_sse(http, "GET", "/v1/stream", headers={"Last-Event-ID": "2"}) as source,
    ):
        events = _events(source.aiter_sse())
        got = [await _next(events) for _ in range(4)]
    ready, reset, seventh, eighth = got
    assert ready.event == "ready", got
    assert reset.event == "reset", got
    assert json.loads(reset.data) == {
        "type": "reset",
        "last_seq": 6,
        "epoch": json.loads(ready.data)["epoch"],
        "reason": "expired",
    }
    assert reset.id == "6", reset  # the browser's Last-Event-ID moves to where the stream goes on
    assert [(e.event, e.id) for e in (seventh, eighth)] == [("notification", "7"), ("notification", "8")]


async def _events(events: AsyncIterator[ServerSentEvent]) -> AsyncIterator[ServerSentEvent]:
    async for event in events:
        if event.data:
            yield event


async def _next(events: AsyncIterator[ServerSentEvent]) -> ServerSentEvent:
    async with asyncio.timeout(WITHIN):
        return await anext(events)


@pytest.mark.parametrize("transport", ["ws", "sse"])
async def test_the_python_sdk_follows_an_expired_reset_and_yields_the_latest_page(
    served: tuple[ServerProcess, AppCredentials], transport: Literal["ws", "sse"]
) -> None:
    server, creds = served
    user = f"dave-{transport}"
    await _swept(server, creds, user)
    resets: list[dict[str, Any]] = []
    async with (
        UserClient(server.base_url, creds.token(user), trust_env=False) as client,
        client.stream(transport, after=1, on_reset=resets.append) as stream,
    ):
        async with asyncio.timeout(WITHIN):
            got = [int((await anext(stream))["seq"]) for _ in range(2)]
    assert got == [7, 8]
    assert [(r["last_seq"], r.get("reason")) for r in resets] == [(6, "expired")]
    assert stream.last_seq == 8
