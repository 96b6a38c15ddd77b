"""UserClient against a real ``tidings serve``: the inbox API and live streams that resume across cuts."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve

from tidings.client import (
    AuthFailedError,
    Backoff,
    ConnectionFailedError,
    NotificationStream,
    ProducerClient,
    UserClient,
)

from .proxy import CutProxy
from .server import AppKeys, TidingsServer
from .support import Sleeps, inbox_seqs, like, user_client

TRANSPORTS = pytest.mark.parametrize("transport", ["ws", "sse"])
WITHIN = 5.0  # seconds any single notification may take to arrive on a healthy local server


@pytest.fixture
async def tidings(server: TidingsServer, tenant: AppKeys) -> AsyncIterator[ProducerClient]:
    async with ProducerClient(server.base_url, tenant.api_key, trust_env=False) as client:
        yield client


async def take(stream: NotificationStream, n: int) -> list[int]:
    """The seqs of the next ``n`` notifications of ``stream``."""
    seqs = []
    for _ in range(n):
        notification = await asyncio.wait_for(anext(stream), WITHIN)
        seqs.append(notification["seq"])
    return seqs


async def test_the_inbox_api(server: TidingsServer, tenant: AppKeys, tidings: ProducerClient) -> None:
    """notifications(), unread_count(), mark_read() and mark_seen() as a user's app uses them."""
    for n in (1, 2, 3):
        await tidings.send(like("alice", n))
    async with user_client(server.base_url, tenant, "alice") as alice:
        assert await inbox_seqs(alice, expect=3) == [1, 2, 3]
        assert [item["seq"] for item in (await alice.notifications(limit=2))["items"]] == [3, 2]
        assert await alice.unread_count() == {"unread": 3, "unseen": 3}
        assert await alice.mark_read([2]) == 1
        assert await alice.mark_seen(up_to=3) == 3
        assert await alice.unread_count() == {"unread": 2, "unseen": 0}
        unread = (await alice.notifications(unread=True))["items"]
    assert [item["seq"] for item in unread] == [3, 1]


@TRANSPORTS
async def test_a_stream_gives_the_backlog_then_live_notifications(
    server: TidingsServer, tenant: AppKeys, tidings: ProducerClient, transport: str
) -> None:
    """after=0 replays what is there, in order, and then what comes."""
    await tidings.send(like("alice", 1))
    await tidings.send(like("alice", 2))
    async with user_client(server.base_url, tenant, "alice") as alice:
        await inbox_seqs(alice, expect=2)
        async with alice.stream(transport, after=0) as stream:  # type: ignore[arg-type]
            assert await take(stream, 2) == [1, 2]
            await tidings.send(like("alice", 3))
            assert await take(stream, 1) == [3]
    assert stream.ready is not None
    assert stream.ready["user"] == "alice"


@TRANSPORTS
async def test_without_after_a_stream_starts_with_what_comes_next(
    server: TidingsServer, tenant: AppKeys, tidings: ProducerClient, transport: str
) -> None:
    """Old notifications are not replayed; the stream's resume point is the server's last seq."""
    await tidings.send(like("alice", 1))
    async with user_client(server.base_url, tenant, "alice") as alice:
        await inbox_seqs(alice, expect=1)
        async with alice.stream(transport) as stream:  # type: ignore[arg-type]
            pending = asyncio.ensure_future(take(stream, 1))
            await _until(lambda: stream.ready is not None)
            assert stream.last_seq == 1
            await tidings.send(like("alice", 2))
            assert await pending == [2]


@TRANSPORTS
async def test_a_cut_connection_resumes_with_nothing_lost_or_repeated(
    server: TidingsServer, tenant: AppKeys, tidings: ProducerClient, proxy: CutProxy, transport: str
) -> None:
    """The network drops mid-stream; events sent meanwhile arrive after the reconnect, once, in order."""
    tokens = 0

    def token() -> str:
        nonlocal tokens
        tokens += 1
        return tenant.token("alice")

    alice = UserClient(proxy.base_url, token, trust_env=False, random=lambda: 0.0)
    async with alice, alice.stream(transport, after=0) as stream:  # type: ignore[arg-type]
        await tidings.send(like("alice", 1))
        assert await take(stream, 1) == [1]
        proxy.cut()
        for n in (2, 3, 4):
            await tidings.send(like("alice", n))
        assert await take(stream, 3) == [2, 3, 4]
        await tidings.send(like("alice", 5))
        assert await take(stream, 1) == [5]
    assert stream.connects == 2
    assert stream.duplicates == 0
    assert tokens >= 2  # a token function is asked again for each connection (short-lived tokens work)


