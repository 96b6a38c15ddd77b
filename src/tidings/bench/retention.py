"""The retention scenario: the sweep on PostgreSQL with millions of inbox rows, while a fan-out writes.

Load (not measured): ``rows`` inbox rows over ``users`` users (``rows / users`` each, gap-free seqs, their
counters), straight into the tables with ``INSERT ... SELECT generate_series`` (PostgreSQL builds the rows
itself), the first ``expired`` share of each user's seqs older than the age limit. Then, in this one process
(as in a worker, whose event loop runs both the fan-out and the sweeper):

1. ``ROUNDS`` times, alternated (a machine shared with other work drifts): a fan-out block alone, inbox rows
   written in chunks of 1000 users (the worker's ``WRITE_CHUNK``, one transaction each) to users that hold rows,
   timed; then the same block while the sweeper (``Sweeper.sweep_app``, the settings' batch, users and pause)
   sweeps: the block's rows/s, the rows the sweep deleted per second over those windows, its longest batch;
2. the sweep alone for ``sweep_seconds`` (rows/s with the database to itself).

The slowdown is the median rows/s of the blocks alone over the median of the blocks with the sweep. Run as
``tidings bench run retention --postgres URL`` (the suite) or ``python -m tidings.bench.retention --rows N``.
The namespace (a schema of its own) is dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import statistics
import time
from typing import Any

import orjson

from tidings.core.models import Event, InboxWrite
from tidings.core.retention import Limits
from tidings.settings import Settings

POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
APP = "bench"
CHUNK = 1000  # the worker's WRITE_CHUNK
LOAD_CHUNK = 500_000  # rows per loading statement
ROUNDS = 4  # fan-out blocks without, then with the sweep, alternated
DAY = 86400.0


async def _load(url: str, schema: str, rows: int, users: int, expired: float, now: float) -> float:
    """Loads the rows; returns the seconds it took."""
    import asyncpg  # type: ignore[import-untyped]

    per_user = rows // users
    old = int(per_user * expired)
    conn = await asyncpg.connect(url, server_settings={"search_path": schema}, command_timeout=3600)
    started = time.perf_counter()
    try:
        # Keys are built once after the load (much faster than row by row): drop them, load, add them back.
        await conn.execute("SET synchronous_commit = off; SET maintenance_work_mem = '512MB'")
        keys = await conn.fetch(
            "SELECT conname, pg_get_constraintdef(oid) AS ddl FROM pg_constraint WHERE conrelid = 'inbox'::regclass"
        )
        for key in keys:
            await conn.execute(f'ALTER TABLE inbox DROP CONSTRAINT "{key["conname"]}"')
        await conn.execute(
            "INSERT INTO user_seqs (app, user_id, last_seq) "
            "SELECT $1, 'u' || lpad(u::text, 7, '0'), $2 FROM generate_series(0, $3 - 1) u",
            APP,
            per_user,
            users,
        )
        users_per_statement = max(1, LOAD_CHUNK // per_user)
        for first in range(0, users, users_per_statement):
            last = min(users, first + users_per_statement) - 1
            await conn.execute(
                "INSERT INTO inbox (app, user_id, seq, id, event_id, payload, group_key, created_at) "
                "SELECT $1, 'u' || lpad(u::text, 7, '0'), s, md5(u::text || '-' || s::text)::varchar(26), "
                '\'e\' || s::text, convert_to(\'{"seq":\' || s::text || \',"type":"post.liked",'
                '"actors":[{"id":"bob","name":"Bob"}],"data":{"text":"Bob liked your post"}}\', '
                "'UTF8'), NULL, CASE WHEN s <= $2 THEN $3::float8 ELSE $4::float8 END "
                "FROM generate_series($5::int, $6::int) u, generate_series(1, $7::int) s",
                APP,
                old,
                now - 2 * DAY,
                now - 60.0,
                first,
                last,
                per_user,
            )
        for key in keys:
            await conn.execute(f'ALTER TABLE inbox ADD CONSTRAINT "{key["conname"]}" {key["ddl"]}')
        await conn.execute("ANALYZE")
    finally:
        await conn.close()
    return time.perf_counter() - started


async def _drop(url: str, schema: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


async def _fanout(store: Any, users: int, total: int, tag: str) -> float:
    """``total`` rows in chunks of 1000 users; returns rows/s."""
    started = time.perf_counter()
    written = 0
    chunk_no = 0
    while written < total:
        first = (chunk_no * CHUNK) % max(1, users - CHUNK)
        event = Event(
            id=f"{tag}{chunk_no:06d}", app=APP, type="post.liked", accepted_at=0.0, recipients=("x",)
        )
        writes = [InboxWrite(APP, f"u{u:07d}", event) for u in range(first, first + CHUNK)]
        await store.inbox.write(writes)
        written += len(writes)
        chunk_no += 1
    return written / (time.perf_counter() - started)


async def run(
    *, url: str = POSTGRES, rows: int, users: int, fanout_rows: int, sweep_seconds: float, settings: Settings
) -> dict[str, Any]:
    from tidings.backends.sql.postgres import PostgresStore
    from tidings.sweeper import Sweeper

    schema = "bench_retention_" + secrets.token_hex(4)
    s = settings.replace(store=url, namespace=schema)
    store: Any = await PostgresStore.open(url, s)  # (the Store protocol, structurally)
    try:
        now = time.time()
        load_seconds = await _load(url, schema, rows, users, 0.5, now)
        limits = Limits(max_age=DAY)
        alone: list[float] = []
        sweeping: list[float] = []
        swept_during, swept_total, window, batches, longest = 0, 0, 0.0, 0, 0.0
        block = max(CHUNK, fanout_rows // ROUNDS)
        for r in range(ROUNDS):  # alternated, so both see the same (shared, changing) machine
            alone.append(await _fanout(store, users, block, f"a{r}-"))
            sweeper = Sweeper(store, s, store.clock)
            task = asyncio.create_task(sweeper.sweep_app(APP, limits))
            started = time.perf_counter()
            sweeping.append(await _fanout(store, users, block, f"b{r}-"))
            window += time.perf_counter() - started
            swept_during += sweeper.swept  # the batch in flight at the end is not counted
            batches += sweeper.batches
            longest = max(longest, sweeper.longest_batch)
            sweeper.stop()
            await task
            swept_total += sweeper.swept
        alone_sweeper = Sweeper(store, s, store.clock)
        task = asyncio.create_task(alone_sweeper.sweep_app(APP, limits))
        await asyncio.sleep(sweep_seconds)
        alone_sweeper.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        baseline, loaded = statistics.median(alone), statistics.median(sweeping)
        load = os.getloadavg()[0]  # the machine's 1-minute load at the end (shared machines vary)
        return {
            "scenario": "retention",
            "kind": "postgresql",
            "namespace": schema,
            "rows": rows,
            "users": users,
            "load_seconds": round(load_seconds, 1),
            "batch_rows": s.retention_batch,
            "batch_users": s.retention_users,
            "pause": s.retention_pause,
            "fanout_rows": block * ROUNDS,
            "rounds": ROUNDS,
            "fanout_rows_per_second_alone": round(baseline),
            "fanout_rows_per_second_alone_rounds": [round(x) for x in alone],
            "fanout_rows_per_second_sweeping": round(loaded),
            "fanout_rows_per_second_sweeping_rounds": [round(x) for x in sweeping],
            "fanout_slowdown": round(baseline / loaded, 3) if loaded else None,
            "swept_rows_per_second_during_fanout": round(swept_during / window),
            "sweep_batches_during_fanout": batches,
            "longest_batch_seconds_during_fanout": round(longest, 3),
            "swept_rows_per_second_alone": round(alone_sweeper.swept / sweep_seconds),
            "load": round(load, 2),
            "ok": swept_total + alone_sweeper.swept > 0,
        }
    finally:
        await store.close()
        await _drop(url, schema)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tidings.bench.retention")
    parser.add_argument("--postgres", default=POSTGRES)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--fanout-rows", type=int, default=50_000)
    parser.add_argument("--sweep-seconds", type=float, default=20.0)
    args = parser.parse_args()
    result = asyncio.run(
        run(
            url=args.postgres,
            rows=args.rows,
            users=args.users,
            fanout_rows=args.fanout_rows,
            sweep_seconds=args.sweep_seconds,
            settings=Settings.from_env(),
        )
    )
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
