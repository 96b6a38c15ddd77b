"""The NATS backends: the JetStream event log and the core-NATS live bus, on the shared server.

``TIDINGS_TEST_NATS`` overrides the server (default ``nats://127.0.0.1:4222``). Each test's streams are named
after its namespace and deleted by ``cleanup``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os

import nats
from nats.errors import Error as NatsError
from nats.js.errors import NotFoundError

from tidings.backends.nats import NatsBus, NatsEventLog
from tidings.core.models import PRIORITIES
from tidings.ports import Bus, EventLog, Store
from tidings.settings import Settings

NAME = "nats"
URL = os.environ.get("TIDINGS_TEST_NATS", "nats://127.0.0.1:4222")
ACK_WAIT = 2.0  # short, so redelivery tests stay fast; in-progress acks keep held events while a test runs
LEASE = 1.0  # partition leases: short, so a second worker gets a share and a dead one's partitions move fast


async def available() -> bool:
    try:
        async with asyncio.timeout(3.0):
            nc = await nats.connect(URL, allow_reconnect=False, connect_timeout=2)
    except (OSError, TimeoutError, NatsError):
        return False
    await nc.close()
    return True


async def open_log(settings: Settings, store: Store, ns: str) -> EventLog:
    return await NatsEventLog.open(
        URL,
        settings.replace(namespace=ns, ack_wait=ACK_WAIT, log_lease=min(settings.log_lease, LEASE)),
        store,
    )


async def open_bus(settings: Settings, ns: str) -> Bus:
    return await NatsBus.open(URL, settings.replace(namespace=ns))


async def cleanup(ns: str) -> None:
    nc = await nats.connect(URL, allow_reconnect=False, connect_timeout=2)
    try:
        js = nc.jetstream(timeout=3.0)
        for lane in PRIORITIES:
            with contextlib.suppress(NotFoundError):
                await js.delete_stream(f"{ns}_events_{lane}")
        with contextlib.suppress(NotFoundError):
            await js.delete_stream(f"KV_{ns}_partitions")  # the partition leases
    finally:
        await nc.close()
