"""Reconnect storms on Redis and RabbitMQ with the roles split: one ``tidings api``, one ``worker`` and two
``gateway`` replicas in processes of their own, haproxy in front, a few hundred live clients (half WebSocket,
half SSE, one user each) while producers send.

- **A gateway dies** (``kill -9``): every client it held reconnects at once through haproxy to the other one and
  resumes with its last seq; the gateway is started again.
- **Every client drops at once**: haproxy, which holds every client's connection, is killed (``kill -9``) and
  started again: all clients (and the producers' requests in flight) reconnect together onto both gateways.

For each storm the run reports how long until every dropped client had a new session (``resumed_s``) and until
every client had every event accepted before the fault (``caught_up_s``). At the end the e2e ledger: every 2xx in
each inbox and at each client once, in its producer's order (each producer's events carry one ordering key).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import pytest

from e2e.harness import wait_until
from e2e.producer import Accepted
from e2e.scenario import Plan, Run
from scaleout.brokers import StartBroker
from scaleout.conftest import require
from scaleout.frontdoor import FrontDoor
from scaleout.processes import Children
from scaleout.topology import HAPROXY, Topology, metric, restart

from .fleet import start_fleet, until_routing
from .support import KeyedProducer

pytestmark = [pytest.mark.e2e, pytest.mark.serial]

# No random drops: the storms are the drops, and the recovery figures count only their reconnects.
SHORT = Plan(events=800, users=200, ws_clients=100, sse_clients=100, drop_chance=0.0, settle_timeout=60.0)
SOAK = Plan(events=6000, users=600, ws_clients=300, sse_clients=300, drop_chance=0.0, settle_timeout=120.0)
GATEWAY_AT, FRONT_AT = 0.3, 0.6  # each storm once this share of the events is accepted
RECOVER_WITHIN = 90.0
# Behind a proxy every connection has the proxy's address: the deployment caps at the proxy (deploy/tidings.env).
GATEWAY = {"max_connections_per_ip": 0}


class HeldProducer(KeyedProducer):
    """A ``KeyedProducer`` that, once the run reached ``FRONT_AT``, sends nothing more until the front door's
    kill begins: so that storm comes while the producers still send, however fast the machine. (Unheld, a recent CI
    run was at 712 of 800 events when haproxy died, the gateway storm and restart having taken their time: a
    faster machine would have been done, and the producers' requests would not have been in the storm.)"""

    def __init__(self, run: KeyedRun, name: str, seed: int) -> None:
        super().__init__(name, run.server.base_url, run.creds.api_key, seed=seed)
        self._run = run

    async def send(self, recipients: Sequence[str]) -> Accepted:
        run = self._run
        if run.accepted >= FRONT_AT * run.plan.events:
            # Bounded: longer than the first storm (two waits of RECOVER_WITHIN) and a restart take.
            await asyncio.wait_for(run.front_door_kill.wait(), 3 * RECOVER_WITHIN)
        return await super().send(recipients)


class KeyedRun(Run):
    """The e2e run, its producers' events each under one ordering key (see ``KeyedProducer``), held at
    ``FRONT_AT`` until the front door's kill (see ``HeldProducer``)."""

    front_door_kill: asyncio.Event

    async def __aenter__(self) -> KeyedRun:
        await super().__aenter__()
        self.front_door_kill = asyncio.Event()
        plain, self.producers = (
            self.producers,
            [HeldProducer(self, p.name, seed=self.plan.seed * 100 + i) for i, p in enumerate(self.producers)],
        )
        await asyncio.gather(*(p.aclose() for p in plain))
        return self


async def storm(run: Run, name: str, fault: Callable[[], Awaitable[None]], dropped: int) -> dict[str, object]:
    """Runs ``fault`` and measures the storm after it: until ``dropped`` clients opened a new session, and
    until every client had every event accepted before the fault."""
    sessions = {client: len(client.ready) for client in run.clients}
    owed = run.expected()
    accepted = run.accepted
    started = time.monotonic()
    await fault()
    resumed = await wait_until(
        lambda: sum(len(c.ready) > sessions[c] for c in run.clients) >= dropped, RECOVER_WITHIN
    )
    resumed_s = time.monotonic() - started
    caught_up = await wait_until(lambda: all(c.last_seq >= owed[c.user] for c in run.clients), RECOVER_WITHIN)
    figures: dict[str, object] = {
        "fault": name,
        "accepted_before": accepted,
        "dropped": dropped,
        "reconnected": sum(len(c.ready) > sessions[c] for c in run.clients),
        "resumed_s": round(resumed_s, 2) if resumed else None,
        "caught_up_s": round(time.monotonic() - started, 2) if caught_up else None,
    }
    print(figures)
    return figures


def not_ready(run: Run) -> str:
    """The clients without a ``ready`` yet: how many of each transport, and a few with their state."""
    waiting = [c for c in run.clients if not c.ready]
    kinds = {kind: sum(c.transport == kind for c in waiting) for kind in ("ws", "sse")}
    sample = [(repr(c), c.connects, c.errors[-2:], c.violations[-2:]) for c in waiting[:5]]
    return f"{len(waiting)} of {len(run.clients)} {kinds}, e.g. {sample}"


async def connections(topology: Topology) -> list[int]:
    return [
        int(await metric(topology.port_of(g), "tidings_connections")) for g in topology.replicas["gateway"]
    ]


async def storms(run: KeyedRun, topology: Topology) -> list[dict[str, object]]:
    """The two storms, each once its share of the events is accepted, while the producers go on."""
    gateway = topology.replicas["gateway"][0]

    async def kill_gateway() -> None:
        await gateway.kill()

    async def kill_front_door() -> None:
        run.front_door_kill.set()  # the held producers send again: their requests meet the kill
        await topology.haproxy.kill()
        topology.haproxy.start()
        await until_routing(topology)

    assert await wait_until(lambda: run.accepted >= GATEWAY_AT * run.plan.events, 120.0)
    spread = await connections(topology)
    figures = [await storm(run, "kill -9 gateway0", kill_gateway, spread[0])]
    figures[0]["spread_before"] = spread
    figures[0]["gateway0_restart_s"] = round(await restart(topology, gateway), 2)
    assert await wait_until(lambda: run.accepted >= FRONT_AT * run.plan.events, 120.0)
    figures.append(
        await storm(run, "kill -9 haproxy (every client drops)", kill_front_door, len(run.clients))
    )
    figures[1]["spread_after"] = await connections(topology)
    return figures


@pytest.mark.parametrize(
    "plan",
    [
        pytest.param(SHORT, id="short", marks=pytest.mark.timeout(400)),
        pytest.param(SOAK, id="soak", marks=[pytest.mark.slow, pytest.mark.timeout(900)]),
    ],
)
@pytest.mark.parametrize(
    "broker_name", ["redis", pytest.param("rabbitmq", marks=[pytest.mark.slow, pytest.mark.timeout(600)])]
)
async def test_every_client_comes_back_after_a_reconnect_storm_and_nothing_is_lost(
    broker_name: str,
    plan: Plan,
    start_broker: StartBroker,
    children: Children,
    namespace: str,
    tmp_path: Path,
) -> None:
    require("haproxy (apt-get install -y haproxy)", HAPROXY is not None)
    broker = await start_broker(broker_name)
    topology = await start_fleet(
        children, broker.url, namespace, {"api": 1, "worker": 1, "gateway": 2}, {"gateway": GATEWAY}
    )
    async with KeyedRun(FrontDoor(tmp_path / "cli", topology, broker.url, namespace), plan) as run:
        connected = time.monotonic()
        all_ready = await wait_until(lambda: all(c.ready for c in run.clients), RECOVER_WITHIN)
        assert all_ready, f"clients not ready: {not_ready(run)}"
        cold_s = time.monotonic() - connected
        producing = asyncio.create_task(run.produce())
        try:
            figures = await storms(run, topology)
            await producing
        finally:
            producing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await producing
        produced = time.monotonic()
        problems = await run.check()
        checked = time.monotonic()
    summary = {
        "engine": broker_name,
        "load": round(os.getloadavg()[0], 1),
        "events": run.accepted,
        "clients": len(run.clients),
        "fleet_start_s": round(topology.timings["start"], 1),
        "cold_connect_s": round(cold_s, 2),
        "produce_s": round(produced - connected - cold_s, 1),
        "settle_and_check_s": round(checked - produced, 1),
        "producer_retries": sum(p.retries for p in run.producers),
        "storms": figures,
    }
    print(summary)
    (children.logs / "storm.txt").write_text(f"{summary}\n" + "\n".join(problems) + "\n")
    exited = children.exited()
    assert not exited, f"replicas that died on their own: {exited}"
    assert not problems, "\n".join(problems[:40])
    # A client under a storm gets a 503, an `unavailable` end or a close 1012, never an internal error.
    unhandled = [
        f"{log.name}: {line[:300]}"
        for log in sorted(children.logs.glob("*.log"))
        for line in log.read_text(errors="replace").splitlines()
        if "unhandled error" in line
    ]
    assert not unhandled, "\n".join(unhandled[:10])
    assert figures[0]["dropped"], "gateway0 held no client: the storm hit nobody"
    for fault in figures:
        assert fault["resumed_s"] is not None, f"not every dropped client came back: {fault}"
        assert fault["caught_up_s"] is not None, f"not every client caught up: {fault}"
