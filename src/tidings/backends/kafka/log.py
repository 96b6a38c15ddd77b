"""The Kafka event log (``KafkaEventLog``): a topic per priority lane, partitioned by ordering key.

Topics. ``{namespace}.events.{lane}`` for high, normal and low, each with ``kafka_partitions`` partitions
(created at start-up when missing, ``client.ensure_topics``). An event goes to partition
``core.ordering.event_partition(event, n)``, given explicitly to the producer: every engine agrees where a key
lands, and Kafka's own murmur2 partitioner is never asked. ``n`` is the topic's real partition count, read from
the metadata, so processes started with another setting still agree. The record key is the ordering key (for
tools reading the topic), the value ``event_to_bytes(event)``.

Append. Records of concurrent calls share the producer's batches; a call returns once the broker acknowledged
each of its records with ``acks=all`` (on a cluster: written to every in-sync replica, at least
``min.insync.replicas`` of them). The idempotent producer is not used: producer idempotency lives in the store
(docs/decisions/0004, ``IdempotentLog``), a retried append may write a record twice, and the inbox write,
idempotent on the event id, absorbs the copy.

Delivery. One consumer per log, in group ``{namespace}.fanout``, subscribed to the three topics, joined on the
first ``read`` (an API process, which only appends, never takes partitions it would not read). Kafka gives each
partition to one member at a time: that is what keeps order by key across workers. ``read`` hands out the
records it fetched, lane by lane (high, normal, low), in offset order within a partition and, across the
partitions of a lane, by acceptance time (so one worker alone keeps acceptance order, as the contract says of
``tidings serve``; with several workers, order holds per key). Before it hands anything out it asks for the end
offsets of the partitions it owns with nothing fetched, in that lane and the higher ones, and fetches up to
them first (one ListOffsets request per read): a record accepted earlier cannot be left behind in a partition
the consumer had not fetched lately.

Ack = commit. Offsets are committed only by ``ack`` (no auto-commit), and only up to the first record of the
partition not acked yet: a commit never passes an unprocessed record, whatever order acks come in. The worker
acks after the inbox commit and the publish, so a crash redelivers from the last committed offset.

Rebalances are handled like leases. When a partition is revoked, the records fetched and not handed out are
dropped; for the handed-out ones the revocation waits (at most ``ack_wait``/2) for their acks and commits
them: the batch in hand is finished. If it does not finish in time it is abandoned: the partition's state is
forgotten, a later ack of it is ignored (never committed by a member that no longer owns it), and the new owner
reads from the last commit; the idempotent inbox makes the redelivery harmless.

Membership timers (``group_timeouts``). A dead worker's partitions move after the session timeout =
``log_lease`` (heartbeats every fifth of it), as a dead worker's leases do on the other engines. Heartbeats
are sent from the worker's event loop: a member whose loop stalls longer than that is evicted although alive,
and every eviction stops the whole group for a rebalance (on the test broker, about session/2 + 1 s each).
A real Kafka broker refuses sessions shorter than ``group.min.session.timeout.ms`` (6 s by default).

Stalled members. A member heartbeats from a task of its own, so one that joined and stopped reading (a worker
stuck in a batch, a log joined and never read from) kept its partitions, their events unread, for aiokafka's
default 5 minutes. One that has not asked for records for 2 x ``ack_wait`` (longer than a batch may stay
unacked), at least ``STALLED_AFTER``, leaves the group and the others take its partitions over; its next read
joins again. Its batch in hand is revoked as in a rebalance; the new owner may read it again (inbox absorbs it).

Duplicates. ``IdempotentLog`` appends a retried event again under its first id (no broker-side dedupe: the
idempotent producer is off). Both copies share an ordering key, so they land in the same partition and reach
the same member: a read skips (and commits past, like an ack) a record whose event id this log acked among its
last ``RECENT_IDS``, or holds unacked from the same partition under the same ownership. A copy read elsewhere
(after a rebalance) creates nothing either: the inbox write is idempotent on the event id.

Lag = end offset minus the group's committed offset, summed over every partition. The end offset is the
largest of the broker's (ListOffsets), the one of this process's own appends and the fetch high watermark (the
memory test broker answers ListOffsets with the base offset of the last batch + 1, an undercount).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from tidings.backends.idempotent import IdempotentLog
from tidings.backends.kafka.client import (
    REQUEST_TIMEOUT_MS,
    bootstrap_servers,
    ensure_topics,
    group_timeouts,
    translated,
)
from tidings.backends.kafka.owned import (
    ORDER_HEADER,
    Fetched,
    Owned,
    Seen,
    Token,
    acceptance_order,
    appended_count,
    decoded,
)
from tidings.core.models import PRIORITIES, Priority, event_to_bytes
from tidings.core.ordering import ordering_key, partition_of
from tidings.errors import InvalidInputError, UnavailableError
from tidings.ports import Append, Appended, Delivery, EventLog, Store
from tidings.settings import Settings

log = structlog.get_logger("tidings.kafka")

JOIN_TIMEOUT = 60.0  # seconds the first read waits for the group to hand this member its partitions
RECENT_IDS = 10_000  # event ids remembered to skip retried copies (see "Duplicates")
CATCH_UP_TRIES = 20  # fetches a read makes for records known to precede those it holds (``_catch_up``)
# A fetch waits at most this long for records: short, because a broker may hold a fetch its whole wait even
# with records of some partitions ready (the memory test broker does: 100 ms cut its read rate by two thirds);
# an idle worker then asks 50 times a second, which a broker answers from memory.
FETCH_WAIT_MS = 20
PREFETCH_ROUNDS = 50  # x 100 ms: the first fetch after joining


def _client_id() -> str:
    return f"tidings-{socket.gethostname()}-{os.getpid()}"


class KafkaEventLog:
    """``ports.EventLog`` on Kafka; ``open`` wraps it in ``IdempotentLog`` (keys live in the store)."""

    def __init__(self, servers: str, settings: Settings) -> None:
        self._servers = servers
        self._settings = settings
        self.topics: dict[Priority, str] = {
            lane: f"{settings.namespace}.events.{lane}" for lane in PRIORITIES
        }
        self._lane_of = {topic: lane for lane, topic in self.topics.items()}
        self.group = f"{settings.namespace}.fanout"
        self._partitions: dict[str, int] = {}
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._probe: AIOKafkaConsumer | None = None  # group-less: end offsets for ``lag``
        self._admin: AIOKafkaAdminClient | None = None  # the group's committed offsets for ``lag``
        self._owned: dict[TopicPartition, Owned] = {}
        self._epoch = 0
        self._assigned = asyncio.Event()
        self._appended_end: dict[TopicPartition, int] = {}
        self._recent: OrderedDict[str, Seen] = OrderedDict()
        self._sent = 0  # records this process appended: the order of events accepted in the same instant
        self._reading = asyncio.Lock()
        self._joining = asyncio.Lock()
        self._prefetched = False
        self._closed = False

    @classmethod
    async def open(cls, url: str, settings: Settings, store: Store) -> EventLog:
        log_ = cls(bootstrap_servers(url), settings)
        try:
            await log_.prepare()
        except BaseException:
            await log_.close()
            raise
        return IdempotentLog(log_, store.idempotency)

    async def prepare(self) -> None:
        """Creates the topics when missing, starts the producer and learns each topic's partition count."""
        settings = self._settings
        wanted = dict.fromkeys(self.topics.values(), max(1, settings.kafka_partitions))
        await ensure_topics(self._servers, wanted, settings.kafka_replication)
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self._servers,
            client_id=_client_id(),
            acks="all",
            enable_idempotence=False,
            linger_ms=1,
            request_timeout_ms=REQUEST_TIMEOUT_MS,
        )
        self._probe = AIOKafkaConsumer(
            bootstrap_servers=self._servers, group_id=None, enable_auto_commit=False
        )
        self._admin = AIOKafkaAdminClient(
            bootstrap_servers=self._servers, request_timeout_ms=REQUEST_TIMEOUT_MS
        )
        with translated("open"):
            await self._producer.start()
            await self._probe.start()
            await self._admin.start()
            for topic in self.topics.values():
                partitions = await self._producer.partitions_for(topic)
                self._partitions[topic] = len(partitions)

    # --- append -----------------------------------------------------------------------------------------

    async def append(self, items: Sequence[Append]) -> list[Appended | Exception]:
        self._check_open()
        producer = self._producer
        assert producer is not None  # set by prepare
        results: list[Appended | Exception] = []
        sent: list[tuple[int, asyncio.Future[Any]]] = []
        with translated("append"):
            for item in items:
                event = item.event
                topic = self.topics.get(event.priority)
                if topic is None:
                    results.append(InvalidInputError(f"unknown priority {event.priority!r}"))
                    continue
                key = ordering_key(event)
                partition = partition_of(key, self._partitions[topic])
                self._sent += 1
                future = await producer.send(
                    topic,
                    event_to_bytes(event),
                    key=key.encode(),
                    partition=partition,
                    headers=[(ORDER_HEADER, self._sent.to_bytes(8, "big"))],
                )
                sent.append((len(results), future))
                results.append(Appended(event.id))
            for _, future in sent:
                metadata = await future
                tp = TopicPartition(metadata.topic, metadata.partition)
                self._appended_end[tp] = max(self._appended_end.get(tp, 0), metadata.offset + 1)
        return results

    # --- joining the group, rebalances ------------------------------------------------------------------

    async def join(self) -> None:
        """Joins the consumer group and waits for this member's first assignment (the first ``read`` does it;
        a caller that knows it is a worker may do it earlier)."""
        async with self._joining:
            if self._consumer is None:
                consumer = AIOKafkaConsumer(
                    bootstrap_servers=self._servers,
                    client_id=_client_id(),
                    group_id=self.group,
                    enable_auto_commit=False,
                    auto_offset_reset="earliest",
                    fetch_max_wait_ms=FETCH_WAIT_MS,
                    max_poll_records=max(1, self._settings.worker_batch) * 4,
                    **group_timeouts(self._settings),
                )
                consumer.subscribe(list(self.topics.values()), listener=_Listener(self))
                with translated("join"):
                    await consumer.start()
                self._consumer = consumer
        try:
            async with asyncio.timeout(JOIN_TIMEOUT):
                await self._assigned.wait()
        except TimeoutError as exc:
            raise UnavailableError("kafka: no partitions assigned by the group coordinator") from exc
        if not self._prefetched:
            self._prefetched = True
            await self._prefetch()

    async def _prefetch(self) -> None:
        """After the first assignment, waits (bounded) for the first records of partitions known to hold
        unread ones, so the first short read after a start does not come back empty for want of a fetch."""
        consumer = self._consumer
        assert consumer is not None
        async with self._reading:
            with translated("read"):
                tps = list(self._owned)
                if not tps:
                    return
                ends = await consumer.end_offsets(tps)
                behind = [
                    tp
                    for tp in tps
                    if max(ends[tp], self._appended_end.get(tp, 0)) > await _position(consumer, tp)
                ]
                for _ in range(PREFETCH_ROUNDS):
                    behind = [tp for tp in behind if tp in self._owned and not self._owned[tp].fetched]
                    if not behind:
                        return
                    self._keep(await consumer.getmany(*behind, timeout_ms=100))

    def assigned(self, partitions: Sequence[TopicPartition]) -> None:
        for tp in partitions:
            self._epoch += 1
            self._owned[tp] = Owned(self._epoch)
        self._assigned.set()

    async def revoked(self, partitions: Sequence[TopicPartition]) -> None:
        """Finishes the batch in hand of each revoked partition (waits for its acks, bounded by ack_wait/2),
        else abandons it; either way the partition's state is forgotten, so nothing of it is committed again."""
        losing = [(tp, self._owned[tp]) for tp in partitions if tp in self._owned]
        for _, owned in losing:
            owned.fetched.clear()
        pending = [owned.settled.wait() for _, owned in losing if owned.outstanding]
        if pending:
            try:
                async with asyncio.timeout(self._settings.ack_wait / 2):
                    await asyncio.gather(*pending)
            except TimeoutError:
                log.warning("kafka_batch_abandoned_on_rebalance", partitions=len(pending))
        for tp, owned in losing:
            if self._owned.get(tp) is owned:
                del self._owned[tp]

    # --- read -------------------------------------------------------------------------------------------

    async def read(self, max_items: int, timeout: float) -> list[Delivery]:
        self._check_open()
        if max_items <= 0:
            return []
        await self.join()
        consumer = self._consumer
        assert consumer is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout)
        async with self._reading:
            with translated("read"):
                while not self._closed:
                    await self._take_buffered(consumer)
                    await self._catch_up(consumer)
                    got = self._hand_out(max_items)
                    await self._commit_skipped()
                    remaining = deadline - loop.time()
                    if got or remaining <= 0:
                        return got
                    self._keep(await consumer.getmany(timeout_ms=max(1, int(min(remaining, 1.0) * 1000))))
        return []

    async def _take_buffered(self, consumer: AIOKafkaConsumer) -> None:
        """Everything aiokafka fetched already (bounded), so a merge by acceptance time sees whole fetches."""
        for _ in range(100):
            fetched = await consumer.getmany(timeout_ms=0)
            if not fetched:
                return
            self._keep(fetched)

    def _keep(self, fetched: dict[TopicPartition, list[Any]]) -> None:
        for tp, records in fetched.items():
            owned = self._owned.get(tp)
            if owned is not None:  # else: revoked meanwhile, and aiokafka will not hand it out again
                owned.fetched.extend(Fetched(r.offset, decoded(tp, r), appended_count(r)) for r in records)

    async def _catch_up(self, consumer: AIOKafkaConsumer) -> None:
        """Before records go out, fetches what the broker holds now in every partition that could come first
        and has nothing fetched: those of higher lanes (``high`` before ``normal`` before ``low``), and the
        other partitions of the same lane (the merge by acceptance time needs their heads). A producer's next
        event is accepted only after its previous one was appended, so once these partitions are fetched up to
        the end offsets asked for here, nothing accepted before a fetched record is still missing."""
        lanes = [self._lane_of[tp.topic] for tp, o in self._owned.items() if o.fetched]
        if not lanes:
            return
        lowest = max(PRIORITIES.index(lane) for lane in lanes)
        empty = [
            tp
            for tp, owned in self._owned.items()
            if PRIORITIES.index(self._lane_of[tp.topic]) <= lowest and not owned.fetched
        ]
        if not empty:
            return
        ends = await consumer.end_offsets(empty)
        for _ in range(CATCH_UP_TRIES):
            behind = [
                tp
                for tp in empty
                if tp in self._owned
                and max(ends[tp], self._appended_end.get(tp, 0)) > await _position(consumer, tp)
            ]
            if not behind:
                return
            self._keep(await consumer.getmany(*behind, timeout_ms=50))

    def _hand_out(self, max_items: int) -> list[Delivery]:
        """Lane by lane; within a lane, the fetched heads of its partitions merged by acceptance time, so one
        worker hands out events in the order they were accepted, and each partition in offset order. When a
        partition runs out of fetched records while others still hold some, the read stops there: what that
        partition holds next may be older than their heads, and the next read fetches it first."""
        got: list[Delivery] = []
        for lane in PRIORITIES:
            topic = self.topics[lane]
            owned_here = [(tp, owned) for tp, owned in self._owned.items() if tp.topic == topic]
            while len(got) < max_items:
                heads = [(tp, owned) for tp, owned in owned_here if owned.fetched]
                if not heads:
                    break
                tp, owned = min(heads, key=lambda h: acceptance_order(h[1].fetched[0]))
                record = owned.fetched.popleft()
                ran_out = not owned.fetched and len(heads) > 1
                owned.handed_up_to = record.offset + 1
                event = record.event
                if event is not None and not self._is_copy(event.id, tp):
                    self._remember(event.id, Seen(tp, owned.epoch))
                    owned.outstanding.add(record.offset)
                    owned.settled.clear()
                    token = Token(tp.topic, tp.partition, record.offset, owned.epoch)
                    got.append(Delivery(event, token=token, lane=lane))
                # else: unreadable (logged when fetched), or a retried append of an event in hand or done:
                # skipped, and committed past like an ack.
                if ran_out and got:
                    return got  # what that partition holds next may precede the others' heads
        return got

    def _is_copy(self, event_id: str, tp: TopicPartition) -> bool:
        seen = self._recent.get(event_id)
        if seen is None:
            return False
        owned = self._owned.get(seen.tp)
        return seen.acked or (seen.tp == tp and owned is not None and owned.epoch == seen.epoch)

    def _remember(self, event_id: str, seen: Seen) -> None:
        self._recent[event_id] = seen
        self._recent.move_to_end(event_id)
        while len(self._recent) > RECENT_IDS:
            self._recent.popitem(last=False)

    # --- ack, lag, close --------------------------------------------------------------------------------

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        self._check_open()
        touched: dict[TopicPartition, Owned] = {}
        for delivery in deliveries:
            token = delivery.token
            if not isinstance(token, Token):
                raise InvalidInputError("not a delivery of the kafka event log")
            tp = TopicPartition(token.topic, token.partition)
            seen = self._recent.get(delivery.event.id)
            if seen is not None:
                seen.acked = True  # processed (the worker acks after the inbox commit), whoever commits it
            owned = self._owned.get(tp)
            if owned is None or owned.epoch != token.epoch:
                continue  # abandoned at a rebalance: its new owner reads it again from the last commit
            owned.outstanding.discard(token.offset)
            touched[tp] = owned
        offsets: dict[TopicPartition, int] = {}
        for tp, owned in touched.items():
            point = owned.commit_point()
            if point is not None and point > owned.committed:
                offsets[tp] = point
        if offsets:
            await self._commit(offsets)
        for owned in touched.values():
            if not owned.outstanding:
                owned.settled.set()

    async def _commit_skipped(self) -> None:
        """Commits past records skipped without being handed out (retried copies, unreadable records) in
        partitions with nothing in hand: no ack would ever move their commit point, and the lag would keep
        counting them."""
        offsets = {
            tp: point
            for tp, owned in self._owned.items()
            if not owned.outstanding
            and (point := owned.commit_point()) is not None
            and point > owned.committed
        }
        if offsets:
            await self._commit(offsets)

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        consumer = self._consumer
        assert consumer is not None  # a delivery exists, so the consumer does
        try:
            with translated("ack"):
                await consumer.commit(offsets)
        except UnavailableError as exc:
            if isinstance(exc.__cause__, CommitFailedError | IllegalStateError):
                # The group moved the partition meanwhile: its new owner redelivers from the last commit.
                log.warning("kafka_commit_refused_after_rebalance", partitions=len(offsets))
                return
            raise
        for tp, offset in offsets.items():
            owned = self._owned.get(tp)
            if owned is not None:
                owned.committed = max(owned.committed, offset)

    async def lag(self) -> int:
        self._check_open()
        probe, admin = self._probe, self._admin
        assert probe is not None
        assert admin is not None
        tps = [TopicPartition(topic, p) for topic, n in self._partitions.items() for p in range(n)]
        with translated("lag"):
            ends = await probe.end_offsets(tps)
            committed = await admin.list_consumer_group_offsets(self.group, partitions=tps)
        total = 0
        for tp in tps:
            end = max(ends.get(tp, 0), self._appended_end.get(tp, 0))
            if self._consumer is not None and tp in self._owned:
                end = max(end, self._consumer.highwater(tp) or 0)
            done = committed.get(tp)
            done_offset = done.offset if done is not None and done.offset >= 0 else 0
            owned = self._owned.get(tp)
            if owned is not None:
                done_offset = max(done_offset, owned.committed)
            total += max(0, end - done_offset)
        return total

    async def close(self) -> None:
        """Leaves the group (its partitions go to the other members at once) without committing anything
        unacked, then closes the clients. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for client in (self._consumer, self._producer, self._probe):
            if client is not None:
                with contextlib.suppress(KafkaError, OSError):
                    await client.stop()
        if self._admin is not None:
            with contextlib.suppress(KafkaError, OSError):
                await self._admin.close()

    def _check_open(self) -> None:
        if self._closed:
            raise UnavailableError("the event log is closed")


async def _position(consumer: AIOKafkaConsumer, tp: TopicPartition) -> int:
    position: int = await consumer.position(tp)
    return position


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    """aiokafka's rebalance callbacks, handed to the log."""

    def __init__(self, owner: KafkaEventLog) -> None:
        self._owner = owner

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self._owner.revoked(list(revoked))

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self._owner.assigned(list(assigned))
