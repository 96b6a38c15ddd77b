"""Scenario ``worker``: inbox rows per worker CPU-second, beside the raw insert of the same rows (the limit).

In its own process: ``events`` events of ``recipients`` named recipients each are appended to the log, then the
real worker (``FanoutWorker.process`` on what ``log.read`` hands out: planning, preferences, the inbox write
transaction with its decisions and counters, publish, ack) drains them, and the process CPU time it took is
the cost (``time.process_time``: every thread of the process, so SQLite's writer thread counts; the
PostgreSQL server's CPU does not). Then the *raw* pass writes the same number of rows, pre-rendered, into the
same tables with nothing else (``_raw_rows``: inbox rows, pending web push deliveries, two decisions per row,
the counter and cap-usage upserts), one transaction per ``fanout_chunk`` rows, as ``executemany`` on SQLite
and as ``COPY`` plus one ``unnest`` upsert per table on PostgreSQL. The ratio worker/raw says how far
the worker's per-row Python is from what the database driver alone costs.

The two passes alternate ``rounds`` times (fresh events and a fresh raw app each round), so both see the same
machine. Embedded: SQLite (the log in the same file). PostgreSQL: with Redis Streams as the log, in a namespace
(schema, key prefix) of its own, dropped afterwards.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Sequence
from typing import Any

import orjson

from tidings.backends.sql import rows as write_rows
from tidings.bench.procs import emit

REDIS = "redis://127.0.0.1:6379/0"
DATA = {"text": "x" * 100}  # ~100 bytes of event data: the rows are ~400 bytes of JSON each


def _event(app: str, round_: int, index: int, users: Sequence[str], grouped: bool) -> Any:
    from tidings.core.ids import new_id
    from tidings.core.models import Event

    return Event(
        id=new_id(time.time()),
        app=app,
        type="post.liked",
        accepted_at=time.time(),
        recipients=tuple(users),
        actor={"id": f"a{index}", "name": "Someone"},
        object={"type": "post", "id": f"p{round_}"},
        data=DATA,
        group_key=f"post:{round_}" if grouped else None,
    )


async def _worker_pass(runtime: Any, worker: Any, app: str, round_: int, spec: dict[str, Any]) -> float:
    """Appends the round's events, then CPU seconds for the worker to fan them all out."""
    from tidings.ports import Append

    users = [f"u{i:06d}" for i in range(spec["recipients"])]
    events = [_event(app, round_, i, users, spec.get("grouped", False)) for i in range(spec["events"])]
    await runtime.log.append([Append(e) for e in events])
    done, deadline = 0, time.monotonic() + spec.get("timeout", 600.0)
    started = time.process_time()
    while done < len(events) and time.monotonic() < deadline:
        batch = await runtime.log.read(runtime.settings.worker_batch, timeout=0.5)
        if batch:
            await worker.process(batch)
            done += len(batch)
    if done < len(events):
        raise RuntimeError(f"the worker took {done} of {len(events)} events before the timeout")
    return time.process_time() - started


Chunk = dict[str, list[list[Any]]]  # table -> rows of one raw transaction


