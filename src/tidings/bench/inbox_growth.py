"""How the per-row cost grows with the inbox (issue 12, "cost growth"): PostgreSQL at 10k → 10M inbox rows.

For each size, a fresh namespace is loaded with that many rows over ``users`` users (``retention._load``:
gap-free seqs, their counters, keys built after the load, ``ANALYZE``), then, in this one process:

1. ``rounds`` fan-out blocks through ``store.inbox.write`` (the worker's write: chunks of 1,000 users, one
   transaction each) to users that hold rows: rows/s, and the CPU of this process and of the PostgreSQL
   backends serving its pool, per row;
2. ``reads`` opening reads of the streams of users that hold rows (``inbox.openings``, batches of 100: last seq,
   retention floor and first page of 50 rows) and as many page reads (``inbox.page``, newest 50): CPU per read.

The backends' CPU is read from ``/proc/<pid>/stat`` of the PostgreSQL processes whose client port is one of
this process's sockets (local PostgreSQL only), so other work on the same server is not counted.

    python -m tidings.bench.inbox_growth --sizes 10000,100000,1000000,10000000 [--postgres URL]

The namespaces (schemas of their own) are dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import secrets
import statistics
import time
from pathlib import Path
from typing import Any

import orjson

from tidings.bench import retention
from tidings.bench.procs import cpu_seconds
from tidings.settings import Settings

USERS = 10_000
ROUNDS = 3
BLOCK = 20_000  # rows per fan-out block (20 chunks of 1,000 users)
READS = 2_000
OPEN_BATCH = 100
PAGE = 50


def _own_ports() -> set[int]:
    """Local TCP ports of this process's sockets."""
    inodes = set()
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[9] in inodes:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


class BackendCpu:
    """CPU of the PostgreSQL backends serving this process (their pids found by client port)."""

    def __init__(self, url: str) -> None:
        self._url = url
        self.pids: list[int] = []

    async def find(self) -> None:
        import asyncpg  # type: ignore[import-untyped]

        conn = await asyncpg.connect(self._url)
        try:
            ports = _own_ports()
            rows = await conn.fetch(
                "SELECT pid, client_port FROM pg_stat_activity WHERE pid <> pg_backend_pid()"
            )
        finally:
            await conn.close()
        self.pids = [row["pid"] for row in rows if row["client_port"] in ports]

    def seconds(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.pids)


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _measure(
    store: Any, backends: BackendCpu, users: int, per_user: int, block: int, reads: int
) -> dict[str, Any]:
    await retention._fanout(store, users, 2 * 1000, "w-")  # fills the pool: every backend is seen
    await backends.find()
    rates, own_us, db_us = [], [], []
    for r in range(ROUNDS):
        own, db = _own_cpu(), backends.seconds()
        rates.append(await retention._fanout(store, users, block, f"b{r}-"))
        own_us.append((_own_cpu() - own) / block * 1e6)
        db_us.append((backends.seconds() - db) / block * 1e6)
    step = max(1, users // reads)
    readers = [f"u{u:07d}" for u in range(0, users, step)][:reads]
    own, db, started = _own_cpu(), backends.seconds(), time.perf_counter()
    after = max(0, per_user - 10)  # a client 10 behind: its first page holds the 10 it missed
    for first in range(0, len(readers), OPEN_BATCH):
        await store.inbox.openings(
            [(retention.APP, u, after) for u in readers[first : first + OPEN_BATCH]], PAGE
        )
    open_wall = (time.perf_counter() - started) / len(readers) * 1e6
    open_own, open_db = (
        (_own_cpu() - own) / len(readers) * 1e6,
        (backends.seconds() - db) / len(readers) * 1e6,
    )
    own, db, started = _own_cpu(), backends.seconds(), time.perf_counter()
    for user in readers:
        await store.inbox.page(retention.APP, user, after=None, before=None, limit=PAGE, unread_only=False)
    page_wall = (time.perf_counter() - started) / len(readers) * 1e6
    page_own, page_db = (
        (_own_cpu() - own) / len(readers) * 1e6,
        (backends.seconds() - db) / len(readers) * 1e6,
    )
    return {
        "fanout_rows_per_second": round(statistics.median(rates)),
        "fanout_rows_per_second_rounds": [round(x) for x in rates],
        "fanout_client_cpu_us_per_row": round(statistics.median(own_us), 1),
        "fanout_db_cpu_us_per_row": round(statistics.median(db_us), 1),
        "open_wall_us_per_stream": round(open_wall),
        "open_client_cpu_us_per_stream": round(open_own),
        "open_db_cpu_us_per_stream": round(open_db),
        "page_wall_us": round(page_wall),
        "page_client_cpu_us": round(page_own),
        "page_db_cpu_us": round(page_db),
        "backends": len(backends.pids),
    }


async def run_size(
    *, url: str, rows: int, users: int, settings: Settings, block: int = BLOCK, reads: int = READS
) -> dict[str, Any]:
    from tidings.backends.sql.postgres import PostgresStore

    schema = "bench_growth_" + secrets.token_hex(4)
    s = settings.replace(store=url, namespace=schema)
    store: Any = await PostgresStore.open(url, s)
    try:
        per_user = max(1, rows // users)
        load_seconds = await retention._load(url, schema, per_user * users, users, 0.0, time.time())
        figures = await _measure(store, BackendCpu(url), users, per_user, block, reads)
        return {
            "scenario": "inbox-growth",
            "kind": "postgresql",
            "namespace": schema,
            "rows": per_user * users,
            "users": users,
            "rows_per_user": per_user,
            "load_seconds": round(load_seconds, 1),
            **figures,
            "load": round(os.getloadavg()[0], 2),
        }
    finally:
        await store.close()
        await retention._drop(url, schema)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tidings.bench.inbox_growth")
    parser.add_argument("--postgres", default=retention.POSTGRES)
    parser.add_argument("--sizes", default="10000,100000,1000000,10000000")
    parser.add_argument("--users", type=int, default=USERS)
    args = parser.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]
    for rows in sizes:  # one JSON line per size, as each finishes
        result = asyncio.run(
            run_size(url=args.postgres, rows=rows, users=args.users, settings=Settings.from_env())
        )
        print(orjson.dumps(result).decode(), flush=True)


if __name__ == "__main__":
    main()
