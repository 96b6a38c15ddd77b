"""A slow consumer on Redis and RabbitMQ with the roles split: ``tidings api``, ``worker`` and ``gateway`` in
processes of their own, on PostgreSQL and a broker of the test's own, the gateway's outbox limited to 50 frames.

``tests/e2e/test_slow_consumer.py`` is the same run on one embedded ``tidings serve``. Here the notifications
reach the gateway over the broker's bus and a resume reads the backlog from PostgreSQL: a WebSocket client that
stops reading while ~7.5 MB pile up is told ``slow_consumer`` and closed with 1013; a WebSocket and an SSE client
of other users, on the same gateway, keep receiving the same events on time and are never disconnected; the
slow one then resumes with its last seq and gets everything. The ledger: every 2xx in each inbox and at each
client once, in the producer's order.
"""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from e2e.harness import AppCredentials, wait_until
from e2e.ledger import check_inbox, check_stream, fetch_inbox
from e2e.producer import Producer
from scaleout.brokers import StartBroker
from scaleout.processes import Children
from scaleout.topology import metric, replica_env

from .fleet import start_fleet, url_of
from .support import KeyedProducer, create_app
from .timed import TimedSse, TimedWs, latencies, percentiles

pytestmark = [pytest.mark.e2e, pytest.mark.serial]

OUTBOX = {"outbox_max_frames": 50, "outbox_max_bytes": 256 * 1024 * 1024}  # the frame limit binds
TRY_AGAIN_LATER = 1013
# As in tests/e2e/test_slow_consumer.py: the stall has to outlast the kernel's loopback buffers (a few MB).
EVENTS, PADDING = 500, 15_000
BATCH = 5
STUCK = 5  # sessions in a row without a new notification: the slow client will not catch up
USERS = ("slow", "fast", "fast-sse")


async def _produce(api: str, creds: AppCredentials, sent_at: dict[str, float]) -> Producer:
    """Small batches to every user, one after another (one big batch would reach the fast clients as one
    burst); notes each 2xx's time."""
    async with KeyedProducer("p", api, creds.api_key, padding=PADDING) as producer:
        for _ in range(EVENTS // BATCH):
            for accepted in await producer.send_batch([USERS] * BATCH):
                sent_at[accepted.event_id] = time.monotonic()
    return producer


@pytest.mark.parametrize(
    "broker_name",
    [
        pytest.param("redis", marks=pytest.mark.timeout(300)),
        pytest.param("rabbitmq", marks=[pytest.mark.slow, pytest.mark.timeout(300)]),
    ],
)
async def test_a_slow_consumer_is_closed_and_resumes_exactly_with_the_roles_split(
    broker_name: str, start_broker: StartBroker, children: Children, namespace: str
) -> None:
    broker = await start_broker(broker_name)
    topology = await start_fleet(
        children, broker.url, namespace, {"api": 1, "worker": 1, "gateway": 1}, {"gateway": OUTBOX}
    )
    creds = await create_app(replica_env(namespace))
    api, gateway = (url_of(topology, topology.replicas[role][0]) for role in ("api", "gateway"))
    ws_url = gateway.replace("http://", "ws://") + "/v1/ws"
    tokens = {user: creds.token(user) for user in USERS}
    # A tiny receive buffer and queue: the slow client's own buffers hold next to nothing once it stops reading.
    slow = TimedWs(ws_url, "slow", tokens["slow"], rcvbuf=4096, max_queue=1)
    fast = TimedWs(ws_url, "fast", tokens["fast"])
    sse = TimedSse(gateway, "fast-sse", tokens["fast-sse"])
    clients = (slow, fast, sse)
    sent_at: dict[str, float] = {}
    for client in clients:
        client.start()
    try:
        assert await wait_until(lambda: all(c.ready for c in clients), 20.0), "clients not ready"
        slow.reading.clear()
        stall = time.monotonic()
        producer = await _produce(api, creds, sent_at)
        # On time: the fast clients have every event while the slow one is still stalled (a gateway held back
        # by it would deliver nothing more until it was closed). Their latencies are reported: the producer
        # outruns the one worker, so they measure its backlog more than the gateway.
        on_time = await wait_until(lambda: min(fast.last_seq, sse.last_seq) >= EVENTS, 30.0)
        assert on_time, f"fast clients at {fast.last_seq} and {sse.last_seq} of {EVENTS}"
        stalled = time.monotonic() - stall
        slow.reading.set()
        resumed = time.monotonic()
        await wait_until(lambda: slow.last_seq >= EVENTS or slow.fruitless >= STUCK, 60.0)
        caught_up, resume_s = slow.last_seq >= EVENTS, time.monotonic() - resumed
    finally:
        await asyncio.gather(*(client.stop() for client in clients))
    closes = await metric(
        topology.port_of(topology.replicas["gateway"][0]), "tidings_slow_consumer_closes_total"
    )
    figures = {
        "engine": broker_name,
        "load": round(os.getloadavg()[0], 1),
        "events": EVENTS,
        "stalled_s": round(stalled, 1),
        "slow_closes": slow.close_codes.count(TRY_AGAIN_LATER),
        "slow_connects": slow.connects,
        "slow_caught_up_s": round(resume_s, 1),
        "fast_ws_ms": percentiles(latencies(sent_at, fast.arrived)),
        "fast_sse_ms": percentiles(latencies(sent_at, sse.arrived)),
    }
    print(figures)
    (children.logs / "figures.txt").write_text(f"{figures}\n")

    assert TRY_AGAIN_LATER in slow.close_codes, (
        f"slow client closes: {slow.close_codes}, errors {slow.errors}"
    )
    assert {f.get("code") for f in slow.error_frames} == {"slow_consumer"}, slow.error_frames
    assert closes >= 1, "the gateway counted no slow-consumer close"
    assert caught_up, f"slow client stuck at {slow.last_seq}/{EVENTS} after {slow.connects} connects"
    assert (fast.close_codes, fast.connects, sse.connects) == ([], 1, 1), "a fast client was disturbed"
    problems = []
    for client in clients:
        inbox = await fetch_inbox(api, client.token)
        problems += check_inbox(client.user, inbox, producer.accepted)
        problems += check_stream(client, inbox)
    assert not problems, "\n".join(problems[:20])
