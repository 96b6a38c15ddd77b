"""Order by key across workers (issue 13): events with the same ordering key are fanned out in acceptance order
however many workers share the lane, on every broker log.

Four workers, each with an event log of its own (its own connection and consumer, as four ``tidings worker``
processes have), on one store; one more log appends, as an API process does (it never reads, so it takes no
partition). One producer sends events for 50 keys interleaved; each key is one recipient, so the order the
workers fanned a key's events out in is that recipient's inbox order (seq ascending). It must equal the order
the events were accepted in.

The embedded log is left out: one process consumes it (``memory://`` has no shared log), and one reader keeps
its order by construction (``test_event_log_contract``).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from backend_support import appends, make_event
from providers import LOGS, PROVIDERS, namespace, require

from tidings.backends.memory import MemoryBus
from tidings.backends.sql.sqlite import SqliteStore
from tidings.core.models import InboxWrite, StoredNotification
from tidings.ports import EventLog, Inbox
from tidings.runtime import Runtime
from tidings.settings import Settings
from tidings.testing import FakeClock
from tidings.worker import FanoutWorker

SHARED_LOGS = [name for name in LOGS if name != "sqlite"]
WORKERS = 4
KEYS = 50
PER_KEY = 16  # 800 events in all
WORKER_BATCH = 32  # 4 workers x 32 in flight span more than 50 keys: a key's next event is often in flight
APPEND_BATCH = 10  # events per append call: one producer, one call after the other
DONE_WITHIN = 60.0  # seconds for every inbox to be complete (bounded wait, not a timing assertion)


class UnevenInbox:
    """The store's inbox, each write taking 0-20 ms more (seeded): workers on machines of uneven speed, so
    which of two batches in flight commits first is not decided by which was read first."""

    def __init__(self, inbox: Inbox, seed: int) -> None:
        self._inbox = inbox
        self._random = random.Random(seed)

    async def write(self, writes: Sequence[InboxWrite]) -> list[StoredNotification]:
        await asyncio.sleep(self._random.uniform(0.0, 0.02))
        return await self._inbox.write(writes)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inbox, name)


class WorkerStore:
    """A worker's view of the shared store: the same store, with an ``UnevenInbox``."""

    def __init__(self, store: SqliteStore, seed: int) -> None:
        self._store = store
        self.inbox = UnevenInbox(store.inbox, seed)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


@dataclass
class Cluster:
    store: SqliteStore
    producer: EventLog
    logs: list[EventLog]
    workers: list[FanoutWorker]
    tasks: list[asyncio.Task[None]]


@pytest.fixture(params=SHARED_LOGS)
async def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Cluster]:
    provider = PROVIDERS[request.param]
    await require(provider)
    ns = namespace()
    # A short lease, so the partitions spread quickly.
    settings = Settings(
        data=str(tmp_path), sqlite_synchronous="NORMAL", worker_batch=WORKER_BATCH, log_lease=2.0
    )
    clock = FakeClock()
    store = await SqliteStore.open(settings.store_url, settings, clock)
    producer = await provider.open_log(settings, store, ns)
    logs = [await provider.open_log(settings, store, ns) for _ in range(WORKERS)]
    bus = MemoryBus()
    workers = [
        FanoutWorker(
            Runtime(settings=settings, store=WorkerStore(store, seed), log=log, bus=bus, clock=clock)
        )  # type: ignore[arg-type]
        for seed, log in enumerate(logs)
    ]
    tasks = [asyncio.create_task(worker.run()) for worker in workers]
    yield Cluster(store, producer, logs, workers, tasks)
    for worker in workers:
        worker.stop()
    await asyncio.gather(*tasks, return_exceptions=True)
    for log in [producer, *logs]:
        await log.close()
    await store.close()
    await bus.close()
    await provider.cleanup(ns)


async def inbox_order(store: SqliteStore, user: str) -> list[str]:
    items = await store.inbox.page("app1", user, after=0, before=None, limit=1000, unread_only=False)
    return [str(item.to_json()["event_id"]) for item in sorted(items, key=lambda item: item.seq)]