def _raw_rows(app: str, spec: dict[str, Any], chunk: int) -> list[Chunk]:
    """The raw pass's transactions, rendered before the clock starts: what the worker's write transaction
    stores for an app with the default rules (in-app on, web push on with a cap), row for row: the inbox row,
    the pending web push delivery (``deferred``), the two decisions (in-app, web push), and per user the
    counters (``user_seqs``) and the cap's usage (``channel_usage``)."""
    from tidings.core.aggregation import id_source
    from tidings.core.models import InboxWrite, render_notification

    now = time.time()
    ids = id_source(now)
    users = [f"u{i:06d}" for i in range(spec["recipients"])]
    rows: list[list[Any]] = []
    for index in range(spec["events"]):
        event = _event(app, 0, index, users, grouped=False)
        for user in users:
            write = InboxWrite(app, user, event)
            nid = ids()
            payload = render_notification(write, seq=index + 1, notification_id=nid, created_at=now)
            rows.append(
                [app, user, index + 1, nid, event.id, payload, None, now, None, None, None, event.type]
            )
    chunks = []
    for start in range(0, len(rows), chunk):
        part = rows[start : start + chunk]
        last = {row[1]: row[2] for row in part}
        chunks.append(
            {
                "inbox": part,
                "deferred": [
                    [app, r[1], r[2], "web_push", r[4], now, "app default", False, now, None, None]
                    for r in part
                ],
                "decisions": [
                    [app, r[4], r[1], kind, channel, "app default", r[2], None, now]
                    for r in part
                    for kind, channel in (("deliver", "in_app"), ("deliver", "web_push"))
                ],
                "user_seqs": [[app, user, seq, 1, 1, 0] for user, seq in sorted(last.items())],
                "channel_usage": [[app, user, "web_push", now, 1] for user in sorted(last)],
            }
        )
    return chunks


COLUMNS = {
    # The write path's own column orders; the raw inbox rows leave out the aggregation chain (no groups here).
    "inbox": write_rows.INBOX_COLUMNS[: write_rows.INBOX_COLUMNS.index("chain")],
    "deferred": write_rows.DEFERRED_COLUMNS,
    "decisions": write_rows.DECISION_COLUMNS,
    "user_seqs": ("app", "user_id", "last_seq", "unread", "unseen", "archived"),
    "channel_usage": ("app", "user_id", "channel", "window_start", "count"),
}
TAILS = {
    "inbox": "",
    "deferred": "",
    "decisions": " ON CONFLICT DO NOTHING",
    "user_seqs": (
        " ON CONFLICT (app, user_id) DO UPDATE SET last_seq = excluded.last_seq,"
        " unread = user_seqs.unread + excluded.unread, unseen = user_seqs.unseen + excluded.unseen,"
        " archived = user_seqs.archived + excluded.archived"
    ),
    "channel_usage": (
        " ON CONFLICT (app, user_id, channel)"
        " DO UPDATE SET window_start = excluded.window_start, count = excluded.count"
    ),
}
COPIED = ("inbox", "deferred", "decisions")  # PostgreSQL: COPY; the upserts go as one unnest statement each
ARRAY_TYPES = {
    "user_seqs": "text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[]",
    "channel_usage": "text[], $2::text[], $3::text[], $4::float8[], $5::bigint[]",
}


async def _raw_sqlite(store: Any, chunks: Sequence[Chunk]) -> float:
    def insert(conn: Any, chunk: Chunk) -> None:
        driver = conn.connection.driver_connection
        for table, rows in chunk.items():
            names = COLUMNS[table]
            marks = ", ".join("?" * len(names))
            sql = f"INSERT INTO {table} ({', '.join(names)}) VALUES ({marks}){TAILS[table]}"
            driver.executemany(sql, rows)

    started = time.process_time()
    for chunk in chunks:
        await store.db.write(lambda conn, c=chunk: insert(conn, c))
    return time.process_time() - started


async def _raw_postgres(url: str, schema: str, chunks: Sequence[Chunk]) -> float:
    import asyncpg  # type: ignore[import-untyped]

    upserts = {
        table: f"INSERT INTO {table} ({', '.join(COLUMNS[table])}) SELECT * FROM unnest($1::{types})"
        + TAILS[table]
        for table, types in ARRAY_TYPES.items()
    }
    conn = await asyncpg.connect(url, server_settings={"search_path": schema})
    try:
        started = time.process_time()
        for chunk in chunks:
            async with conn.transaction():
                for table in COPIED:
                    await conn.copy_records_to_table(
                        table, records=chunk[table], columns=list(COLUMNS[table])
                    )
                for table, sql in upserts.items():
                    await conn.execute(sql, *(list(column) for column in zip(*chunk[table], strict=True)))
        return time.process_time() - started
    finally:
        await conn.close()


