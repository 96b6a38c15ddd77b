"""A reconnect storm on a gateway whose PostgreSQL pool is far too small for it (2 connections, 0.1 s to get
one), the case of ``tests/chaos/test_storm.py``'s 600-client run in miniature: every client resumes exactly,
and nobody sees an internal error.

- SSE: a store failure before the stream is a 503 with Retry-After; after the 200, the stream ends with
  ``event: error`` ``unavailable``; no other status, no cut body.
- WebSocket: an ``unavailable`` error frame, then close 1012.
- Each client resumes with its last seq and ends with every notification of its inbox once, in order.
- The app's record is looked up once at a time per cache (SSE's and the WebSocket listener's), however many
  clients wait for it: a storm does not queue one pool checkout per client for the same row.
"""

from __future__ import annotations

import asyncio
import collections
import os
import random
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tidings.api import errors as api_errors
from tidings.core.models import App
from tidings.errors import ConfigError
from tidings.gateway.listener import FastGateway
from tidings.runtime import Runtime
from tidings.settings import Settings

from .test_sse_overload import Unhandled, runtime_over, seed, serving, sse_events

URL = "postgresql://postgres@127.0.0.1:5432/test"
EVENTS = 5  # per user; pages of 2: each resume reads its backlog in the response body, on the pool
ATTEMPTS = 40  # connections per client at most


@pytest.fixture
async def namespace() -> AsyncIterator[str]:
    asyncpg = pytest.importorskip("asyncpg")
    from tidings.backends.sql.postgres import quoted

    try:
        (await asyncpg.connect(URL, timeout=2)).terminate()
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        if os.environ.get("TIDINGS_TEST_REQUIRE"):
            pytest.fail(f"PostgreSQL unreachable at {URL}: {exc}; TIDINGS_TEST_REQUIRE is set")
        pytest.skip(f"PostgreSQL unreachable at {URL}")
    name = f"storm_{secrets.token_hex(4)}"
    yield name
    conn = await asyncpg.connect(URL, timeout=5)
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {quoted(name)} CASCADE")
    finally:
        await conn.close()


@dataclass
class Tally:
    """What the clients saw, and how the store was asked for the app's record."""

    outcomes: collections.Counter[str] = field(default_factory=collections.Counter)
    problems: list[str] = field(default_factory=list)
    lookups: int = 0
    in_flight: int = 0
    most_in_flight: int = 0

    def counted(
        self, lookup: Callable[[str], Awaitable[App | None]]
    ) -> Callable[[str], Awaitable[App | None]]:
        async def counting(name: str) -> App | None:
            self.lookups += 1
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            try:
                return await lookup(name)
            finally:
                self.in_flight -= 1

        return counting


async def pause(rng: random.Random) -> None:
    """A client's back-off before it resumes, shortened to keep the test short (the hints say 1-3 s)."""
    await asyncio.sleep(rng.uniform(0.05, 0.3))


class Resuming:
    """One user's client: connects until it has all ``EVENTS`` notifications, each once and in order."""

    def __init__(self, user: str, token: str, tally: Tally) -> None:
        self.user, self.token, self.tally = user, token, tally
        self.last_seq = 0
        self.rng = random.Random(user)

    def got(self, seq: int) -> None:
        if seq != self.last_seq + 1:
            self.tally.problems.append(f"{self.user}: seq {seq} after {self.last_seq}")
        self.last_seq = max(self.last_seq, seq)


class SseClient(Resuming):
    async def run(self, http: httpx.AsyncClient, url: str) -> None:
        for _ in range(ATTEMPTS):
            headers = {"Authorization": f"Bearer {self.token}", "Last-Event-ID": str(self.last_seq)}
            try:
                async with http.stream("GET", url, headers=headers) as response:
                    await self._session(response)
            except httpx.HTTPError as exc:
                self.tally.problems.append(f"{self.user}: SSE {type(exc).__name__}: {exc}")
            if self.last_seq >= EVENTS:
                return
            await pause(self.rng)
        self.tally.problems.append(f"{self.user}: SSE at seq {self.last_seq} after {ATTEMPTS} attempts")

    async def _session(self, response: httpx.Response) -> None:
        status = response.status_code
        if status != 200:
            body = (await response.aread()).decode()
            self.tally.outcomes[f"sse {status}"] += 1
            if status != 503 or "Retry-After" not in response.headers or '"unavailable"' not in body:
                self.tally.problems.append(f"{self.user}: SSE {status} {dict(response.headers)} {body}")
            return
        self.tally.outcomes["sse 200"] += 1
        async for kind, data, event_id, _ in sse_events(response):
            if kind == "notification" and event_id is not None:
                self.got(int(event_id))
            elif kind == "error":
                self.tally.outcomes[f"sse error {orjson.loads(data)['code']}"] += 1
            if self.last_seq >= EVENTS:
                return


