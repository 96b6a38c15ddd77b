"""One app lookup shared by the clients waiting for it (``auth.AppCache.lookup``): a reconnect storm of a cold
app's clients takes one store read of its record, not one pooled connection per client; and a store failure at
auth is a refusal the client resumes on, on every WebSocket shell."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tidings import auth
from tidings.api import errors
from tidings.core.models import App
from tidings.errors import UnavailableError
from tidings.testing import FakeClock

from .test_sse_overload import runtime_over, seed, serving

APP = App("a", "hash", "secret", (), 0.0)


class HeldRead:
    """A store read of the app that waits until the test lets it answer; counts how often it was made."""

    def __init__(self) -> None:
        self.reads = 0
        self.release = asyncio.Event()
        self.failure: Exception | None = None

    async def __call__(self) -> App | None:
        self.reads += 1
        await self.release.wait()
        if self.failure is not None:
            raise self.failure
        return APP


async def test_clients_missing_the_same_app_at_once_share_one_read() -> None:
    """300 lookups of a cold app while its read is under way: one read, every caller gets the record, and the
    next caller finds it cached."""
    cache, read = auth.AppCache(FakeClock()), HeldRead()
    waiting = [asyncio.ensure_future(cache.lookup("name:a", read)) for _ in range(300)]
    await asyncio.sleep(0)  # every lookup is waiting now
    read.release.set()
    assert await asyncio.gather(*waiting) == [APP] * 300
    assert read.reads == 1
    assert await cache.lookup("name:a", read) is APP
    assert read.reads == 1


async def test_a_failed_read_fails_every_waiter_and_caches_nothing() -> None:
    """The pool timed out: each waiting caller gets the error (a 503 or close 1012 at the edge); the next
    lookup reads again."""
    cache, read = auth.AppCache(FakeClock()), HeldRead()
    read.failure = UnavailableError("QueuePool limit reached")
    waiting = [asyncio.ensure_future(cache.lookup("name:a", read)) for _ in range(3)]
    await asyncio.sleep(0)
    read.release.set()
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert all(isinstance(result, UnavailableError) for result in results)
    read.failure = None
    assert await cache.lookup("name:a", read) is APP
    assert read.reads == 2


async def test_a_caller_that_gives_up_does_not_cancel_the_read_for_the_others() -> None:
    cache, read = auth.AppCache(FakeClock()), HeldRead()
    first = asyncio.ensure_future(cache.lookup("name:a", read))
    second = asyncio.ensure_future(cache.lookup("name:a", read))
    await asyncio.sleep(0)
    first.cancel()  # its client went away
    read.release.set()
    assert await second is APP
    assert first.cancelled()
    assert read.reads == 1


async def test_a_read_asked_since_a_mark_does_not_join_a_read_started_before_it() -> None:
    """A token signed with a secret newer than the record needs a read started after the request arrived: a
    read already under way may predate the rotation, so a new one is made (and later callers share it)."""
    cache, read = auth.AppCache(FakeClock()), HeldRead()
    older = asyncio.ensure_future(cache.lookup("name:a", read))
    await asyncio.sleep(0)
    mark = cache.mark()
    fresh = asyncio.ensure_future(cache.lookup("name:a", read, since=mark))
    joined = asyncio.ensure_future(cache.lookup("name:a", read, since=mark))
    await asyncio.sleep(0)
    read.release.set()
    assert await asyncio.gather(older, fresh, joined) == [APP] * 3
    assert read.reads == 2


async def test_a_store_failure_at_auth_on_the_asgi_websocket_shell_closes_1012(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fallback shell (``--ws-server uvicorn``) refuses like the fast listener: ``unavailable``, 1012."""
    from tidings.backends.sql.sqlite import SqliteStore
    from tidings.settings import Settings

    settings = Settings(data=str(tmp_path), sqlite_synchronous="NORMAL")
    store = await SqliteStore.open(settings.store_url, settings)
    runtime = runtime_over(store, settings)
    tokens = await seed(runtime, ["alice"], 1)

    async def dry_pool(name: str) -> None:
        raise UnavailableError("QueuePool limit reached")

    monkeypatch.setattr(store.apps, "get", dry_pool)
    try:
        async with (
            serving(runtime) as port,
            connect(f"ws://127.0.0.1:{port}/v1/ws", proxy=None, open_timeout=5) as ws,
        ):
            await ws.send(json.dumps({"type": "auth", "token": tokens["alice"], "after": 0}))
            async with asyncio.timeout(5.0):
                frame = json.loads(await ws.recv())
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.recv()
        assert (frame["type"], frame["code"]) == ("error", "unavailable"), frame
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == errors.WS_DRAINING  # 1012: back off, resume
    finally:
        await store.close()
