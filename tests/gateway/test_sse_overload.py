"""An overloaded store must never show an SSE client a broken stream or an internal error: before the stream
starts it is a 503 with Retry-After; once it started (a backlog page read when every pooled connection is busy)
the stream ends with an ``unavailable`` error event and a retry hint, and the client resumes exactly.

Found by the reconnect storm on PostgreSQL (``tests/chaos/test_storm.py``, 600 clients): a stream's backlog
read that timed out waiting for the pool raised inside the response body, after the 200; Starlette could not
answer it, ``api/errors.py`` logged it as an unhandled error, and the connection was cut mid-body.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tidings import auth
from tidings.api import errors as api_errors
from tidings.backends.memory import MemoryBus
from tidings.backends.sql.sqlite import SqliteStore
from tidings.core.models import Event, InboxWrite
from tidings.errors import UnavailableError
from tidings.gateway.hub import Hub
from tidings.ports import Store
from tidings.runtime import Runtime
from tidings.service import build_app
from tidings.settings import Settings
from uvicorn_server import serving_app


class _NoLog:
    async def close(self) -> None:
        return None


class Unhandled:
    """Stands in for ``api.errors``' logger: what it was asked to log as an error."""

    def __init__(self) -> None:
        self.errors: list[tuple[str, dict[str, Any]]] = []

    def error(self, event: str, **fields: Any) -> None:
        self.errors.append((event, fields))

    def warning(self, event: str, **fields: Any) -> None:
        return None


@pytest.fixture
def unhandled(monkeypatch: pytest.MonkeyPatch) -> Unhandled:
    recorder = Unhandled()
    monkeypatch.setattr(api_errors, "log", recorder)
    return recorder


def runtime_over(store: Store, settings: Settings) -> Runtime:
    bus = MemoryBus()
    runtime = Runtime(settings=settings, store=store, log=_NoLog(), bus=bus)  # type: ignore[arg-type]
    runtime.hub = Hub(bus)
    return runtime


async def seed(runtime: Runtime, users: list[str], events: int) -> dict[str, str]:
    """App ``a`` with ``events`` notifications in each user's inbox; a token per user."""
    store, now = runtime.store, runtime.clock.time()
    await auth.create_app_record(store, "a", [], now)
    app = await store.apps.get("a")
    assert app is not None
    for k in range(events):
        event = Event(id=f"e{k}", app="a", type="t", accepted_at=now)
        await store.inbox.write([InboxWrite("a", user, event) for user in users])
    return {user: auth.mint_user_token(app, user, 3600, now) for user in users}


@contextlib.asynccontextmanager
async def serving(runtime: Runtime) -> AsyncIterator[int]:
    """The gateway's HTTP app (SSE) under uvicorn on a free loopback port for the block."""
    async with serving_app(build_app(runtime, ("gateway",)), log_level="critical") as port:
        yield port


async def sse_events(response: httpx.Response) -> AsyncIterator[tuple[str, str, str | None, int | None]]:
    """(event, data, id, retry) per event of an SSE body, until it ends."""
    kind, data, event_id, retry = "message", "", None, None
    async for line in response.aiter_lines():
        if line == "":
            if data or kind != "message":
                yield kind, data, event_id, retry
            kind, data, event_id = "message", "", None
        elif line.startswith("event: "):
            kind = line.removeprefix("event: ")
        elif line.startswith("data: "):
            data = line.removeprefix("data: ")
        elif line.startswith("id: "):
            event_id = line.removeprefix("id: ")
        elif line.startswith("retry: "):
            retry = int(line.removeprefix("retry: "))


async def test_a_store_failure_after_the_stream_started_ends_it_with_unavailable_and_the_client_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, unhandled: Unhandled
) -> None:
    """The first page comes with the opening read; the second page's read fails as a dry pool does. The client
    gets page one, then ``event: error`` ``unavailable`` with a retry hint and a cleanly ended body (no cut
    connection, nothing logged as unhandled); it reconnects with Last-Event-ID and gets the rest, once each."""
    settings = Settings(data=str(tmp_path), sqlite_synchronous="NORMAL", backlog_page=2)
    store = await SqliteStore.open(settings.store_url, settings)
    runtime = runtime_over(store, settings)
    tokens = await seed(runtime, ["alice"], 5)
    real_backlog = store.inbox.backlog
    failures = [UnavailableError("the PostgreSQL database is unavailable (TimeoutError)")]

    async def dry_pool_once(app: str, user: str, after: int, limit: int) -> Any:
        if failures:
            raise failures.pop()
        return await real_backlog(app, user, after, limit)

    monkeypatch.setattr(store.inbox, "backlog", dry_pool_once)
    headers = {"Authorization": f"Bearer {tokens['alice']}"}
    try:
        async with serving(runtime) as port, httpx.AsyncClient(timeout=10) as http:
            url = f"http://127.0.0.1:{port}/v1/stream"
            seen: list[str] = []
            async with http.stream("GET", url, params={"after": "0"}, headers=headers) as first:
                assert first.status_code == 200
                ending = [event async for event in sse_events(first)]  # ends: the server closed the body
            seen += [event_id for kind, _, event_id, _ in ending if kind == "notification" and event_id]
            assert seen == ["1", "2"]
            kind, data, _, retry = ending[-1]
            assert (kind, data) == ("error", '{"code":"unavailable"}'), ending
            assert retry is not None
            assert retry >= 1000  # not at once: the store is busy
            resumed = {**headers, "Last-Event-ID": seen[-1]}
            async with http.stream("GET", url, headers=resumed) as second:
                assert second.status_code == 200
                async for kind, _, event_id, _ in sse_events(second):
                    if kind == "notification" and event_id:
                        seen.append(event_id)
                    if len(seen) == 5:
                        break
            assert seen == ["1", "2", "3", "4", "5"]
        assert unhandled.errors == []
    finally:
        await store.close()


async def test_a_store_failure_before_the_stream_starts_is_a_503_with_retry_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, unhandled: Unhandled
) -> None:
    """The app lookup of the token fails as a dry pool does: 503 ``unavailable`` with Retry-After, no stream."""
    settings = Settings(data=str(tmp_path), sqlite_synchronous="NORMAL")
    store = await SqliteStore.open(settings.store_url, settings)
    runtime = runtime_over(store, settings)
    tokens = await seed(runtime, ["alice"], 1)

    async def dry_pool(name: str) -> None:
        raise UnavailableError("the PostgreSQL database is unavailable (TimeoutError)")

    monkeypatch.setattr(store.apps, "get", dry_pool)
    try:
        async with serving(runtime) as port, httpx.AsyncClient(timeout=10) as http:
            answer = await http.get(
                f"http://127.0.0.1:{port}/v1/stream", headers={"Authorization": f"Bearer {tokens['alice']}"}
            )
        assert answer.status_code == 503
        assert answer.json()["error"]["code"] == "unavailable"
        assert int(answer.headers["Retry-After"]) >= 1
        assert unhandled.errors == []
    finally:
        await store.close()