class WsClient(Resuming):
    async def run(self, url: str) -> None:
        for _ in range(ATTEMPTS):
            try:
                async with connect(url, proxy=None, open_timeout=10, close_timeout=2) as ws:
                    await ws.send(orjson.dumps({"type": "auth", "token": self.token, "after": self.last_seq}))
                    await self._session(ws)
            except (OSError, TimeoutError) as exc:
                self.tally.problems.append(f"{self.user}: WS {type(exc).__name__}: {exc}")
            if self.last_seq >= EVENTS:
                return
            await pause(self.rng)
        self.tally.problems.append(f"{self.user}: WS at seq {self.last_seq} after {ATTEMPTS} attempts")

    async def _session(self, ws: Any) -> None:
        error: dict[str, Any] = {}
        try:
            while self.last_seq < EVENTS:
                frame = orjson.loads(await ws.recv())
                if frame["type"] == "notification":
                    self.got(int(frame["notification"]["seq"]))
                elif frame["type"] == "ready":
                    self.tally.outcomes["ws ready"] += 1
                elif frame["type"] == "error":
                    error = frame
        except ConnectionClosed as closed:
            code = closed.rcvd.code if closed.rcvd is not None else None
            self.tally.outcomes[f"ws {error.get('code')} {code}"] += 1
            if (error.get("code"), code) != ("unavailable", 1012):
                self.tally.problems.append(f"{self.user}: WS closed {code} after {error}")


DRY_POOL = {"pg_pool_size": 2, "pg_pool_overflow": 0, "pg_pool_timeout": 0.1}


async def storm(
    namespace: str,
    sse_clients: int,
    ws_clients: int,
    unhandled: Unhandled,
    pool: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Every client connects at once from seq 0; returns the figures (and the problems) once all are done.
    ``pool``: the ``pg_pool_*`` settings (``DRY_POOL`` by default)."""
    from tidings.backends.sql.postgres import PostgresStore

    settings = Settings(store=URL, namespace=namespace, backlog_page=2, **(pool or DRY_POOL))
    store = await PostgresStore.open(URL, settings)
    runtime: Runtime = runtime_over(store, settings)
    users = [f"u{i:04d}" for i in range(sse_clients + ws_clients)]
    tokens = await seed(runtime, users, EVENTS)
    tally = Tally()
    store.apps.get = tally.counted(store.apps.get)  # type: ignore[method-assign]
    gateway = FastGateway(runtime, "127.0.0.1", 0)
    ws_port = await gateway.start()
    loop = asyncio.get_running_loop()
    try:
        async with serving(runtime) as port, httpx.AsyncClient(timeout=30) as http:
            clients: list[Awaitable[None]] = [
                SseClient(user, tokens[user], tally).run(http, f"http://127.0.0.1:{port}/v1/stream")
                for user in users[:sse_clients]
            ]
            clients += [
                WsClient(user, tokens[user], tally).run(f"ws://127.0.0.1:{ws_port}/v1/ws")
                for user in users[sse_clients:]
            ]
            started = loop.time()
            async with asyncio.timeout(90):
                await asyncio.gather(*clients)
            seconds = loop.time() - started
    finally:
        await gateway.close()
        await store.close()
    return {
        "clients": len(users),
        "seconds": round(seconds, 1),
        "app_lookups": tally.lookups,
        "app_lookups_at_once": tally.most_in_flight,
        "outcomes": dict(sorted(tally.outcomes.items())),
        "unhandled": len(unhandled.errors),
        "problems": tally.problems,
        "load": round(os.getloadavg()[0], 1),
    }


async def test_a_storm_on_a_dry_postgresql_pool_resumes_every_client_without_an_internal_error(
    namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """100 SSE and 100 WebSocket clients resume at once on a gateway with 2 pooled connections."""
    unhandled = Unhandled()
    monkeypatch.setattr(api_errors, "log", unhandled)
    figures = await storm(namespace, 100, 100, unhandled)
    print(figures)
    assert figures["problems"] == [], figures["problems"][:20]
    assert unhandled.errors == [], unhandled.errors[:3]
    # One lookup at a time per cache (SSE's and the listener's), not one per waiting client.
    assert figures["app_lookups_at_once"] <= 2, figures


@pytest.mark.parametrize(
    "pool", [{"pg_pool_size": 0}, {"pg_pool_overflow": -1}, {"pg_pool_timeout": 0.0}], ids=str
)
async def test_a_pool_setting_out_of_range_is_refused_at_start_up(pool: dict[str, Any]) -> None:
    """SQLAlchemy reads 0 connections or -1 overflow as "no limit": a typo must not lift the cap."""
    from tidings.backends.sql.postgres import PostgresStore

    with pytest.raises(ConfigError, match="pg_pool"):
        await PostgresStore.open(URL, Settings(store=URL, **pool))
