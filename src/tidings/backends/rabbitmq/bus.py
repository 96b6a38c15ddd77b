"""``ports.Bus`` on RabbitMQ (``RabbitBus``): the topic exchange ``{ns}.live``, with aio-pika.

At most once. Each ``RabbitBus`` has one exclusive, auto-delete queue (bounded: past ``LIVE_QUEUE_MAX`` the
oldest message goes), bound to ``{ns}.live`` with the routing key ``{token(app)}.{token(user)}`` while that
user's subscription here is open (one per (app, user): ``ports.Bus``). Messages go out transient, without
confirms, pipelined. The consumer has a bounded prefetch and acks (``multiple``) every ``LIVE_ACK_EVERY``
dispatched messages, so a busy event loop never piles up deliveries: the excess waits in the broker's bounded
queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Sequence
from typing import cast

import aio_pika
import aiormq
import structlog
from aio_pika.abc import (
    AbstractIncomingMessage,
    AbstractRobustChannel,
    AbstractRobustConnection,
    AbstractRobustExchange,
    AbstractRobustQueue,
)

from tidings.backends.envelope import decode_live, encode_live
from tidings.backends.rabbitmq.connection import (
    BROKER_ERRORS,
    broker,
    check_connected,
    connect,
    live_exchange,
    routing_key,
)
from tidings.core.models import LiveMessage
from tidings.errors import ConflictError, UnavailableError
from tidings.ports import Bus, LiveHandler, Subscription
from tidings.settings import Settings

log = structlog.get_logger("tidings.rabbitmq")

LIVE_PREFETCH = 1000  # bus messages in flight to this process
LIVE_ACK_EVERY = 100  # bus deliveries per ack (multiple); must stay below LIVE_PREFETCH
LIVE_QUEUE_MAX = 100_000  # bus messages the broker keeps for this process; beyond, the oldest are dropped

TRANSIENT = aiormq.spec.Basic.Properties(delivery_mode=1)


class RabbitSubscription:
    """The subscription of one (app, user); ``close`` is idempotent and never raises."""

    def __init__(self, bus: RabbitBus, key: tuple[str, str], handler: LiveHandler) -> None:
        self._bus = bus
        self.key = key
        self.handler = handler

    async def close(self) -> None:
        await self._bus.unsubscribe(self)


class RabbitBus:
    """``ports.Bus`` over the topic exchange ``{ns}.live``; one exclusive queue per bus instance, bound for each
    (app, user) with its one subscription here."""

    def __init__(
        self,
        connection: AbstractRobustConnection,
        channel: AbstractRobustChannel,
        exchange: AbstractRobustExchange,
        queue: AbstractRobustQueue,
    ) -> None:
        self._connection = connection
        self._channel = channel
        self._exchange = exchange
        self._queue = queue
        self._subscriptions: dict[tuple[str, str], RabbitSubscription] = {}
        self._bound: set[tuple[str, str]] = set()
        self._bind_lock = asyncio.Lock()  # one bind/unbind at a time: a binding follows its subscription
        self._closed = False

    @classmethod
    async def open(cls, url: str, settings: Settings) -> Bus:
        return await cls.connect(url, settings)

    @classmethod
    async def connect(cls, url: str, settings: Settings) -> RabbitBus:
        connection = await connect(url, "bus", settings.namespace)
        try:
            async with broker("open the live bus"):
                channel = await connection.channel(publisher_confirms=False)
                await channel.set_qos(prefetch_count=LIVE_PREFETCH)
                exchange = await channel.declare_exchange(
                    live_exchange(settings.namespace), aio_pika.ExchangeType.TOPIC, durable=True
                )
                queue = await channel.declare_queue(
                    f"{live_exchange(settings.namespace)}.{uuid.uuid4().hex}",
                    exclusive=True,
                    auto_delete=True,
                    arguments={"x-max-length": LIVE_QUEUE_MAX},
                )
                bus = cls(connection, channel, exchange, queue)
                await queue.consume(bus._on_message)
        except BaseException:
            await connection.close()
            raise
        return bus

    async def publish(self, messages: Sequence[LiveMessage]) -> None:
        if not messages:
            return
        self._check()
        async with broker("publish"):
            await self._channel.ready()
            channel = cast(aiormq.Channel, await self._channel.get_underlay_channel())
            for index, message in enumerate(messages):
                await channel.basic_publish(
                    encode_live(message),
                    exchange=self._exchange.name,
                    routing_key=routing_key(message.app, message.user),
                    properties=TRANSIENT,
                    wait=index == len(messages) - 1,  # frames go out in order: the last drained, all are
                )

    async def subscribe(self, app: str, user: str, handler: LiveHandler) -> Subscription:
        """``ConflictError`` while (app, user) has an open subscription here (see ``ports.Bus``)."""
        self._check()
        key = (app, user)
        if key in self._subscriptions:
            raise ConflictError("this (app, user) is subscribed already on this bus")
        # Taken before the first await, so that a concurrent second subscribe is refused too.
        subscription = self._subscriptions[key] = RabbitSubscription(self, key, handler)
        try:
            async with self._bind_lock:
                if key not in self._bound:
                    async with broker("subscribe"):
                        await self._queue.bind(self._exchange, routing_key(app, user))
                    self._bound.add(key)
        except BaseException:
            if self._subscriptions.get(key) is subscription:
                del self._subscriptions[key]  # a failed subscribe leaves nothing behind
            raise
        return subscription

    async def unsubscribe(self, subscription: RabbitSubscription) -> None:
        """Stops calling the handler at once, then unbinds the user."""
        if self._subscriptions.get(subscription.key) is not subscription:
            return
        del self._subscriptions[subscription.key]
        async with self._bind_lock:
            if self._closed or subscription.key in self._subscriptions or subscription.key not in self._bound:
                return  # subscribed again meanwhile, or nothing to undo
            try:
                async with broker("unsubscribe"):
                    await self._queue.unbind(self._exchange, routing_key(*subscription.key))
            except UnavailableError as exc:
                # Left bound: it only brings messages nobody here wants (dropped) until the user comes back.
                log.warning("live_unbind_failed", error=exc.code)
                return
            self._bound.discard(subscription.key)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        try:
            live = decode_live(message.body)
        except ValueError:
            live = None
            log.warning("live_message_undecodable", size=len(message.body))
        if live is not None:
            subscription = self._subscriptions.get((live.app, live.user))
            if subscription is not None:
                _deliver(subscription, live)
        # One ack (multiple) per LIVE_ACK_EVERY deliveries frees the prefetch slots of all before it: they were
        # dispatched already (each delivery runs in its own task, in order, without waiting before this).
        tag = message.delivery_tag
        if tag is not None and tag % LIVE_ACK_EVERY == 0:
            with contextlib.suppress(*BROKER_ERRORS):
                await cast(aiormq.Channel, message.channel).basic_ack(tag, multiple=True, wait=False)

    async def close(self) -> None:
        """Closes the connection (the broker deletes the exclusive queue). Idempotent."""
        self._closed = True
        self._subscriptions.clear()
        await self._connection.close()

    def _check(self) -> None:
        check_connected(self._connection, self._closed, "live bus")


def _deliver(subscription: RabbitSubscription, message: LiveMessage) -> None:
    try:
        subscription.handler(message)
    except Exception:
        # No user id or payload in the log line: ids and bodies stay out of logs.
        log.exception("live_handler_failed", app=message.app, kind=message.kind)