@TRANSPORTS
async def test_a_refused_token_stops_the_stream(
    server: TidingsServer, tenant: AppKeys, transport: str
) -> None:
    """A bad token is not retried: the stream raises AuthFailedError on the first attempt."""
    async with UserClient(server.base_url, "not-a-jwt", trust_env=False) as mallory:
        stream = mallory.stream(transport)  # type: ignore[arg-type]
        with pytest.raises(AuthFailedError):
            await anext(stream)
        await stream.aclose()
    assert stream.connects == 1


@TRANSPORTS
async def test_an_expired_token_is_replaced_by_the_token_function(
    server: TidingsServer, tenant: AppKeys, tidings: ProducerClient, transport: str
) -> None:
    """The first token the function gives has expired: the server says ``token_expired`` (WS error frame then
    1008, SSE 401), and the stream asks the function again instead of giving up, then delivers."""
    handed: list[str] = []

    def token() -> str:
        handed.append("expired" if not handed else "fresh")
        return tenant.token("alice", ttl=-60 if len(handed) == 1 else 600)

    async with UserClient(server.base_url, token, trust_env=False, random=lambda: 0.0) as alice:
        stream = alice.stream(transport, after=0)  # type: ignore[arg-type]
        await tidings.send(like("alice", 1))
        [first] = [n async for n in _take(stream, 1)]
        await stream.aclose()
    assert first["seq"] >= 1
    assert handed[:2] == ["expired", "fresh"]


async def _take(stream: Any, n: int) -> AsyncIterator[Any]:
    for _ in range(n):
        yield await asyncio.wait_for(anext(stream), 10.0)


@TRANSPORTS
async def test_an_expired_fixed_token_stops_the_stream(
    server: TidingsServer, tenant: AppKeys, transport: str
) -> None:
    """A fixed token that has expired cannot be refreshed: AuthFailedError with the code ``token_expired``."""
    async with UserClient(server.base_url, tenant.token("alice", ttl=-60), trust_env=False) as alice:
        stream = alice.stream(transport)  # type: ignore[arg-type]
        with pytest.raises(AuthFailedError) as refused:
            await anext(stream)
        await stream.aclose()
    assert refused.value.code == "token_expired"


async def test_a_stream_gives_up_after_bounded_attempts(tenant: AppKeys, proxy: CutProxy) -> None:
    """With the network down for good, the stream raises ConnectionFailedError after max_attempts tries."""
    proxy.block()
    sleeps = Sleeps()
    alice = UserClient(
        proxy.base_url,
        tenant.token("alice"),
        trust_env=False,
        sleep=sleeps,
        stream_backoff=Backoff(max_attempts=3),
    )
    async with alice, alice.stream("ws") as stream:
        with pytest.raises(ConnectionFailedError):
            await anext(stream)
    assert stream.connects == 3
    assert len(sleeps.delays) == 2


async def test_duplicates_from_a_misbehaving_server_are_dropped() -> None:
    """Even a server that sends a seq twice (or an old one) shows each notification once, in order."""

    async def handler(ws: ServerConnection) -> None:
        await ws.recv()  # the auth frame
        await ws.send(json.dumps({"type": "ready", "user": "alice", "last_seq": 3}))
        for seq in (1, 2, 2, 1, 3):
            await ws.send(json.dumps({"type": "notification", "notification": _notification(seq)}))
        await ws.wait_closed()

    async with serve(handler, "127.0.0.1", 0) as fake:
        port = fake.sockets[0].getsockname()[1]
        alice = UserClient(f"http://127.0.0.1:{port}", "token", trust_env=False)
        async with alice, alice.stream("ws", after=0) as stream:
            assert await take(stream, 3) == [1, 2, 3]
    assert stream.duplicates == 2


