"""Chaos on every engine with the roles split: the scale-out topology (haproxy in front of 2 API and 2 gateway
replicas, 2 workers, PostgreSQL, a broker of the test's own: Redis, RabbitMQ or NATS JetStream), and a
``tidings verify`` ledger run through haproxy while replicas of each role are killed and started again:

- kill -9 of a worker (mid-batch: its leased deliveries go to the other worker after ``ack_wait``);
- SIGTERM of an API replica (graceful drain: haproxy moves producers to the other one);
- kill -9 of a gateway (its clients reconnect at once to the other one: a small reconnect storm);
- SIGTERM of a worker (it finishes its batch and leaves) and of a gateway (it tells its clients to reconnect),
  at once;
- kill -9 of the broker itself, restarted on the same data.

Nothing accepted may be lost or duplicated, no gap, and each client's seqs stay in order. The order of one
producer's events across two competing workers is not promised (the contract's "Order"), so verify is told
(``lane_order=False``) and reports it as ``reordered``.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from scaleout.brokers import Broker, StartBroker
from scaleout.processes import Child, Children
from scaleout.topology import Topology, replica_env, restart, start_topology
from tidings.verify.ledger import Fault
from tidings.verify.run import Options, Verify

from .support import create_app

pytestmark = [pytest.mark.e2e, pytest.mark.serial]

# Sent at a rate that spreads the events over 60 s (the soak: about ten minutes), so that every fault, and
# the restart after it, falls while events are being sent: the faults come every 60/7 = 8.6 s, and the
# slowest of them (the broker's kill and restart) took 6.4 s on a CI run.
SHORT = {"events": 900, "rate": 15.0}
SOAK = {"events": 9000, "rate": 15.0}
SOAK_MARKS = [pytest.mark.slow, pytest.mark.timeout(1200)]


async def _faults(verifier: Verify, topology: Topology, broker: Broker, log: list[str]) -> None:
    """One of each fault, spaced out over the run, each followed by a restart; recorded as verify faults."""

    async def fault(name: str, action: object) -> None:
        started = verifier.clock()
        await action  # type: ignore[misc]
        verifier.faults.append(Fault(started, verifier.clock(), 0))
        log.append(f"{name}: {verifier.clock() - started:.1f} s until it took work again")

    async def crash(replica: Child, *, graceful: bool = False) -> None:
        if graceful:
            assert await replica.stop(), f"{replica.name} outlived SIGTERM: killed"
        else:
            await replica.kill()
        await restart(topology, replica)

    async def drain(*replicas: Child) -> None:
        await asyncio.gather(*(crash(replica, graceful=True) for replica in replicas))

    async def crash_broker() -> None:
        await broker.kill()
        await broker.start()

    steps = [
        ("kill -9 worker0", lambda: crash(topology.replicas["worker"][0])),
        ("SIGTERM api0", lambda: crash(topology.replicas["api"][0], graceful=True)),
        ("kill -9 gateway0", lambda: crash(topology.replicas["gateway"][0])),
        (
            "SIGTERM worker1 and gateway1",
            lambda: drain(topology.replicas["worker"][1], topology.replicas["gateway"][1]),
        ),
        ("kill -9 broker", crash_broker),
    ]
    for i, (name, step) in enumerate(steps):
        wanted = verifier.o.events * (i + 1) / (len(steps) + 2)
        until = time.monotonic() + 120.0
        while len(verifier.sent) < wanted and time.monotonic() < until:  # noqa: ASYNC110 - bounded poll
            await asyncio.sleep(0.1)
        await fault(name, step())


@pytest.mark.parametrize(
    "size", [pytest.param(SHORT, id="short"), pytest.param(SOAK, id="soak", marks=SOAK_MARKS)]
)
@pytest.mark.parametrize(
    "broker_name",
    [
        # The default suite runs RabbitMQ here and Redis in the storm and slow-consumer runs (time budget).
        pytest.param("redis", marks=[pytest.mark.slow, pytest.mark.timeout(400)]),
        pytest.param("rabbitmq", marks=pytest.mark.timeout(400)),
        pytest.param("nats", marks=[pytest.mark.slow, pytest.mark.timeout(400)]),  # scaleout covers it too
    ],
)
async def test_role_crashes_on_each_engine_lose_nothing(
    broker_name: str,
    size: dict[str, float],
    start_broker: StartBroker,
    children: Children,
    namespace: str,
) -> None:
    broker = await start_broker(broker_name)
    topology = await start_topology(children, broker.url, namespace)
    creds = await create_app(replica_env(namespace))
    verifier = Verify(
        Options(
            url=topology.base_url,
            app=creds.app,
            api_key=creds.api_key,
            jwt_secret=creds.jwt_secret,
            events=int(size["events"]),
            users=10,
            clients=6,
            rate=size["rate"],
            lane_order=False,  # two workers: lane order is measured (reordered), not promised
            timeout=300.0,
            trust_env=False,
        )
    )
    log: list[str] = []
    verifier.faults_of_caller = asyncio.ensure_future(_faults(verifier, topology, broker, log))
    report = await verifier.run()
    figures = report.as_dict()
    print(f"{broker_name}: {figures}\n" + "\n".join(log))
    (children.logs / "verify.txt").write_text(f"{figures}\n" + "\n".join(log) + "\n")
    assert report.ok, figures
    assert report.faults == 5
    assert len(report.recovery_s) == 5, figures
