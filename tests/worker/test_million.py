"""A celebrity's post: one event to a topic of a million followers, fanned out through chunk jobs on the log.

Slow (excluded from the default suite): ``pytest -m slow tests/worker/test_million.py -s`` prints the times.
``TIDINGS_FANOUT_N`` sets the number of followers (default 1,000,000). Embedded: SQLite with its own log and one
worker (the embedded log has one consumer). PostgreSQL: the inbox in PostgreSQL, the log on Redis Streams, and
two workers sharing the chunk jobs.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest
from redis.asyncio import Redis
from sqlalchemy import func, select

from tidings.backends.memory import MemoryBus
from tidings.backends.redis import RedisEventLog
from tidings.backends.sql.postgres import PostgresStore, quoted
from tidings.backends.sql.sqlite import SqliteStore
from tidings.core.clock import SystemClock
from tidings.core.models import PRIORITIES, Event
from tidings.db.schema import inbox
from tidings.ports import Append, EventLog
from tidings.runtime import Runtime
from tidings.settings import Settings
from tidings.worker import FanoutWorker

N = int(os.environ.get("TIDINGS_FANOUT_N", "1000000"))
IMPORT_BATCH = 10_000  # the API's bulk limit: followers are imported as the API would
PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
REDIS_URL = "redis://127.0.0.1:6379/0"
TOPIC = "followers:celebrity"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]


def celebrity_post() -> Event:
    now = time.time()
    return Event(
        id=f"CELEB{secrets.token_hex(10).upper()}"[:26],
        app="app1",
        type="post.created",
        accepted_at=now,
        topic=TOPIC,
        actor={"id": "celebrity", "name": "Celebrity"},
        object={"id": "post:1"},
        data={"text": "Hello, world"},
    )


async def import_followers(store: Any) -> float:
    started = time.perf_counter()
    for start in range(0, N, IMPORT_BATCH):
        users = [f"f{i:07d}" for i in range(start, min(N, start + IMPORT_BATCH))]
        await store.topics.subscribe_many("app1", TOPIC, users)
    return time.perf_counter() - started


async def drain(worker: FanoutWorker, log: EventLog, batch: int) -> None:
    """Reads and processes until the log has nothing left, handed out or not (bounded by the test timeout)."""
    while True:
        deliveries = await log.read(batch, timeout=0.2)
        if deliveries:
            await worker.process(deliveries)
        elif await log.lag() == 0:
            return


async def count_rows(store: Any) -> int:
    query = select(func.count()).select_from(inbox).where(inbox.c.app == "app1")
    if isinstance(store, SqliteStore):
        return int(await store.db.read(lambda conn: conn.execute(query).scalar()))
    return int(await store.db.read(lambda conn: _scalar(conn, query)))


async def _scalar(conn: Any, query: Any) -> Any:
    return (await conn.execute(query)).scalar()


def report(backend: str, imported: float, fanned: float) -> None:
    print(
        f"\n{backend}: {N:,} followers imported in {imported:.1f} s; fan-out of one event "
        f"to {N:,} inboxes in {fanned:.1f} s ({N / fanned:,.0f} notifications/s)"
    )


async def test_a_million_followers_on_the_embedded_backend(tmp_path: Path) -> None:
    """Every follower gets exactly one notification; the time is printed."""
    settings = Settings(data=str(tmp_path))  # synchronous FULL, as tidings serve runs
    store = await SqliteStore.open(settings.store_url, settings, SystemClock())
    log = store.embedded_log(settings)
    runtime = Runtime(settings, store, log, MemoryBus(), SystemClock())
    try:
        imported = await import_followers(store)
        started = time.perf_counter()
        await log.append([Append(celebrity_post())])
        await drain(FanoutWorker(runtime), log, settings.worker_batch)
        fanned = time.perf_counter() - started
        assert await count_rows(store) == N
        assert [n.seq for n in await store.inbox.backlog("app1", f"f{N - 1:07d}", 0, 10)] == [1]
        report("SQLite (embedded log, 1 worker)", imported, fanned)
    finally:
        await log.close()
        await store.close()


async def test_a_million_followers_on_postgresql_with_two_workers() -> None:
    """Two workers share the chunk jobs through Redis Streams; every follower gets exactly one notification."""
    ns = "t" + secrets.token_hex(5)
    # Chunk jobs are heavy: a small read batch lets the second worker take its share of them.
    settings = Settings(store=PG_URL, broker=REDIS_URL, namespace=ns, worker_batch=4)
    store = await PostgresStore.open(PG_URL, settings, SystemClock())
    logs = [await RedisEventLog.open(REDIS_URL, settings, store) for _ in range(2)]
    workers = [FanoutWorker(Runtime(settings, store, log, MemoryBus(), SystemClock())) for log in logs]
    try:
        imported = await import_followers(store)
        started = time.perf_counter()
        await logs[0].append([Append(celebrity_post())])
        await asyncio.gather(
            *(drain(w, log, settings.worker_batch) for w, log in zip(workers, logs, strict=True))
        )
        fanned = time.perf_counter() - started
        assert await count_rows(store) == N
        report("PostgreSQL (Redis Streams log, 2 workers)", imported, fanned)
    finally:
        for log in logs:
            await log.close()
        await store.close()
        await _cleanup(ns)


async def _cleanup(ns: str) -> None:
    conn = await asyncpg.connect(PG_URL, timeout=5)
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {quoted(ns)} CASCADE")
    finally:
        await conn.close()
    client = Redis.from_url(REDIS_URL)
    try:
        await client.delete(*(f"{ns}:events:{lane}" for lane in PRIORITIES))
    finally:
        await client.aclose()
