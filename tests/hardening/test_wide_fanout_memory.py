"""Issue 15 item 5: a wide fan-out on PostgreSQL + NATS keeps the worker's memory bounded.

What held it (~550 MiB for 1,500 events x 26 recipients x 4 KB): every inbox write chunk leaves reference cycles
(the SQLAlchemy ``unnest`` statements with the chunk's payload arrays bound in them); under a server's raised GC
thresholds (``cli._tune_gc``) they reached the oldest generation and stayed. The worker now collects after every
``worker_gc_chunks`` chunks. Measured here without timing: after a batch, what the cyclic GC still finds dead
holds next to nothing of the batch's rows; with ``worker_gc_chunks=0`` (the old behaviour) it holds at least
a chunk's, and over a long run the rows of many batches. Real PostgreSQL and NATS JetStream, a namespace of
the test's own.
"""

from __future__ import annotations

import contextlib
import gc
import os
import secrets
import time
from collections.abc import AsyncIterator, Iterator

import asyncpg
import nats
import pytest

from tidings.backends.memory import MemoryBus
from tidings.backends.nats.log import NatsEventLog
from tidings.backends.sql.postgres import PostgresStore
from tidings.core.models import PRIORITIES, Event
from tidings.gateway.hub import Hub
from tidings.ports import Append
from tidings.runtime import Runtime
from tidings.settings import Settings
from tidings.worker import WRITE_CHUNK, FanoutWorker

POSTGRES = os.environ.get("TIDINGS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
NATS = os.environ.get("TIDINGS_TEST_NATS", "nats://127.0.0.1:4222")
RECIPIENTS = tuple(f"u{i}" for i in range(26))
PAYLOAD = 4096
EVENTS = 120  # 3,120 rows: four write chunks


def _unavailable(what: str, exc: BaseException) -> None:
    if os.environ.get("TIDINGS_TEST_REQUIRE"):
        pytest.fail(f"{what} is not available: {exc!r}")
    pytest.skip(f"{what} is not available: {exc!r}")


@contextlib.contextmanager
def promoting_gc() -> Iterator[None]:
    """GC thresholds under which whatever is alive during a chunk's I/O reaches the oldest generation and a
    full collection never comes by itself: what a busy server with ``cli._tune_gc``'s thresholds does over a
    long batch, made certain for a small one."""
    before = gc.get_threshold()
    gc.set_threshold(100, 1, 1_000_000)
    try:
        yield
    finally:
        gc.set_threshold(*before)


@pytest.fixture
async def runtime() -> AsyncIterator[Runtime]:
    namespace = "wfm" + secrets.token_hex(4)
    settings = Settings(store=POSTGRES, broker=NATS, namespace=namespace, ack_wait=30.0)
    try:
        store = await PostgresStore.open(POSTGRES, settings)
    except Exception as exc:
        _unavailable("PostgreSQL", exc)
    try:
        log = await NatsEventLog.open(NATS, settings, store)
    except Exception as exc:
        await store.close()
        _unavailable("NATS JetStream", exc)
    bus = MemoryBus()
    rt = Runtime(settings=settings, store=store, log=log, bus=bus)
    rt.hub = Hub(bus)
    try:
        yield rt
    finally:
        await log.close()
        await store.close()
        pg = await asyncpg.connect(POSTGRES.replace("postgresql+asyncpg", "postgresql"), timeout=5)
        await pg.execute(f'DROP SCHEMA IF EXISTS "{namespace}" CASCADE')
        await pg.close()
        nc = await nats.connect(NATS, connect_timeout=2)
        js = nc.jetstream(timeout=3.0)
        for lane in PRIORITIES:
            with contextlib.suppress(Exception):
                await js.delete_stream(f"{namespace}_events_{lane}")
        await nc.close()


async def _dead_payload_bytes_after_one_batch(runtime: Runtime, gc_chunks: int) -> int:
    """Fans one batch of EVENTS wide events out, then counts the payload bytes that only garbage holds."""
    runtime.settings = runtime.settings.replace(worker_gc_chunks=gc_chunks)
    text = "x" * PAYLOAD
    tag = secrets.token_hex(3)
    events = [
        Event(
            id=f"{tag}-{i}",
            app="a",
            type="t",
            accepted_at=time.time(),
            recipients=RECIPIENTS,
            data={"text": text},
        )
        for i in range(EVENTS)
    ]
    await runtime.log.append([Append(e) for e in events])
    batch = await runtime.log.read(EVENTS, 5.0)
    assert len(batch) == EVENTS
    worker = FanoutWorker(runtime)
    gc.collect()
    with promoting_gc():
        await worker.process(batch)
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        dead = sum(
            len(item)
            for obj in gc.garbage
            if isinstance(obj, list)
            for item in obj
            if isinstance(item, bytes) and len(item) > PAYLOAD
        )
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    return dead


async def test_the_worker_frees_each_write_chunk_of_a_wide_fan_out(runtime: Runtime) -> None:
    one_chunk = WRITE_CHUNK * PAYLOAD
    held = await _dead_payload_bytes_after_one_batch(runtime, gc_chunks=1)
    assert held < one_chunk // 10, held  # nothing of the batch's rows is left to the GC's next pass
    # Issue 12: the write path binds plain arrays to driver SQL and builds no SQLAlchemy statements per chunk,
    # so even left to the thresholds (no collection by the worker) a chunk leaves none of its rows in cycles.
    # (Before, with SQLAlchemy ``unnest`` statements, about a chunk of rows stayed held here.)
    unbounded = await _dead_payload_bytes_after_one_batch(runtime, gc_chunks=0)
    assert unbounded < one_chunk // 10, unbounded
