"""The Kafka live bus (``KafkaBus``): one topic every gateway reads in full.

Kafka has no per-user channels, and a topic per user is not a thing a cluster wants. So the bus is one topic,
``{namespace}.live`` (``kafka_partitions`` partitions, keyed by (app, user) so a user's messages stay in order),
and every bus reads every partition from the end, without a consumer group (each gateway must see all of it),
handing a message to the handler of its (app, user) when this process holds one and dropping it otherwise.

The price: every gateway receives the whole live stream, including the messages of users connected elsewhere.
A subscription is in place at once (nothing to ask the broker); a message is handed to it only when its
producer's timestamp is not older than the subscription (it may have been fetched later). A worker clock ahead
of the gateway's cannot lose anything that way; one behind it may drop a message published in the first
moments of a subscription, which the backlog read that follows every subscribe delivers.

That is fine for tens of gateways (a live message is a few hundred bytes); past that, point the gateways at a
bus with per-user routing (NATS or Redis as ``--broker``, with the log on Kafka: see docs/scaling.md). The live
topic keeps little: it is created with ``retention.ms`` of one hour, and the bus is at most once like the
others: a gateway fills any gap from the inbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from tidings.backends.envelope import decode_live, encode_live
from tidings.backends.kafka.client import REQUEST_TIMEOUT_MS, bootstrap_servers, ensure_topics, translated
from tidings.core.models import LiveMessage
from tidings.core.ordering import partition_of
from tidings.errors import ConflictError, UnavailableError
from tidings.ports import Bus, LiveHandler, Subscription
from tidings.settings import Settings

bus_log = structlog.get_logger("tidings.bus")

LIVE_RETENTION_MS = 3_600_000  # live messages are worth nothing after a gateway caught up from the inbox


class KafkaSubscription:
    def __init__(self, bus: KafkaBus, key: tuple[str, str], handler: LiveHandler) -> None:
        self._bus = bus
        self.key = key
        self.handler = handler
        self.since_ms = int(time.time() * 1000)  # records stamped earlier were published before it

    async def close(self) -> None:
        self._bus.remove(self)


class KafkaBus:
    """``ports.Bus`` on one Kafka topic read in full by every process (see the module docstring)."""

    def __init__(self, servers: str, settings: Settings) -> None:
        self._servers = servers
        self.topic = f"{settings.namespace}.live"
        self._settings = settings
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._partitions = 1
        self._subscriptions: dict[tuple[str, str], KafkaSubscription] = {}
        self._reader: asyncio.Task[None] | None = None
        self._closed = False

    @classmethod
    async def open(cls, url: str, settings: Settings) -> Bus:
        bus = cls(bootstrap_servers(url), settings)
        try:
            await bus.prepare()
        except BaseException:
            await bus.close()
            raise
        return bus

    async def prepare(self) -> None:
        """Creates the topic when missing; starts reading at its end (positions resolved before returning, so
        whatever is published after ``open`` is seen)."""
        settings = self._settings
        await ensure_topics(
            self._servers,
            {self.topic: max(1, settings.kafka_partitions)},
            settings.kafka_replication,
            {"retention.ms": str(LIVE_RETENTION_MS)},
        )
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self._servers, acks=1, linger_ms=0, request_timeout_ms=REQUEST_TIMEOUT_MS
        )
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self._servers, group_id=None, enable_auto_commit=False, fetch_max_wait_ms=20
        )
        with translated("open"):
            await self._producer.start()
            await self._consumer.start()
            partitions = await self._producer.partitions_for(self.topic)
            self._partitions = len(partitions)
            tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
            self._consumer.assign(tps)
            await self._consumer.seek_to_end(*tps)
            for tp in tps:
                await self._consumer.position(tp)
        self._reader = asyncio.create_task(self._read(), name="tidings-kafka-bus")

    async def publish(self, messages: Sequence[LiveMessage]) -> None:
        self._check_open()
        producer = self._producer
        assert producer is not None
        with translated("publish"):
            futures = [
                await producer.send(
                    self.topic,
                    encode_live(m),
                    partition=partition_of(f"{m.app}/{m.user}", self._partitions),
                )
                for m in messages
            ]
            for future in futures:
                await future

    async def subscribe(self, app: str, user: str, handler: LiveHandler) -> Subscription:
        """Local only (the topic is read in full already): in place at once."""
        self._check_open()
        key = (app, user)
        if key in self._subscriptions:
            raise ConflictError("this (app, user) is subscribed already on this bus")
        subscription = self._subscriptions[key] = KafkaSubscription(self, key, handler)
        return subscription

    def remove(self, subscription: KafkaSubscription) -> None:
        if self._subscriptions.get(subscription.key) is subscription:
            del self._subscriptions[subscription.key]

    async def _read(self) -> None:
        """Runs until ``close``: fetches and dispatches; a failure is logged and the fetch retried."""
        consumer = self._consumer
        assert consumer is not None
        while not self._closed:
            try:
                batches = await consumer.getmany(timeout_ms=1000)
            except KafkaError as exc:
                bus_log.warning("live_bus_fetch_failed", error=type(exc).__name__)
                await asyncio.sleep(0.5)
                continue
            for records in batches.values():
                for record in records:
                    self._dispatch(record.value, record.timestamp)

    def _dispatch(self, data: bytes | None, stamped_ms: int) -> None:
        try:
            message = decode_live(data or b"")
        except ValueError:
            bus_log.warning("live_message_unreadable")
            return
        subscription = self._subscriptions.get((message.app, message.user))
        if subscription is None:
            return  # a user connected to another gateway
        if stamped_ms < subscription.since_ms:
            return  # published before the subscription (fetched after it): the inbox backlog has it
        try:
            subscription.handler(message)
        except Exception:
            bus_log.exception("live_handler_failed", app=message.app, kind=message.kind)

    async def close(self) -> None:
        """Stops the reader and the clients; later calls raise ``UnavailableError``. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        self._subscriptions.clear()
        for client in (self._consumer, self._producer):
            if client is not None:
                with contextlib.suppress(KafkaError, OSError):
                    await client.stop()

    def _check_open(self) -> None:
        if self._closed:
            raise UnavailableError("the live bus is closed")
