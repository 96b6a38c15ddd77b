"""The fan-out loop: consume -> plan -> write -> publish -> ack.

Ack only after the inbox commit and the publish: a crash anywhere before the ack means redelivery, and the
inbox write is idempotent on (app, user, event), so redelivery creates nothing twice and re-publishes what a
crash may have kept off the bus (gateways drop the duplicates by seq).
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import random
import time
from collections.abc import AsyncIterator, Sequence

import structlog

from tidings.core.backoff import full_jitter
from tidings.core.models import Event, InboxWrite, LiveMessage, StoredNotification, TraceCarrier
from tidings.errors import TidingsError, UnavailableError
from tidings.observability.tracing import BatchSpans
from tidings.planner import Planner
from tidings.ports import Delivery
from tidings.runtime import Runtime

log = structlog.get_logger("tidings.worker")

WRITE_CHUNK = 1000  # inbox rows per transaction: bounds memory and lock time for any topic size
LAG_SAMPLE_INTERVAL = 1.0  # seconds between two reads of the log's lag
FULL_GC_EVERY = 64  # collections (see ``_collect_garbage``): one in this many is a full one
POISON_ATTEMPTS = 5  # failed runs of a batch before its events are tried one by one


def planner_for(runtime: Runtime) -> Planner:
    """The planner of a worker on ``runtime``: its storage ports, its log (for chunk jobs), its clock and settings."""
    store, settings = runtime.store, runtime.settings
    return Planner(
        topics=store.topics,
        preferences=store.preferences,
        decisions=store.decisions,
        log=runtime.log,
        clock=runtime.clock,
        chunk=settings.fanout_chunk,
        split=settings.fanout_split,
        retention=settings.decision_retention,
    )


class FanoutWorker:
    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._stop = asyncio.Event()
        self._lag_sampled_at = -LAG_SAMPLE_INTERVAL
        self._planner = planner_for(runtime)
        self._chunks = 0
        self.gc_seconds = 0.0  # time spent in the collections below (docs/performance.md)

    def stop(self) -> None:
        """Finish the batch in hand, then return from ``run``."""
        self._stop.set()

    async def run(self) -> None:
        attempt = 0
        batch: Sequence[Delivery] = ()
        while not self._stop.is_set():
            try:
                if not batch:
                    batch = await self._runtime.log.read(self._runtime.settings.worker_batch, timeout=0.5)
                if batch:
                    await self._process_or_isolate(batch, attempt)
                    batch = ()
                    await self._report_lag()
                attempt = 0
            except TidingsError as exc:
                # A backend failed mid-batch: keep the batch in hand and run it again after a backoff. Running it
                # again is idempotent (inbox writes by event id), and the log still holds its deliveries for
                # this process: reading on instead would leave them leased here, unacked, for a long time.
                delay = full_jitter(attempt, random.random(), base=0.2, cap=10.0)
                log.warning("fanout_retry", error=exc.code, delay=round(delay, 3), events=len(batch))
                attempt += 1
                await asyncio.sleep(delay)

    def _collect_garbage(self) -> None:
        """A young collection every ``worker_gc_chunks`` write chunks, a full one every ``FULL_GC_EVERY`` of them.

        Why at all: a server raises the GC's thresholds (``cli._tune_gc``: 50,000 allocations before a young
        collection), so reference cycles a chunk leaves behind could reach the oldest generation, collected
        only every ~100 M allocations, and hold the chunk's rows (a 1,500-event wide fan-out on PostgreSQL once
        held ~400 MiB of dead rows through SQLAlchemy ``unnest`` statements; the write path now binds plain
        arrays to driver SQL and leaves no such cycles). Why young: a full collection walks every object the
        process made since start-up (~40 ms of CPU per 1,000-row chunk in ``tidings bench run worker``, a
        quarter of the worker's CPU), a young one only what the last chunks made; what a chunk made and freed
        is young. The periodic full collection bounds whatever still got promoted to a few chunks' worth."""
        every = self._runtime.settings.worker_gc_chunks
        if every > 0:
            self._chunks += 1
            if self._chunks % every == 0:
                started = time.perf_counter()
                gc.collect(2 if self._chunks % (every * FULL_GC_EVERY) == 0 else 1)
                self.gc_seconds += time.perf_counter() - started

    async def _process_or_isolate(self, batch: Sequence[Delivery], attempt: int) -> None:
        """The batch, or, once it failed a few times for a reason other than a backend being down, each event
        on its own, so one event no store accepts (a poison message) cannot stop the others forever."""
        if attempt < POISON_ATTEMPTS:
            await self.process(batch)
            return
        for delivery in batch:
            try:
                await self.process([delivery])
            except UnavailableError:
                raise
            except TidingsError as exc:
                # Set aside in the dead-letter store (``tidings deliveries dead``) before the ack: a crash in
                # between runs it again, and recording it twice is harmless.
                event = delivery.event
                log.error("poison_event_dead_lettered", event_id=event.id, error=exc.code)
                await self._runtime.store.outbound.record_dead_event(
                    event.app, event.id, f"{exc.code}: {exc.message}", self._runtime.clock.time()
                )
                self._runtime.funnel.dead_lettered("poison")
                await self._runtime.log.ack([delivery])

    async def process(self, deliveries: Sequence[Delivery]) -> None:
        """Fan a batch of events out into inboxes, publish, then ack the whole batch.

        Traced (when on) as one ``worker.fanout`` span per event, open until the ack, with the commit steps
        under it; see ``tidings.observability.tracing``.
        """
        with BatchSpans() as spans:
            pending: list[InboxWrite] = []
            for delivery in deliveries:
                with spans.event(delivery.event):
                    async for writes in self._plan(delivery.event, spans):
                        pending.extend(writes)
                        if len(pending) >= WRITE_CHUNK:
                            await self._commit(pending, spans)
                            pending = []
            if pending:
                await self._commit(pending, spans)
            await self._runtime.log.ack(deliveries)

    async def _plan(self, event: Event, spans: BatchSpans) -> AsyncIterator[list[InboxWrite]]:
        # Recipients, topic chunk jobs, staleness, preferences and their decisions: see tidings.planner.
        async for writes in self._planner.plan(event, lambda root, n: self._fanned_out(root, n, spans)):
            yield writes

    def _fanned_out(self, event: Event, recipients: int, spans: BatchSpans) -> None:
        self._runtime.funnel.fanned_out(event, recipients, spans)

    async def _commit(self, writes: Sequence[InboxWrite], spans: BatchSpans) -> None:
        with spans.step("store.write", writes) as carriers:
            stored = await self._runtime.store.inbox.write(_traced(writes, carriers) if carriers else writes)
        self._runtime.funnel.stored(writes, len(stored))
        await self._publish(writes, stored, spans)
        del stored
        self._collect_garbage()

    async def _publish(
        self, writes: Sequence[InboxWrite], stored: Sequence[StoredNotification], spans: BatchSpans
    ) -> None:
        try:
            with spans.step("bus.publish", writes) as carriers:
                # Each message carries the context of its event's publish span: the gateway's delivery span
                # becomes its child, in whatever process the gateway runs.
                messages = [
                    LiveMessage(
                        row.app,
                        row.user,
                        row.seq,
                        row.payload,
                        accepted_at=write.event.accepted_at,
                        trace=carriers.get(write.event.id),
                    )
                    for write, row in zip(writes, stored, strict=True)
                    if row.kind != "gone"  # retracted before its write, or removed since: nothing to show
                ]
                await self._runtime.bus.publish(messages)
        except TidingsError as exc:
            # The bus is at-most-once by contract: gateways gap-fill from the inbox, so a failed publish only
            # delays delivery; it must not block the ack (that would re-run the whole fan-out).
            log.warning("publish_failed", error=exc.code, messages=len(writes))

    async def _report_lag(self) -> None:
        # Sampled: counting the lag is not free on every engine (the embedded log counts rows).
        now = self._runtime.clock.monotonic()
        if now - self._lag_sampled_at >= LAG_SAMPLE_INTERVAL:
            self._lag_sampled_at = now
            self._runtime.funnel.lag(await self._runtime.log.lag())


def _traced(writes: Sequence[InboxWrite], carriers: dict[str, TraceCarrier]) -> list[InboxWrite]:
    """The writes whose offline deliveries continue their event's ``store.write`` span (only sampled traces
    have a carrier; rows without an offline channel need none)."""
    return [
        dataclasses.replace(w, trace=carrier) if w.channels and (carrier := carriers.get(w.event.id)) else w
        for w in writes
    ]