async def test_a_server_behind_the_resume_point_is_followed_from_its_last_seq() -> None:
    """A server whose data was reset (last_seq below ours): the stream starts over from the server's seq."""
    afters: list[int | None] = []

    async def handler(ws: ServerConnection) -> None:
        afters.append(json.loads(await ws.recv()).get("after"))
        await ws.send(json.dumps({"type": "ready", "user": "alice", "last_seq": 1}))
        if afters[-1] == 1:
            await ws.send(json.dumps({"type": "notification", "notification": _notification(2)}))
        await ws.wait_closed()

    async with serve(handler, "127.0.0.1", 0) as fake:
        port = fake.sockets[0].getsockname()[1]
        alice = UserClient(f"http://127.0.0.1:{port}", "token", trust_env=False, random=lambda: 0.0)
        async with alice, alice.stream("ws", after=50) as stream:
            assert await take(stream, 1) == [2]
    assert afters == [50, 1]
    assert stream.resets == 1


@TRANSPORTS
async def test_a_resume_point_ahead_of_the_server_is_reset_and_the_stream_goes_on(
    server: TidingsServer, tenant: AppKeys, tidings: ProducerClient, transport: str
) -> None:
    """after=99 with 2 in the inbox: the server's reset drops the resume point on the same connection, the
    application is told, and seq 3 comes next."""
    await tidings.send(like("alice", 1))
    await tidings.send(like("alice", 2))
    resets: list[dict[str, Any]] = []
    async with user_client(server.base_url, tenant, "alice") as alice:
        await inbox_seqs(alice, expect=2)
        async with alice.stream(transport, after=99, on_reset=resets.append) as stream:  # type: ignore[arg-type]
            pending = asyncio.ensure_future(take(stream, 1))
            await _until(lambda: stream.resets == 1)
            assert stream.last_seq == 2
            await tidings.send(like("alice", 3))
            assert await pending == [3]
    assert stream.connects == 1
    assert stream.ready is not None
    assert resets == [{"type": "reset", "last_seq": 2, "epoch": stream.ready["epoch"]}]
    assert stream.epoch == stream.ready["epoch"]


@TRANSPORTS
async def test_a_resume_point_of_another_epoch_is_dropped(
    server: TidingsServer, tenant: AppKeys, tidings: ProducerClient, transport: str
) -> None:
    """after=1 saved with another epoch (a recreated store): what the server has up to its last_seq is not
    yielded as new; the application reloads on the reset; what comes next is yielded."""
    await tidings.send(like("alice", 1))
    await tidings.send(like("alice", 2))
    resets: list[dict[str, Any]] = []
    async with user_client(server.base_url, tenant, "alice") as alice:
        await inbox_seqs(alice, expect=2)
        stream = alice.stream(transport, after=1, epoch="another", on_reset=resets.append)  # type: ignore[arg-type]
        async with stream:
            pending = asyncio.ensure_future(take(stream, 1))
            await _until(lambda: stream.resets == 1)
            await tidings.send(like("alice", 3))
            assert await pending == [3]
    assert [r["last_seq"] for r in resets] == [2]
    assert stream.epoch != "another"


@TRANSPORTS
async def test_a_resume_point_at_the_servers_last_seq_is_no_reset(
    server: TidingsServer, tenant: AppKeys, tidings: ProducerClient, transport: str
) -> None:
    await tidings.send(like("alice", 1))
    async with user_client(server.base_url, tenant, "alice") as alice:
        await inbox_seqs(alice, expect=1)
        async with alice.stream(transport, after=1) as stream:  # type: ignore[arg-type]
            pending = asyncio.ensure_future(take(stream, 1))
            await _until(lambda: stream.ready is not None)
            epoch = stream.epoch
            await tidings.send(like("alice", 2))
            assert await pending == [2]
    assert stream.resets == 0
    assert epoch is not None


def _notification(seq: int) -> dict[str, Any]:
    return {"seq": seq, "id": f"n{seq}", "type": "post.liked", "data": {}}


async def _until(predicate: Any, within: float = WITHIN) -> None:
    async with asyncio.timeout(within):
        # The stream has no "ready" event to wait on: it reports readiness as state. Bounded by the timeout.
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.01)