async def _drop(url: str, schema: str) -> None:
    import asyncpg
    import redis.asyncio as redis

    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()
    client = redis.from_url(REDIS)
    try:
        async for key in client.scan_iter(match=f"{schema}:*", count=1000):
            await client.delete(key)
    finally:
        await client.aclose()


async def run(spec: dict[str, Any]) -> None:
    """The child: ``spec`` holds store ("sqlite" or a postgresql URL), data (a directory), events, recipients,
    rounds, tag (makes the namespace unique), grouped (events share a group key), timeout."""
    from tidings.auth import create_app_record
    from tidings.cli import _tune_gc
    from tidings.service import close_runtime, open_runtime
    from tidings.settings import Settings
    from tidings.worker import FanoutWorker

    _tune_gc()  # as ``tidings worker`` does at start-up: its per-chunk collection then walks the young heap only
    postgres = spec["store"].startswith("postgres")
    namespace = f"bench_worker_{spec['tag']}"
    settings = Settings(data=spec["data"], namespace=namespace)  # synchronous=FULL: the default, durable
    if postgres:
        settings = settings.replace(store=spec["store"], broker=REDIS)
    runtime = await open_runtime(settings)
    worker = FanoutWorker(runtime)
    rows = spec["events"] * spec["recipients"]
    try:
        for round_ in range(spec["rounds"]):
            app = (await create_app_record(runtime.store, f"bench{round_}", [], time.time()))["app"]
            gc_before = worker.gc_seconds
            cpu = await _worker_pass(runtime, worker, app, round_, spec)
            gc_seconds = worker.gc_seconds - gc_before
            raw_app = (await create_app_record(runtime.store, f"raw{round_}", [], time.time()))["app"]
            chunks = _raw_rows(raw_app, spec, settings.fanout_chunk)
            if postgres:
                raw = await _raw_postgres(spec["store"], namespace, chunks)
            else:
                raw = await _raw_sqlite(runtime.store, chunks)
            del chunks
            emit(
                "round",
                rows=rows,
                worker_cpu=cpu,
                raw_cpu=raw,
                gc_seconds=gc_seconds,
                load=os.getloadavg()[0],
            )
    finally:
        await close_runtime(runtime)
        if postgres:
            await _drop(spec["store"], namespace)
    emit("done")


async def run_worker(
    store: str, events: int, recipients: int, rounds: int, grouped: bool = False
) -> dict[str, Any]:
    """The parent's side: one child, ``rounds`` alternated worker/raw passes; medians of the rates."""
    from tidings.bench.harness import median, profile_child, workdir
    from tidings.bench.procs import Child, python_child

    work = workdir()
    spec = {
        "store": store,
        "data": str(work),
        "events": events,
        "recipients": recipients,
        "rounds": rounds,
        "grouped": grouped,
        "tag": f"{os.getpid()}_{int(time.time())}",
    }
    engine = "postgresql" if store.startswith("postgres") else "sqlite"
    child = await Child.start("worker", python_child("worker-rows", orjson.dumps(spec).decode()))
    profiler = await profile_child(child, f"worker-{engine}")
    found: list[dict[str, Any]] = []
    try:
        for _ in range(rounds):
            found.append(await child.expect("round", 900))
        await child.expect("done", 120)
    finally:
        await child.stop()
        if profiler is not None:
            await profiler.wait()
        shutil.rmtree(work)
    worker = median([r["rows"] / r["worker_cpu"] for r in found])
    raw = median([r["rows"] / r["raw_cpu"] for r in found])
    return {
        "scenario": "worker",
        "kind": f"{engine}{' grouped' if grouped else ''}",
        "events": events,
        "recipients": recipients,
        "rows": events * recipients,
        "ok": True,
        "rows_per_cpu_second": round(worker),
        "raw_rows_per_cpu_second": round(raw),
        "ratio": round(worker / raw, 3),
        "us_per_row": round(1e6 / worker, 1),
        "rounds": found,
        "load": round(median([r["load"] for r in found]), 2),
    }
