"""Child process of ``test_sqlite_log_crash.py``: appends to the SQLite event log until it is killed.

It prints each event id on its own line only after ``append`` returned for it: a printed id is an event the
API would have answered 202 for. Usage: ``python log_crash_child.py <store url> <prefix>``.
"""

from __future__ import annotations

import asyncio
import sys
import time

from tidings.backends.sql.sqlite import SqliteStore
from tidings.core.models import Event
from tidings.ports import Append, Appended
from tidings.settings import Settings

PRODUCERS = 8
MAX_APPENDS = 100_000  # per producer; the parent kills the process long before


def event(event_id: str) -> Event:
    return Event(id=event_id, app="app1", type="post.liked", accepted_at=time.time(), recipients=("alice",))


async def produce(store: SqliteStore, settings: Settings, prefix: str, producer: int) -> None:
    log = store.embedded_log(settings)
    for i in range(MAX_APPENDS):
        size = 1 + i % 3  # single events and small batches, as the API sends them
        items = [Append(event(f"{prefix}-{producer}-{i}-{j}")) for j in range(size)]
        results = await log.append(items)
        lines = "".join(f"{r.event_id}\n" for r in results if isinstance(r, Appended))
        sys.stdout.write(lines)
        sys.stdout.flush()


async def main(url: str, prefix: str) -> None:
    settings = Settings()  # sqlite_synchronous FULL, the default
    store = await SqliteStore.open(url, settings)
    await asyncio.gather(*(produce(store, settings, prefix, n) for n in range(PRODUCERS)))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
