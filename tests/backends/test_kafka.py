"""What is particular to the Kafka log: order by key across workers, and rebalances that neither lose nor
double-commit (the shared behaviour is in the contract suites, which run over Kafka too)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Sequence

import provide_kafka
import pytest
from aiokafka import TopicPartition
from backend_support import appends, make_event
from providers import namespace, require

from tidings.backends.idempotent import IdempotentLog
from tidings.backends.kafka import KafkaEventLog
from tidings.backends.sql.sqlite import SqliteStore
from tidings.core.models import Event
from tidings.ports import Appended, Delivery, EventLog
from tidings.settings import Settings
from tidings.testing import FakeClock

WORKERS = 4
KEYS = 50
PER_KEY = 8


@pytest.fixture
async def store(settings: Settings, clock: FakeClock) -> AsyncIterator[SqliteStore]:
    await require(provide_kafka)
    opened = await SqliteStore.open(settings.store_url, settings, clock)
    yield opened
    await opened.close()


def keyed(key: str, index: int) -> Event:
    return dataclasses.replace(make_event(f"{key}-{index:03d}", recipients=("a", "b")), ordering_key=key)


def position(delivery: Delivery) -> tuple[str, int]:
    key, _, index = delivery.event.id.rpartition("-")
    return key, int(index)


async def open_workers(settings: Settings, store: SqliteStore, count: int) -> list[EventLog]:
    """``count`` logs in one group, each joined; returns once the group settled with all of them in it."""
    ns = settings.namespace
    logs = [await provide_kafka.open_log(settings, store, ns) for _ in range(count)]
    # Bounded: each member's assignment settles within a few rebalance rounds (seconds each on a loaded
    # machine, where a stalled event loop can cost a member its 1 s session and start another round).
    for _ in range(600):
        owned = [len(inner(log)._owned) for log in logs]
        if sum(owned) == 3 * provide_kafka.PARTITIONS and all(owned):
            return logs
        await asyncio.sleep(0.05)
    for log in logs:  # else their clients outlive the test's loop and fail the next test with warnings
        await log.close()
    raise AssertionError(f"the group never settled: {owned}")


def inner(log: EventLog) -> KafkaEventLog:
    assert isinstance(log, IdempotentLog)
    assert isinstance(log.inner, KafkaEventLog)
    return log.inner


async def work(log: EventLog, done: list[tuple[str, int]], expected: int) -> None:
    """A worker: reads a batch, processes it in order (yielding between events, as a real worker awaits its
    inbox writes), acks it; until every expected event was processed by someone."""
    while len(done) < expected:
        batch = await log.read(16, 0.2)
        for delivery in batch:
            await asyncio.sleep(0)
            done.append(position(delivery))
        await log.ack(batch)


async def test_events_of_one_key_are_processed_in_append_order_by_four_workers(
    settings: Settings, store: SqliteStore
) -> None:
    """50 keys, appended interleaved, read by 4 workers at once: each key's events are processed in the
    order they were accepted, each exactly once (no rebalance happens while they run)."""
    settings = settings.replace(namespace=namespace())
    logs = await open_workers(settings, store, WORKERS)
    try:
        for index in range(PER_KEY):
            await logs[0].append(appends(*(keyed(f"k{k:02d}", index) for k in range(KEYS))))
        done: list[tuple[str, int]] = []
        async with asyncio.timeout(60):
            await asyncio.gather(*(work(log, done, KEYS * PER_KEY) for log in logs))
        assert sorted(done) == sorted((f"k{k:02d}", i) for k in range(KEYS) for i in range(PER_KEY))
        for k in range(KEYS):
            assert [i for key, i in done if key == f"k{k:02d}"] == list(range(PER_KEY)), f"k{k:02d}"
        assert await logs[0].lag() == 0
    finally:
        for log in logs:
            await log.close()


async def test_a_member_joining_while_a_batch_is_in_hand_gets_none_of_it_once_acked(
    settings: Settings, store: SqliteStore
) -> None:
    """A rebalance while a worker holds a batch: the batch is finished (acked, committed) before its partitions
    move, so the new member reads only what follows, and nothing is handed out twice."""
    settings = settings.replace(namespace=namespace())
    [first] = await open_workers(settings, store, 1)
    second: EventLog | None = None
    try:
        await first.append(appends(*(keyed(f"k{k:02d}", 0) for k in range(40))))
        in_hand = await first.read(20, 2.0)
        assert len(in_hand) == 20
        revoking = asyncio.Event()
        revoked = inner(first).revoked

        async def noted_revoked(partitions: Sequence[TopicPartition]) -> None:
            revoking.set()
            await revoked(partitions)

        inner(first).revoked = noted_revoked  # type: ignore[method-assign]
        joining = asyncio.create_task(provide_kafka.open_log(settings, store, settings.namespace))
        # The join is under way once the first member's revocation runs, waiting for the ack (a fixed sleep
        # here let the ack come first on a slow machine, before any rebalance). Bounded: a join's rounds.
        await asyncio.wait_for(revoking.wait(), 30)
        await first.ack(in_hand)
        second = await joining
        seen = [d.event.id for d in in_hand]
        async with asyncio.timeout(30):
            while len(set(seen)) < 40:
                for log in (first, second):
                    batch = await log.read(50, 0.1)
                    seen += [d.event.id for d in batch]
                    await log.ack(batch)
        assert sorted(seen) == sorted(f"k{k:02d}-000" for k in range(40))  # each once: none twice
    finally:
        await first.close()
        if second is not None:
            await second.close()


async def test_an_abandoned_batch_is_never_committed_and_comes_again(
    settings: Settings, store: SqliteStore
) -> None:
    """A worker that dies holding a batch: its partitions go to the others, which read the batch again (the
    inbox absorbs the copy); nothing is lost and the group's lag ends at 0."""
    settings = settings.replace(namespace=namespace())
    first, second = await open_workers(settings, store, 2)
    try:
        await first.append(appends(*(keyed(f"k{k:02d}", 0) for k in range(40))))
        in_hand = await first.read(100, 2.0)
        assert in_hand
        await first.close()  # gone without acking: its partitions move to the second member
        seen: set[str] = set()
        async with asyncio.timeout(30):
            while len(seen) < 40:
                batch = await second.read(100, 0.2)
                seen |= {d.event.id for d in batch}
                await second.ack(batch)
        assert {d.event.id for d in in_hand} <= seen
        assert await second.lag() == 0
    finally:
        await first.close()
        await second.close()


