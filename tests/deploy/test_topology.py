"""The compose topology run as local processes on the real engines: haproxy on the shipped config in front of
2 API and 2 gateway replicas, 2 workers, PostgreSQL as the store and NATS JetStream as the log and bus, every
replica started through the image's entrypoint with the settings of deploy/tidings.env (only the engines'
host names pointed at this machine, and a namespace of its own).
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import nats
import pytest

from e2e.harness import role_port

from . import live
from .support import env_file

POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"  # the shared server: trust auth, database `test`
NATS = "nats://127.0.0.1:4222"
ADMIN_TOKEN = "admin-" + secrets.token_hex(8)
REPLICAS = {"api": 2, "gateway": 2, "worker": 2}  # as deploy/docker-compose.yml runs them

pytestmark = pytest.mark.serial  # a fleet of six processes on the shared PostgreSQL: make test runs it alone


@dataclass
class _Fleet:
    ports: dict[str, list[int]]
    public: int


async def test_scaled_out_replicas_share_the_work_and_every_client_gets_every_notification(
    tmp_path: Path,
) -> None:
    """Events spread over both APIs and both workers, and each of 4 WebSockets gets seqs 1..6 in order."""
    live.require_haproxy()
    live.require("PostgreSQL on 127.0.0.1:5432", live.listening(5432))
    live.require("NATS on 127.0.0.1:4222", live.listening(4222))
    namespace = "deploytest_" + secrets.token_hex(4)
    try:
        async with (
            _fleet(tmp_path, namespace) as fleet,
            live.client(f"http://127.0.0.1:{fleet.public}") as http,
        ):
            created = await http.post("/v1/apps", json={"name": "acme"}, headers=live.bearer(ADMIN_TOKEN))
            assert created.status_code == 201, created.text  # the admin token came from the secret file
            credentials = created.json()
            token = live.user_token(credentials, "alice")
            async with contextlib.AsyncExitStack() as sockets:
                connections = [
                    await sockets.enter_async_context(live.websocket(fleet.public, token)) for _ in range(4)
                ]
                for i in range(6):
                    body = live.event("alice", f"post:{i}")
                    sent = await http.post(
                        "/v1/events", json=body, headers=live.bearer(credentials["api_key"])
                    )
                    assert sent.status_code == 202, sent.text
                for ws in connections:
                    assert await live.notification_seqs(ws, 6) == [1, 2, 3, 4, 5, 6]
            await _assert_shared(fleet)
    finally:
        await _drop(namespace)


async def _assert_shared(fleet: _Fleet) -> None:
    """Each replica of each role did part of the work, and together exactly all of it."""
    accepted = [await live.metric(p, "tidings_events_accepted_total") for p in fleet.ports["api"]]
    written = [await live.metric(p, "tidings_inbox_writes_total") for p in fleet.ports["worker"]]
    delivered = [await live.metric(p, "tidings_deliveries_total") for p in fleet.ports["gateway"]]
    assert sum(accepted) == 6, accepted
    assert all(n > 0 for n in accepted), accepted  # haproxy: round robin over the API replicas
    assert sum(written) == 6, written  # competing consumers: each event written once
    assert sum(delivered) == 24, delivered
    assert all(n > 0 for n in delivered), delivered  # haproxy: least connections over the gateways


@contextlib.asynccontextmanager
async def _fleet(tmp: Path, namespace: str) -> AsyncIterator[_Fleet]:
    secret = tmp / "tidings_admin_token"
    secret.write_text(ADMIN_TOKEN + "\n")
    env = _replica_env(namespace, secret)
    taken: set[int] = set()
    ports = {role: [role_port(taken) for _ in range(n)] for role, n in REPLICAS.items()}
    with live.processes(tmp) as running:
        started = [
            (port, running.start(f"{role}{i}", live.tidings_command(role, port), env))
            for role, role_ports in ports.items()
            for i, port in enumerate(role_ports)
        ]
        for port, replica in started:
            await live.ready(port, replica)
        public = role_port(taken)
        config = live.haproxy_config(tmp, {"api": ports["api"], "gateway": ports["gateway"]}, public)
        proxy = running.start("haproxy", ["haproxy", "-db", "-f", str(config)], env)
        async with live.client(f"http://127.0.0.1:{public}") as http:
            await live.poll(lambda: http.get("/readyz"), proxy)
            await live.poll(lambda: http.get("/v1/stream"), proxy, want=401)
        yield _Fleet(ports, public)


def _replica_env(namespace: str, secret: Path) -> dict[str, str]:
    """deploy/tidings.env, with the engines on this machine, a namespace of this test's own, and the secret
    file where this test wrote it."""
    settings = env_file()
    assert urlsplit(settings["TIDINGS_STORE"]).scheme == "postgresql"
    assert urlsplit(settings["TIDINGS_BROKER"]).scheme == "nats"
    settings |= {
        "TIDINGS_STORE": POSTGRES,
        "TIDINGS_BROKER": NATS,
        "TIDINGS_NAMESPACE": namespace,
        "TIDINGS_HOST": "127.0.0.1",
        "TIDINGS_ADMIN_TOKEN_FILE": str(secret),
    }
    return live.tidings_env() | settings


async def _drop(namespace: str) -> None:
    """Removes what the fleet created: its PostgreSQL schema and its JetStream streams."""
    connection = await asyncpg.connect(POSTGRES, timeout=5)
    try:
        await connection.execute(f'DROP SCHEMA IF EXISTS "{namespace}" CASCADE')
    finally:
        await connection.close()
    client = await nats.connect(NATS, allow_reconnect=False, connect_timeout=2)
    try:
        stream_api = client.jetstream(timeout=5)
        for stream in await stream_api.streams_info():
            if stream.config.name and stream.config.name.startswith(f"{namespace}_"):
                await stream_api.delete_stream(stream.config.name)
    finally:
        await client.close()