async def test_four_workers_fan_out_each_key_in_acceptance_order(cluster: Cluster) -> None:
    sent: dict[str, list[str]] = {f"u{k:02d}": [] for k in range(KEYS)}
    events = []
    for i in range(PER_KEY):
        for k in range(KEYS):
            user = f"u{k:02d}"
            event = make_event(f"e{i:03d}-{user}", recipients=(user,))
            events.append(event)
            sent[user].append(event.id)
    for start in range(0, len(events), APPEND_BATCH):
        results = await cluster.producer.append(appends(*events[start : start + APPEND_BATCH]))
        assert all(not isinstance(r, Exception) for r in results)

    deadline = time.monotonic() + DONE_WITHIN
    got: dict[str, list[str]] = {}
    while time.monotonic() < deadline:
        got = {user: await inbox_order(cluster.store, user) for user in sent}
        if all(len(got[user]) >= PER_KEY for user in sent):
            break
        await asyncio.sleep(0.2)
    assert {user: len(ids) for user, ids in got.items()} == {user: PER_KEY for user in sent}
    overtaken = {user: ids for user, ids in got.items() if ids != sent[user]}
    late = sum(overtaken_count(sent[user], ids) for user, ids in got.items())
    assert not overtaken, (
        f"{len(overtaken)} of {KEYS} keys out of order, {late} of {KEYS * PER_KEY} events overtaken"
    )


def overtaken_count(accepted: list[str], fanned_out: list[str]) -> int:
    """Events that an event accepted after them was fanned out before."""
    rank = {event_id: i for i, event_id in enumerate(accepted)}
    count, highest = 0, -1
    for event_id in fanned_out:
        if rank[event_id] < highest:
            count += 1
        highest = max(highest, rank[event_id])
    return count


@pytest.fixture(params=SHARED_LOGS)
async def two_logs(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[EventLog, EventLog]]:
    provider = PROVIDERS[request.param]
    await require(provider)
    ns = namespace()
    settings = Settings(data=str(tmp_path), sqlite_synchronous="NORMAL", log_lease=1.0)
    store = await SqliteStore.open(settings.store_url, settings, FakeClock())
    first = await provider.open_log(settings, store, ns)
    second = await provider.open_log(settings, store, ns)
    yield first, second
    await first.close()
    await second.close()
    await store.close()
    await provider.cleanup(ns)


async def test_a_joining_worker_gets_a_share_and_a_leaving_ones_partitions_are_taken_over(
    two_logs: tuple[EventLog, EventLog],
) -> None:
    """The first worker holds every partition; the second, started later, gets a share within a few lease
    rounds; once the first stops, the second takes the rest. Every event is handed out once."""
    first, second = two_logs
    sent = [make_event(f"e{i:03d}", recipients=(f"u{i:03d}",)) for i in range(200)]
    await first.append(appends(*sent))
    got: dict[int, list[str]] = {0: [], 1: []}

    async def work(index: int, log: EventLog, until: asyncio.Event) -> None:
        for _ in range(1000):  # bounded
            if until.is_set():
                return
            batch = await log.read(1, 0.3)
            await asyncio.sleep(0.02)  # the fan-out work
            await log.ack(batch)
            got[index] += [d.event.id for d in batch]

    shared = asyncio.Event()
    tasks = [asyncio.create_task(work(0, first, shared))]
    for _ in range(100):  # bounded: the first worker holds its partitions before the second joins
        if got[0]:
            break
        await asyncio.sleep(0.05)
    tasks.append(asyncio.create_task(work(1, second, shared)))
    for _ in range(100):  # bounded: until the second worker got events of its own
        if got[1]:
            break
        await asyncio.sleep(0.1)
    shared.set()
    await asyncio.gather(*tasks)
    assert got[0], "the first worker got nothing"
    assert got[1], "the joining worker got no share"
    await first.close()  # leaves: its partitions are released at once
    for _ in range(50):  # bounded
        batch = await second.read(100, 1.0)
        await second.ack(batch)
        got[1] += [d.event.id for d in batch]
        if len(got[0]) + len(got[1]) >= len(sent):
            break
    handed_out = got[0] + got[1]
    assert sorted(handed_out) == [e.id for e in sent]
