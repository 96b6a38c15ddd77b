"""A roles-split fleet of any size: ``tidings api``, ``worker`` and ``gateway`` replicas in processes of their
own on PostgreSQL and a broker of the test's own, haproxy in front, and settings per role.

``tests/scaleout/topology.py`` starts the fixed 2-2-2 topology of the scale-out runs; the slow-consumer and
storm runs need fewer replicas (one worker keeps each producer's order without ordering keys, one API is
enough to feed a storm) and settings for one role only (the gateway's outbox limit), so this builds the same
``Topology`` from the same pieces (ports, argv, environment, haproxy config) with the counts given.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping

from e2e.harness import role_port
from scaleout.processes import Child, Children
from scaleout.topology import (
    HAPROXY,
    Topology,
    haproxy_config,
    replica_argv,
    replica_env,
    until_answers,
    until_ready,
)

ROLES = ("api", "worker", "gateway")


async def start_fleet(
    children: Children,
    broker_url: str,
    namespace: str,
    counts: Mapping[str, int],
    settings: Mapping[str, Mapping[str, object]] | None = None,
) -> Topology:
    """``counts[role]`` replicas of each role (at least one API and one gateway), each with the topology's
    settings plus ``settings[role]``; haproxy in front once all are ready. Returns once haproxy routes."""
    started = time.monotonic()
    replicas: dict[str, list[Child]] = {}
    ports: dict[str, int] = {}
    taken: set[int] = set()
    for role in ROLES:
        env = replica_env(namespace, **(settings or {}).get(role, {}))
        for i in range(counts.get(role, 0)):
            name, port = f"{role}{i}", role_port(taken)
            ports[name] = port
            replicas.setdefault(role, []).append(
                children.spawn(name, replica_argv(role, port, broker_url), env)
            )
    await asyncio.gather(*(until_ready(r, ports[r.name]) for rs in replicas.values() for r in rs))
    public = role_port(taken)
    config = children.logs / "haproxy.cfg"
    backends = {role: [ports[r.name] for r in replicas[role]] for role in ("api", "gateway")}
    config.write_text(haproxy_config(public, backends))
    assert HAPROXY is not None, "haproxy is not installed"
    haproxy = children.spawn("haproxy", [HAPROXY, "-db", "-f", str(config)], os.environ)
    topology = Topology(public, replicas, ports, haproxy)
    await until_routing(topology)
    topology.timings["start"] = time.monotonic() - started
    return topology


async def until_routing(topology: Topology) -> None:
    """Until haproxy routes to an API replica and to a gateway (after its start or restart)."""
    await until_answers(topology.base_url, "/readyz", 200, topology.haproxy)
    await until_answers(topology.base_url, "/v1/stream", 401, topology.haproxy)


def url_of(topology: Topology, replica: Child) -> str:
    """The replica's own address, bypassing haproxy."""
    return f"http://127.0.0.1:{topology.port_of(replica)}"
