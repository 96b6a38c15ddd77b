"""haproxy's public address, in the shape of the e2e harness' server, so ``tests/e2e``'s ledger machinery
(``scenario.Run``: app, producers, clients, ledger check) runs unchanged against the scaled-out topology.

Producers POST to it, clients connect to it (haproxy spreads them over the gateways), the ledger reads inboxes
through it. ``tidings apps create`` runs against the shared store and namespace, as an operator would. It is
never started, stopped or killed itself: the test does that to the replicas behind it.
"""

from __future__ import annotations

from pathlib import Path

from e2e.harness import ServerProcess

from .topology import POSTGRES, Topology, replica_env


class FrontDoor(ServerProcess):
    def __init__(self, cli_dir: Path, topology: Topology, broker_url: str, namespace: str) -> None:
        # ``--data`` (which ``cli`` passes) is ignored when a store URL is set: the CLI acts on PostgreSQL.
        super().__init__(cli_dir, port=topology.public)
        self.env = replica_env(namespace, store=POSTGRES, broker=broker_url)
        self.topology = topology

    async def start(self, ready_timeout: float = 30.0) -> None:
        raise AssertionError("the front door is haproxy: start or kill the replicas behind it")

    async def kill(self) -> None:
        raise AssertionError("the front door is haproxy: start or kill the replicas behind it")
