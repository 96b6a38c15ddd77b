"""Scenario (e), in its own process: one event to a topic of N followers, timed until every inbox row exists.

The followers are loaded in bulk (straight into ``topic_subscribers``: the subscribe API is not what is
measured), then the event is appended to the log and the unchanged ``FanoutWorker`` loop fans it out (split
into chunk jobs on the log, inbox writes per chunk, publish after each commit); the clock stops when the inbox
holds a row per follower. Embedded: SQLite (the log in the same file). PostgreSQL: with Redis Streams as the log,
in a namespace (schema, key prefix) of its own, dropped afterwards.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from tidings.bench.procs import emit

TOPIC = "followers:celebrity"


async def _load_followers_sqlite(store: Any, app: str, n: int) -> None:
    def insert(conn: Any) -> None:
        rows = ((app, TOPIC, f"f{i:07d}", 0.0) for i in range(n))
        conn.connection.driver_connection.executemany(
            "INSERT INTO topic_subscribers (app, topic, user_id, created_at) VALUES (?, ?, ?, ?)", rows
        )

    await store.db.write(insert)


async def _load_followers_postgres(url: str, schema: str, app: str, n: int) -> None:
    import asyncpg  # type: ignore[import-untyped]

    conn = await asyncpg.connect(url, server_settings={"search_path": schema})
    try:
        rows = ((app, TOPIC, f"f{i:07d}", 0.0) for i in range(n))
        await conn.copy_records_to_table(
            "topic_subscribers", records=rows, columns=["app", "topic", "user_id", "created_at"]
        )
    finally:
        await conn.close()


async def _drop_schema(url: str, schema: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


async def _count_rows(store: Any, app: str) -> int:
    from sqlalchemy import func, select

    from tidings.db.schema import inbox

    query = select(func.count()).select_from(inbox).where(inbox.c.app == app)

    async def count_pg(conn: Any) -> int:
        return int((await conn.execute(query)).scalar_one())

    def count_sqlite(conn: Any) -> int:
        return int(conn.execute(query).scalar_one())

    return int(await store.db.read(count_pg if hasattr(store.db, "schema") else count_sqlite))


async def _drop_redis(url: str, prefix: str) -> None:
    import redis.asyncio as redis

    client = redis.from_url(url)
    try:
        async for key in client.scan_iter(match=f"{prefix}:*", count=1000):
            await client.delete(key)
    finally:
        await client.aclose()


async def _until_rows(store: Any, app: str, n: int, timeout: float) -> int:
    """Polls the inbox row count (twice a second) until it reaches ``n``; returns the last count."""
    deadline = time.perf_counter() + timeout
    rows = 0
    while time.perf_counter() < deadline:
        rows = await _count_rows(store, app)
        if rows >= n:
            break
        await asyncio.sleep(0.5)
    return rows


async def run(args: dict[str, Any]) -> None:
    """``args``: store ("sqlite" or a postgresql URL), broker (for PostgreSQL), data (a directory),
    followers, tag (makes the namespace unique), timeout."""
    from tidings.auth import create_app_record
    from tidings.core.models import Event
    from tidings.ports import Append
    from tidings.service import close_runtime, open_runtime
    from tidings.settings import Settings
    from tidings.worker import FanoutWorker

    postgres = args["store"].startswith("postgres")
    namespace = f"bench_celebrity_{args['tag']}"
    settings = Settings(data=args["data"], sqlite_synchronous="NORMAL", namespace=namespace)
    if postgres:
        settings = settings.replace(store=args["store"], broker=args["broker"])
    runtime = await open_runtime(settings)
    store = runtime.store
    worker = FanoutWorker(runtime)
    task = asyncio.create_task(worker.run())
    try:
        app = (await create_app_record(store, "bench", [], time.time()))["app"]
        loaded = time.perf_counter()
        if postgres:
            await _load_followers_postgres(args["store"], namespace, app, args["followers"])
        else:
            await _load_followers_sqlite(store, app, args["followers"])
        loaded = time.perf_counter() - loaded
        event = Event(id="celebrity-1", app=app, type="post.created", accepted_at=time.time(), topic=TOPIC)
        started = time.perf_counter()
        await runtime.log.append([Append(event)])
        rows = await _until_rows(store, app, args["followers"], args.get("timeout", 600.0))
        seconds = time.perf_counter() - started
    finally:
        worker.stop()
        await task
        await close_runtime(runtime)
        if postgres:
            await _drop_schema(args["store"], namespace)
            if args["broker"].startswith("redis"):
                await _drop_redis(args["broker"], namespace)
    emit("done", seconds=seconds, rows=rows, load_seconds=loaded)
