"""Redis (Streams event log, pub/sub bus) on the shared server; TIDINGS_TEST_REDIS_URL points elsewhere."""

from __future__ import annotations

import os

from redis.asyncio import Redis
from redis.exceptions import RedisError

from tidings.backends.redis import RedisBus, RedisEventLog
from tidings.core.models import PRIORITIES
from tidings.ports import Bus, EventLog, Store
from tidings.settings import Settings

NAME = "redis"
URL = os.environ.get("TIDINGS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
# Short, so a test can wait out a lease; long enough that a loaded machine renews leases in time.
ACK_WAIT = 1.0
LEASE = 1.0  # partition leases: short, so a second worker gets a share and a dead one's partitions move fast


async def available() -> bool:
    client = Redis.from_url(URL, socket_connect_timeout=1.0, socket_timeout=1.0)
    try:
        return bool(await client.ping())
    except (RedisError, OSError):
        return False
    finally:
        await client.aclose()


async def open_log(settings: Settings, store: Store, ns: str) -> EventLog:
    return await RedisEventLog.open(
        URL,
        settings.replace(namespace=ns, ack_wait=ACK_WAIT, log_lease=min(settings.log_lease, LEASE)),
        store,
    )


async def open_bus(settings: Settings, ns: str) -> Bus:
    return await RedisBus.open(URL, settings.replace(namespace=ns))


async def cleanup(ns: str) -> None:
    """Deletes the namespace's streams and dedupe keys (the bus leaves no keys behind)."""
    client = Redis.from_url(URL)
    try:
        await client.delete(*(f"{ns}:events:{lane}" for lane in PRIORITIES))
        for pattern in (f"{ns}:events:*", f"{ns}:partitions:*"):  # partition streams, leases, members
            async for key in client.scan_iter(match=pattern, count=1000):  # ends with the keyspace
                await client.delete(key)
        async for key in client.scan_iter(match=f"{ns}:appended:*", count=1000):  # ends with the keyspace
            await client.delete(key)
    finally:
        await client.aclose()
