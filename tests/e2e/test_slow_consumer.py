"""Slow consumers and long resumes, against a server with ``TIDINGS_OUTBOX_MAX_FRAMES=50``.

A WebSocket client that stops reading while notifications pile up is closed with 1013 once its outbox passes
the limit; it resumes and gets everything exactly once, in order, and a client of another user reading the
same events meanwhile is not slowed down or closed. A client that comes back after missing more notifications
than the outbox holds must be able to resume too: its backlog may not be mistaken for a slow consumer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence

import pytest

from .clients import SseClient, StreamClient, WsClient
from .conftest import StartServer, module_server
from .harness import ServerProcess, wait_until
from .ledger import check_stream, fetch_inbox
from .producer import Producer

pytestmark = pytest.mark.e2e

OUTBOX_MAX_FRAMES = 50
TRY_AGAIN_LATER = 1013
# The kernel buffers a few MB on loopback before a stalled reader backs up the server (its send buffer grows
# with the 64 KiB loopback MSS), so the stall has to outlast that: 500 notifications of ~15 KB, ~7.5 MB
# (the API caps an event's data at 16 KiB).
EVENTS, PADDING = 500, 15_000
STUCK = 5  # sessions in a row without a new notification: the client will not catch up, stop waiting


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Outbox limited to 50 frames; the byte limit raised so that the frame limit is the one that binds."""
    env = {"outbox_max_frames": OUTBOX_MAX_FRAMES, "outbox_max_bytes": 256 * 1024 * 1024}
    with module_server(tmp_path_factory, env) as served:
        yield served


async def test_a_client_that_stops_reading_is_closed_1013_and_resumes_exactly(server: ServerProcess) -> None:
    """The stalled client is cut off with 1013 and then catches up exactly; the other client never notices."""
    creds = await server.create_app("slow")
    # A tiny receive buffer and queue: the client's own buffers hold next to nothing once it stops reading.
    slow = WsClient(server.ws_url, "slow", creds.token("slow"), rcvbuf=4096, max_queue=1)
    fast = WsClient(server.ws_url, "fast", creds.token("fast"))
    for client in (slow, fast):
        client.start()
    try:
        assert await wait_until(lambda: bool(slow.ready and fast.ready), 10.0)
        slow.reading.clear()
        async with Producer("p", server.base_url, creds.api_key, padding=PADDING) as producer:
            for _ in range(EVENTS):  # one at a time: a batch would land in one commit, a burst for both
                await producer.send(["slow", "fast"])
        assert await wait_until(lambda: fast.last_seq >= EVENTS, 30.0), f"fast client at {fast.last_seq}"
        slow.reading.set()
        await wait_until(lambda: slow.last_seq >= EVENTS or slow.fruitless >= STUCK, 20.0)
        caught_up = slow.last_seq >= EVENTS
    finally:
        await asyncio.gather(slow.stop(), fast.stop())
    assert TRY_AGAIN_LATER in slow.close_codes, (
        f"slow client closes: {slow.close_codes}, errors {slow.errors}"
    )
    assert {f.get("code") for f in slow.error_frames} == {"slow_consumer"}, slow.error_frames
    assert caught_up, (
        f"slow client stuck at {slow.last_seq}/{EVENTS} after {slow.connects} connects; "
        f"closes {slow.close_codes[:5]}... ({len(slow.close_codes)})"
    )
    assert (fast.close_codes, fast.connects) == ([], 1), "the fast client was disturbed"
    for client in (slow, fast):
        problems = check_stream(client, await fetch_inbox(server.base_url, client.token))
        assert not problems, problems


async def _resume_catches_up(server: ServerProcess, transport: str, missed: int, padding: int = 0) -> None:
    """``missed`` notifications are committed for a user with no client; then a client connects with
    ``after=0`` and must get them all, once each, in order."""
    creds = await server.create_app(f"away-{transport}-{missed}-{padding}")
    async with Producer("p", server.base_url, creds.api_key, padding=padding) as producer:
        for start in range(0, missed, 100):
            await producer.send_batch([["carol"]] * min(100, missed - start))
    token = creds.token("carol")
    for _ in range(100):  # until all are committed, so the client meets one big backlog (bounded: ~10 s)
        if len(await fetch_inbox(server.base_url, token)) >= missed:
            break
        await asyncio.sleep(0.1)
    client: StreamClient
    if transport == "ws":
        client = ws = WsClient(server.ws_url, "carol", token)
        endings: Sequence[object] = ws.close_codes  # (the same list, filled as the client runs)
    else:
        client = sse = SseClient(server.base_url, "carol", token)
        endings = sse.error_events
    client.start()
    try:
        await wait_until(lambda: client.last_seq >= missed or client.fruitless >= STUCK, 10.0)
        caught_up = client.last_seq >= missed
    finally:
        await client.stop()
    assert caught_up, (
        f"{client!r} at {client.last_seq}/{missed} after {client.connects} connects: {endings[:3]}"
    )
    assert not check_stream(client, await fetch_inbox(server.base_url, token))


@pytest.mark.parametrize("transport", ["ws", "sse"])
async def test_a_resume_with_more_missed_than_the_outbox_holds_gets_everything(
    server: ServerProcess, transport: str
) -> None:
    """A client away for three outboxes' worth of notifications catches up on reconnect, once each."""
    await _resume_catches_up(server, transport, 3 * OUTBOX_MAX_FRAMES)


async def test_a_resume_of_over_a_mebibyte_at_default_limits_gets_everything(
    start_server: StartServer,
) -> None:
    """With default settings, a client that missed 450 notifications of ~2.6 KB (1.2 MB) catches up."""
    await _resume_catches_up(await start_server(), "ws", 450, padding=2500)
