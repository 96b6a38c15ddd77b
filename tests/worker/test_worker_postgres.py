"""The fan-out decisions on the scale-out backends: the inbox in PostgreSQL, the log on Redis Streams, two
workers sharing a topic's chunk jobs; a schema and key prefix per test, dropped afterwards."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg  # type: ignore[import-untyped]
import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from tidings.backends.memory import MemoryBus
from tidings.backends.redis import RedisEventLog
from tidings.backends.sql.postgres import PostgresStore, quoted
from tidings.core.models import PRIORITIES
from tidings.core.rules import UserPreferences
from tidings.ports import Append, EventLog
from tidings.runtime import Runtime
from tidings.settings import Settings
from tidings.testing import FakeClock
from tidings.worker import FanoutWorker

from .stack import event

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
REDIS_URL = os.environ.get("TIDINGS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
USERS = [f"f{i:03d}" for i in range(95)]


async def _reachable() -> bool:
    try:
        conn = await asyncpg.connect(PG_URL, timeout=2)
        await conn.close()
        redis = Redis.from_url(REDIS_URL, socket_connect_timeout=1.0)
        try:
            return bool(await redis.ping())
        finally:
            await redis.aclose()
    except (OSError, TimeoutError, asyncpg.PostgresError, RedisError):
        return False


@dataclass
class Cluster:
    store: PostgresStore
    logs: list[EventLog]
    workers: list[FanoutWorker]
    clock: FakeClock

    async def drain(self) -> list[int]:
        """Both workers take turns reading a few jobs each until the log is empty; returns jobs per worker."""
        taken = [0, 0]
        for _ in range(1000):  # bounded: each round processes what it read
            progress = False
            for index, (worker, log) in enumerate(zip(self.workers, self.logs, strict=True)):
                deliveries = await log.read(2, timeout=0.05)
                if deliveries:
                    progress = True
                    taken[index] += len(deliveries)
                    await worker.process(deliveries)
            if not progress and await self.logs[0].lag() == 0:
                return taken
        raise AssertionError("the log never emptied")


def _held(log: EventLog) -> int:
    """The partitions a worker's log may read now (the log's own bookkeeping: no public view of it)."""
    partitions = getattr(getattr(log, "inner", log), "_partitions", None)
    return len(partitions.readable()) if partitions is not None else 0


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    if not await _reachable():
        if os.environ.get("TIDINGS_TEST_REQUIRE"):
            pytest.fail("PostgreSQL or Redis is not reachable")
        pytest.skip("PostgreSQL or Redis is not reachable")
    ns, clock = "t" + secrets.token_hex(5), FakeClock()
    settings = Settings(
        store=PG_URL, broker=REDIS_URL, namespace=ns, fanout_chunk=10, fanout_split=4, log_lease=0.6
    )
    store = await PostgresStore.open(PG_URL, settings, clock)
    logs = [await RedisEventLog.open(REDIS_URL, settings, store) for _ in range(2)]
    # Until the two workers share the partitions of the log: a few lease rounds on a quiet machine, more on a
    # loaded one (a fixed count of rounds could leave one worker holding all of them). Bounded: ~20 s.
    for _ in range(100):
        await asyncio.gather(*(log.read(1, 0.2) for log in logs))
        if all(_held(log) for log in logs):
            break
    assert all(_held(log) for log in logs), "the two workers never shared the partitions"
    workers = [FanoutWorker(Runtime(settings, store, log, MemoryBus(), clock)) for log in logs]
    yield Cluster(store, logs, workers, clock)
    for log in logs:
        await log.close()
    await store.close()
    conn = await asyncpg.connect(PG_URL, timeout=5)
    await conn.execute(f"DROP SCHEMA IF EXISTS {quoted(ns)} CASCADE")
    await conn.close()
    redis = Redis.from_url(REDIS_URL)
    await redis.delete(*(f"{ns}:events:{lane}" for lane in PRIORITIES))
    for pattern in (f"{ns}:events:*", f"{ns}:partitions:*"):  # partition streams and leases
        async for key in redis.scan_iter(match=pattern, count=1000):
            await redis.delete(key)
    await redis.aclose()


async def test_two_workers_share_a_topics_chunk_jobs(cluster: Cluster) -> None:
    """95 followers in chunks of 10: both workers take jobs, every follower gets exactly one notification."""
    await cluster.store.topics.subscribe_many("app1", "followers:bob", USERS)
    await cluster.store.preferences.set_user("app1", "f007", UserPreferences(muted_actors=frozenset({"bob"})))
    await cluster.logs[0].append([Append(event("E1", topic="followers:bob"))])
    taken = await cluster.drain()
    assert all(n > 0 for n in taken), taken
    for user in USERS:
        rows = await cluster.store.inbox.backlog("app1", user, 0, 10)
        assert [r.event_id for r in rows] == ([] if user == "f007" else ["E1"]), user
    [muted] = await cluster.store.decisions.for_event("app1", "E1", user="f007", after=None, limit=5)
    assert (muted.kind, muted.reason) == ("suppress", "muted actor")


async def test_likes_aggregate_and_a_read_cancels_the_push(cluster: Cluster) -> None:
    """Ten likes through the log make one notification counting ten with one pending push; reading it
    cancels the push."""
    for n in range(10):
        await cluster.logs[n % 2].append([Append(event(f"E{n}", actor=f"u{n}", group="post:42:like"))])
        cluster.clock.advance(1)
    await cluster.drain()
    [shown] = await cluster.store.inbox.backlog("app1", "alice", 0, 10)
    assert shown.seq == 10
    assert await cluster.store.inbox.counts("app1", "alice") == (1, 1)
    [push] = await cluster.store.decisions.pending("app1", "alice")
    assert push.seq == 10
    await cluster.store.inbox.mark("app1", "alice", "read", seqs=[10], up_to=None, at=cluster.clock.time())
    assert await cluster.store.decisions.pending("app1", "alice") == []
