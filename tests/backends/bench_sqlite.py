"""A quick measurement of the SQLite backend; a script, not a test: ``python tests/backends/bench_sqlite.py``.

- event log appends per second through group commit, with ``synchronous`` FULL and NORMAL, for 1 producer
  (one commit per event) and for many concurrent producers (commits shared);
- inbox rows written per second in batches of 256 (one fan-out chunk per transaction).
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time

from tidings.backends.sql.sqlite import SqliteStore
from tidings.core.models import Event, InboxWrite
from tidings.ports import Append
from tidings.settings import Settings


def event(event_id: str) -> Event:
    return Event(
        id=event_id,
        app="app1",
        type="post.liked",
        accepted_at=time.time(),
        recipients=("alice",),
        actor={"id": "bob", "name": "Bob"},
        object={"id": "post:42"},
        data={"text": "Bob liked your post"},
        idempotency_key=f"key-{event_id}",
    )


async def open_store(synchronous: str) -> SqliteStore:
    settings = Settings(data=tempfile.mkdtemp(prefix="tidings-bench-"), sqlite_synchronous=synchronous)
    return await SqliteStore.open(settings.store_url, settings)


async def bench_appends(synchronous: str, producers: int, total: int) -> str:
    store = await open_store(synchronous)
    log = store.embedded_log(Settings(sqlite_synchronous=synchronous))
    per_producer = total // producers

    async def produce(p: int) -> None:
        for i in range(per_producer):
            await log.append([Append(event(f"{p}-{i}"), body_hash="h")])

    started = time.perf_counter()
    await asyncio.gather(*(produce(p) for p in range(producers)))
    elapsed = time.perf_counter() - started
    n = per_producer * producers
    line = (
        f"append  sync={synchronous:<6} producers={producers:<4} {n / elapsed:>9,.0f} events/s  "
        f"{log.flushes:>6} commits, {log.flushed_items / max(log.flushes, 1):6.1f} events/commit"
    )
    await log.close()
    await store.close()
    return line


async def bench_inbox(synchronous: str, batches: int, users: int) -> str:
    store = await open_store(synchronous)
    started = time.perf_counter()
    for b in range(batches):
        e = event(f"e{b}")
        # One fan-out chunk: one event to 256 users (users recur across batches, so counters exist).
        await store.inbox.write([InboxWrite("app1", f"user{(b * 256 + u) % users}", e) for u in range(256)])
    elapsed = time.perf_counter() - started
    await store.close()
    rows = batches * 256
    return (
        f"inbox   sync={synchronous:<6} batch=256      {rows / elapsed:>9,.0f} rows/s "
        f"({batches / elapsed:,.0f} batches/s)"
    )


async def main(scale: float) -> None:
    for synchronous in ("FULL", "NORMAL"):
        print(await bench_appends(synchronous, 1, int(2000 * scale)), flush=True)
        print(await bench_appends(synchronous, 200, int(40_000 * scale)), flush=True)
        print(await bench_inbox(synchronous, int(200 * scale), users=10_000), flush=True)


if __name__ == "__main__":
    asyncio.run(main(float(sys.argv[1]) if len(sys.argv) > 1 else 1.0))
