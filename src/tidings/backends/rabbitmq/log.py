"""``ports.EventLog`` on RabbitMQ quorum queues (``RabbitEventLog``), with aio-pika.

Partitions. Each lane is ``settings.log_partitions`` queues, chosen by ``core.ordering.event_partition``
(``{ns}.events.{lane}.{n}``; partition 0 is ``{ns}.events.{lane}``, the queue of earlier versions). A worker reads
only the queues of the partitions it holds a lease on (an exclusive consumer, ``leases.py``; shares and
rebalancing: ``backends/partitions.py``). When a holder dies, RabbitMQ puts what it held unacked back at the
head of each queue and drops its leases, so the next holder reads those first, in order.

Append. Each event is published, persistent, to its lane's queue through the default exchange on a channel
with publisher confirms, ``mandatory`` set and ``message_id`` = the event id; ``append`` returns once the
broker confirmed every message (a quorum queue confirms once a majority of its replicas has the message on
disk). A nack, a return (the queue is missing) or no confirm within ``APPEND_TIMEOUT`` is an
``UnavailableError`` in that item's slot: the other items may well be durable, and the caller learns which.
Producer idempotency lives in the store (``IdempotentLog``, see ``open``).

Read: ``basic.get``, not a consumer, chosen by measurement (this machine, quorum queues, aio-pika 10):
a consumer with prefetch 256 moves ~7,900 events/s, ``basic.get`` ~1,200/s per reading channel (each get is
one Raft command in the queue; on a classic queue the same client does ~3,500/s). But a consumer pushes
messages into a local buffer on its own schedule: right after an append returned, 87% of 200 tries had only
part of the batch delivered, so a read could hand out ``low`` before a ``high`` still in flight, or fewer
than were ready, and prefetched messages sit in one worker while another idles. ``basic.get`` takes exactly
what the broker holds at the moment of the read, ``high`` first, at most ``max_items``; one worker process
runs one read at a time anyway, and more throughput comes from more worker processes (each reading the
partitions it holds). Before taking, a read asks each held queue's ready count with a passive ``queue.declare`` (a
query, not a Raft command: ~6,800/s) and gets only from lanes that have messages; an idle read repeats that
query with a growing pause (``POLL_MIN``..``POLL_MAX``), so a new event is seen within ``POLL_MAX``.

Ack and redelivery. Deliveries are acked manually on the channel that got them. Everything a channel holds
unacked goes back to the queue (in order, ahead of newer messages) when the channel or the connection closes:
a dead or restarted worker. A delivery held longer than ``Settings.ack_wait`` when this log reads again (a
worker that gave up on a batch) is nacked with requeue, so it is read again; a batch still in progress is not
touched, because a worker does not read while it processes. An ack for a delivery that was already requeued
(its channel closed, or its lease ran out) is skipped rather than sent: the broker would close the channel
for an unknown delivery tag. An ack is a one-way frame: one lost with a crash means one more redelivery.

Duplicates. RabbitMQ does not deduplicate by ``message_id`` (JetStream does), and ``IdempotentLog`` appends a
retried event again under its first id. So a read skips (acks) a delivery whose event id this log holds
unacked or acked among its last ``RECENT_IDS``; a copy read by another process creates nothing either, the
inbox write being idempotent on the event id.

Lag = ready messages (passive ``queue.declare``) + deliveries this log holds unacked. AMQP reports no
unacked count, so deliveries held by other processes are not counted (the management API has them).

Queue names and reconnects: ``connection.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import aiormq
import structlog
from aio_pika.abc import AbstractRobustChannel, AbstractRobustConnection

from tidings.backends.idempotent import IdempotentLog
from tidings.backends.partitions import Partitions, member_id
from tidings.backends.rabbitmq.connection import (
    BROKER_ERRORS,
    OP_TIMEOUT,
    broker,
    check_connected,
    connect,
    lane_queue,
)
from tidings.backends.rabbitmq.leases import RabbitLeases
from tidings.core.clock import Clock, SystemClock
from tidings.core.models import PRIORITIES, Priority, event_from_bytes, event_to_bytes
from tidings.core.ordering import event_partition
from tidings.errors import InvalidInputError, UnavailableError
from tidings.ports import Append, Appended, Delivery, EventLog, Store
from tidings.settings import Settings

log = structlog.get_logger("tidings.rabbitmq")

APPEND_TIMEOUT = 5.0  # seconds for a publisher confirm
POLL_MIN, POLL_MAX = 0.01, 0.1  # pauses of an idle read between two looks at the lanes
RECENT_IDS = 10_000  # acked event ids remembered to skip re-appended copies

QUORUM = {"x-queue-type": "quorum"}
PERSISTENT = 2  # AMQP delivery mode: written to disk
DECODE_ERRORS = (ValueError, KeyError, TypeError, AttributeError)


Stream = tuple[Priority, int]  # (lane, partition): one queue


@dataclass(frozen=True, slots=True)
class _Token:
    """What ``ack`` needs: the channel that got the delivery (tags mean nothing on another) and its tag."""

    channel: aiormq.Channel
    tag: int


class _Leases:
    """Deliveries handed out by one reader channel and not acked yet, and the event ids acked lately.

    No I/O here: the log asks what to skip, what to ack and what has outlived ``ack_wait``, and talks to the
    broker itself.
    """

    def __init__(self, ack_wait: float, remember: int = RECENT_IDS) -> None:
        self.channel: object = None
        self._ack_wait = ack_wait
        self._remember = remember
        self._held: dict[int, tuple[str, Stream, float]] = {}  # tag -> (event id, queue, handed out at)
        self._held_ids: dict[str, int] = {}
        self._acked: OrderedDict[str, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._held)

    def switch(self, channel: object) -> None:
        """A new channel: what the old one held is back in the queues (the broker requeued it)."""
        if channel is not self.channel:
            self.channel = channel
            self._held.clear()
            self._held_ids.clear()

    def is_copy(self, event_id: str) -> bool:
        return event_id in self._held_ids or event_id in self._acked

    def hand_out(self, tag: int, event_id: str, stream: Stream, now: float) -> None:
        self._held[tag] = (event_id, stream, now)
        self._held_ids[event_id] = tag

    def settle(self, token: _Token) -> bool:
        """True when ``token`` is held here (then it is forgotten and its event id remembered as done)."""
        if token.channel is not self.channel:
            return False
        held = self._held.pop(token.tag, None)
        if held is None:
            return False
        event_id = held[0]
        self._held_ids.pop(event_id, None)
        self._acked[event_id] = None
        if len(self._acked) > self._remember:
            self._acked.popitem(last=False)
        return True

    def holds(self, partition: int) -> bool:
        """Deliveries of ``partition`` are handed out and not acked yet."""
        return any(stream[1] == partition for _, stream, _ in self._held.values())

    def expired(self, now: float) -> list[tuple[int, Stream]]:
        """(tag, queue) of deliveries held ``ack_wait`` seconds or longer; they are forgotten (the caller
        requeues them)."""
        tags = [tag for tag, (_, _, since) in self._held.items() if now - since >= self._ack_wait]
        expired: list[tuple[int, Stream]] = []
        for tag in tags:
            event_id, stream, _ = self._held.pop(tag)
            self._held_ids.pop(event_id, None)
            expired.append((tag, stream))
        return expired


class RabbitEventLog:
    """``ports.EventLog`` on three quorum queues. Open it with ``open`` (or ``connect`` without idempotency)."""

    def __init__(
        self,
        connection: AbstractRobustConnection,
        channels: tuple[AbstractRobustChannel, AbstractRobustChannel, AbstractRobustChannel],
        settings: Settings,
        clock: Clock,
    ) -> None:
        self._connection = connection
        # Three channels, so that no failure on one disturbs another: a passive declare of a missing queue
        # closes its channel, and closing the reader channel would requeue every delivery in hand.
        self._publisher, self._reader, self._control = channels
        self._ns = settings.namespace
        self._lease = settings.log_lease
        self._partition_count = max(1, settings.log_partitions)
        self._queues = partition_queues(settings)
        self._partitions: Partitions | None = None  # taken on the first read: an API process takes none
        self._clock = clock
        self._leases = _Leases(settings.ack_wait)
        self._read_lock = asyncio.Lock()
        self._closing = asyncio.Event()

    @classmethod
    async def open(cls, url: str, settings: Settings, store: Store) -> EventLog:
        """The log with producer idempotency kept in ``store``."""
        return IdempotentLog(await cls.connect(url, settings), store.idempotency)

    @classmethod
    async def connect(cls, url: str, settings: Settings, *, clock: Clock | None = None) -> RabbitEventLog:
        """Connects and declares the lane queues; ``clock`` times the ``ack_wait`` leases."""
        connection = await connect(url, "log", settings.namespace)
        try:
            async with broker("open the event log"):
                publisher = await connection.channel(publisher_confirms=True, on_return_raises=True)
                reader = await connection.channel(publisher_confirms=False)
                control = await connection.channel(publisher_confirms=False)
                for queue in partition_queues(
                    settings
                ).values():  # robust channel: declared again on reconnect
                    await control.declare_queue(queue, durable=True, arguments=QUORUM)
        except BaseException:
            await connection.close()
            raise
        return cls(connection, (publisher, reader, control), settings, clock or SystemClock())

    # --- append -----------------------------------------------------------------------------------------

    async def append(self, items: Sequence[Append]) -> list[Appended | Exception]:
        if not items:
            return []
        self._check()
        channel = await self._ready_channel(self._publisher, "append")
        firsts: dict[str, asyncio.Future[Appended | Exception]] = {}
        slots: list[asyncio.Future[Appended | Exception] | Exception] = []
        for item in items:
            event = item.event
            if event.priority not in PRIORITIES:
                slots.append(InvalidInputError(f"unknown priority {event.priority!r}"))
            elif event.id in firsts:  # the same event twice in one call is published once
                slots.append(firsts[event.id])
            else:
                firsts[event.id] = asyncio.ensure_future(self._publish(channel, item))
                slots.append(firsts[event.id])
        # Published in item order: each publish takes the channel lock in the order the tasks start.
        await asyncio.gather(*firsts.values())
        return [slot if isinstance(slot, Exception) else slot.result() for slot in slots]

    async def _publish(self, channel: aiormq.Channel, item: Append) -> Appended | Exception:
        event = item.event
        properties = aiormq.spec.Basic.Properties(
            message_id=event.id, content_type="application/json", delivery_mode=PERSISTENT
        )
        try:
            async with broker("append", APPEND_TIMEOUT):
                # wait=False: queued for the socket without waiting for it to drain, so the next publish
                # goes out at once; what is awaited is the broker's confirm.
                await channel.basic_publish(
                    event_to_bytes(event),
                    routing_key=self._queues[(event.priority, event_partition(event, self._partition_count))],
                    properties=properties,
                    mandatory=True,
                    wait=False,
                )
        except UnavailableError as exc:
            return exc
        return Appended(event.id)

    # --- read -------------------------------------------------------------------------------------------

    async def read(self, max_items: int, timeout: float) -> list[Delivery]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout)
        pause = POLL_MIN
        while True:
            deliveries = await self._read_once(max_items)
            remaining = deadline - loop.time()
            if deliveries or remaining <= 0 or max_items <= 0:
                return deliveries
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(pause, remaining)):
                    await self._closing.wait()
            if self._closing.is_set():
                return []  # closed while waiting: the reader goes away empty-handed, like on a timeout
            pause = min(pause * 2, POLL_MAX)

    async def _read_once(self, max_items: int) -> list[Delivery]:
        self._check()
        async with self._read_lock:
            if self._partitions is None:
                self._partitions = await self._hold_partitions()
            channel = await self._ready_channel(self._reader, "read")
            self._leases.switch(channel)
            requeued = await self._requeue_expired(channel)
            held = self._partitions.readable()
            ready = await self._ready_counts([(lane, n) for lane in PRIORITIES for n in held])
            deliveries: list[Delivery] = []
            try:
                for stream, count in ready.items():
                    # The count is asked on another channel and may not show the requeued ones yet; a get on
                    # this channel does: the queue sees this channel's nacks before its gets.
                    wanted = min(max(count, requeued.get(stream, 0)), max_items - len(deliveries))
                    if wanted > 0:
                        await self._take(channel, stream, wanted, deliveries)
            except UnavailableError:
                if not deliveries:
                    raise
            return deliveries

    async def _take(
        self, channel: aiormq.Channel, stream: Stream, attempts: int, into: list[Delivery]
    ) -> None:
        """Up to ``attempts`` gets from one queue (fewer if it runs dry), appended to ``into`` in queue order."""
        for _ in range(attempts):
            try:
                async with broker("read"):
                    got = await channel.basic_get(self._queues[stream], no_ack=False, timeout=OP_TIMEOUT)
            except UnavailableError as exc:
                if isinstance(exc.__cause__, TimeoutError):
                    await self._reset_reader()
                raise
            if not isinstance(got.delivery, aiormq.spec.Basic.GetOk):
                return
            delivery = await self._delivery(channel, stream, got)
            if delivery is not None:
                into.append(delivery)

    async def _delivery(
        self, channel: aiormq.Channel, stream: Stream, got: aiormq.abc.DeliveredMessage
    ) -> Delivery | None:
        lane = stream[0]
        tag = got.delivery_tag
        assert tag is not None  # a GetOk always carries one
        try:
            event = event_from_bytes(got.body)
        except DECODE_ERRORS:
            # Not ours to fix and never going to decode: dropped, or it would come back forever.
            log.warning("log_message_undecodable", lane=lane, size=len(got.body))
            await _drop(channel, tag)
            return None
        if self._leases.is_copy(event.id):
            await _drop(channel, tag)  # a re-appended copy of an event in hand or done
            return None
        self._leases.hand_out(tag, event.id, stream, self._clock.monotonic())
        return Delivery(event, token=_Token(channel, tag), lane=lane)

    async def _requeue_expired(self, channel: aiormq.Channel) -> dict[Stream, int]:
        """Nacks (requeue) what outlived its lease; returns how many went back to each queue."""
        requeued: dict[Stream, int] = {}
        for tag, stream in self._leases.expired(self._clock.monotonic()):
            async with broker("requeue"):
                await channel.basic_nack(tag, requeue=True)
            requeued[stream] = requeued.get(stream, 0) + 1
        return requeued

    async def _ready_counts(self, streams: Sequence[Stream]) -> dict[Stream, int]:
        """Ready messages of ``streams``, in the order given (high before normal before low)."""
        control = await self._ready_channel(self._control, "count")
        counts: dict[Stream, int] = {}
        for stream in streams:
            async with broker("count"):
                declared = await control.queue_declare(self._queues[stream], passive=True, timeout=OP_TIMEOUT)
            counts[stream] = declared.message_count or 0
        return counts

    async def _hold_partitions(self) -> Partitions:
        partitions = Partitions(
            RabbitLeases(self._connection, self._ns),
            self._partition_count,
            self._lease,
            member=member_id(),
            busy=self._leases.holds,
            gained=_nothing,  # the broker put what the last holder left unacked back at the queue's head
            lost=_nothing,  # nothing is read ahead (basic.get)
        )
        await partitions.start()
        return partitions

    async def _reset_reader(self) -> None:
        """A get that timed out may still be answered later, leaving a delivery nobody tracks: close the
        channel (the broker requeues all it holds) and open another."""
        with contextlib.suppress(*BROKER_ERRORS):
            async with asyncio.timeout(OP_TIMEOUT):
                await self._reader.close()
                await self._reader.reopen()

    # --- ack, lag, close --------------------------------------------------------------------------------

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        tokens = [_token_of(delivery) for delivery in deliveries]
        self._check()
        # Skipped: what the broker requeued already (its channel closed, its lease ran out): acking an unknown
        # tag would close the channel. An event acked here but requeued anyway is remembered as done, so its
        # redelivery is skipped as a copy.
        settled = [held for held in tokens if self._leases.settle(held) and not held.channel.is_closed]
        async with broker("ack"):
            for index, held in enumerate(settled):
                # Frames go out in order: waiting for the last one to drain covers all of them.
                await held.channel.basic_ack(held.tag, wait=index == len(settled) - 1)

    async def lag(self) -> int:
        """Ready messages in the lanes plus the deliveries this log holds unacked (see the module doc)."""
        self._check()
        self._leases.switch(await self._ready_channel(self._reader, "count"))  # a new channel holds nothing
        counts = await self._ready_counts(list(self._queues))
        return sum(counts.values()) + len(self._leases)

    async def close(self) -> None:
        """Closes the connection: every delivery not acked goes back to its queue. Idempotent."""
        self._closing.set()
        if self._partitions is not None:
            async with self._read_lock:  # a read in progress finishes first
                await self._partitions.close()
        await self._connection.close()

    def _check(self) -> None:
        check_connected(self._connection, self._closing.is_set(), "event log")

    async def _ready_channel(self, channel: AbstractRobustChannel, what: str) -> aiormq.Channel:
        async with broker(what):
            await channel.ready()  # after a reconnect: until the channel is reopened and restored
            return cast(aiormq.Channel, await channel.get_underlay_channel())


async def _nothing(partition: int) -> None:
    pass


def partition_queues(settings: Settings) -> dict[Stream, str]:
    """The queue of each (lane, partition); partition 0 keeps the lane's queue of earlier versions."""
    return {
        (lane, n): lane_queue(settings.namespace, lane) + (f".{n}" if n else "")
        for lane in PRIORITIES
        for n in range(max(1, settings.log_partitions))
    }


async def _drop(channel: aiormq.Channel, tag: int) -> None:
    async with broker("read"):
        await channel.basic_ack(tag)


def _token_of(delivery: Delivery) -> _Token:
    if not isinstance(delivery.token, _Token):
        raise InvalidInputError("not a delivery of the RabbitMQ event log")
    return delivery.token