async def test_one_worker_hands_out_events_of_many_keys_in_acceptance_order(
    settings: Settings, store: SqliteStore
) -> None:
    """One worker (as in ``tidings serve``) reading while a producer sends one event at a time, each with a key
    of its own (so the events spread over every partition): they come out in the order they were accepted."""
    settings = settings.replace(namespace=namespace())
    [log] = await open_workers(settings, store, 1)
    try:
        expected = [f"k{k:03d}-000" for k in range(120)]
        done: list[str] = []

        async def produce() -> None:
            for k in range(120):
                event = dataclasses.replace(keyed(f"k{k:03d}", 0), accepted_at=1_790_000_000.0 + k)
                await log.append(appends(event))

        async def consume() -> None:
            while len(done) < len(expected):
                batch = await log.read(16, 0.2)
                done.extend(d.event.id for d in batch)
                await log.ack(batch)

        async with asyncio.timeout(60):
            await asyncio.gather(produce(), consume())
        assert done == expected
    finally:
        await log.close()


async def test_a_retried_copy_read_after_its_event_was_acked_is_skipped_and_not_counted_as_lag(
    settings: Settings, store: SqliteStore
) -> None:
    """A producer's retry appends its event again under the first id: the worker that acked the first copy
    skips the second, and commits past it, so the log's lag ends at 0 (not 1 forever)."""
    settings = settings.replace(namespace=namespace())
    [log] = await open_workers(settings, store, 1)
    try:
        first = dataclasses.replace(make_event("e1", key="k"), ordering_key="only")
        await log.append(appends(first, body_hash="h"))
        got = await log.read(10, 2.0)
        await log.ack(got)
        assert [d.event.id for d in got] == ["e1"]
        retry = dataclasses.replace(make_event("e2", key="k"), ordering_key="only")
        assert [r for r in await log.append(appends(retry, body_hash="h"))] == [
            Appended("e1", duplicate=True)
        ]
        assert await log.read(10, 0.5) == []
        assert await log.lag() == 0
    finally:
        await log.close()


async def test_a_member_that_stopped_reading_leaves_and_its_partitions_are_read_by_the_others(
    settings: Settings, store: SqliteStore
) -> None:
    """A log that joined the group and never reads (a worker stuck, an appending process joined as a worker)
    holds half the partitions; it leaves the group once it has not read for the stall time, and the other
    member reads every event (before: they waited for aiokafka's default 5 minutes)."""
    settings = settings.replace(namespace=namespace())
    stalled, reader = await open_workers(settings, store, 2)
    try:
        assert inner(stalled)._owned  # it holds partitions of every lane, reading none of them
        await stalled.append(appends(*(keyed(f"k{k:02d}", 0) for k in range(40))))
        seen: set[str] = set()
        async with asyncio.timeout(40):  # bounded: the stall time is 10 s here
            while len(seen) < 40:
                batch = await reader.read(100, 0.5)
                seen |= {d.event.id for d in batch}
                await reader.ack(batch)
        assert seen == {f"k{k:02d}-000" for k in range(40)}
        assert not inner(stalled)._owned
    finally:
        await stalled.close()
        await reader.close()


def test_the_group_session_is_the_log_lease_not_the_ack_wait() -> None:
    """A dead member's partitions move after ``log_lease``, as on the other engines. Before, the session was
    ``ack_wait``: 30 s by default, and 1-5 s in tests, where a stalled event loop evicted live members.
    A join may wait the rebalance timeout, so the request timeout outlasts it."""
    from tidings.backends.kafka.client import group_timeouts

    timers = group_timeouts(Settings(ack_wait=30.0, log_lease=10.0))
    assert timers["session_timeout_ms"] == 10_000
    assert timers["heartbeat_interval_ms"] == 2_000
    assert timers["rebalance_timeout_ms"] == 30_000  # a revoked batch gets ack_wait / 2 to finish
    assert timers["request_timeout_ms"] > timers["rebalance_timeout_ms"]
    short = group_timeouts(Settings(ack_wait=1.0, log_lease=3.0))
    assert (short["session_timeout_ms"], short["rebalance_timeout_ms"]) == (3_000, 3_000)
