"""RabbitMQ (``amqp://``): the event log on quorum queues and the live bus on a topic exchange.

The shared broker is ``TIDINGS_TEST_AMQP_URL`` (default: the one on 127.0.0.1:5672). Each test's ``ns`` prefixes
its queues and exchange; ``cleanup`` deletes them.
"""

from __future__ import annotations

import contextlib
import os

import aio_pika

from tidings.backends.rabbitmq import RabbitBus, RabbitEventLog
from tidings.backends.rabbitmq.connection import lane_queue, live_exchange
from tidings.core.models import PRIORITIES
from tidings.ports import Bus, EventLog, Store
from tidings.settings import Settings

NAME = "rabbitmq"
URL = os.environ.get("TIDINGS_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
# Long enough that no contract test sees a lease run out; the lease test sets its own.
ACK_WAIT = 30.0

_reachable: bool | None = None


async def available() -> bool:
    global _reachable
    if _reachable is None:
        try:
            connection = await aio_pika.connect(URL, timeout=2)
        except Exception:
            _reachable = False
        else:
            await connection.close()
            _reachable = True
    return _reachable


def settings_for(settings: Settings, ns: str, ack_wait: float = ACK_WAIT) -> Settings:
    return settings.replace(namespace=ns, ack_wait=ack_wait)


async def open_log(settings: Settings, store: Store, ns: str) -> EventLog:
    return await RabbitEventLog.open(URL, settings_for(settings, ns), store)


async def open_bus(settings: Settings, ns: str) -> Bus:
    return await RabbitBus.open(URL, settings_for(settings, ns))


async def cleanup(ns: str, url: str = URL) -> None:
    """Deletes the lane queues and the live exchange of ``ns`` (a bus queue goes with its connection)."""
    connection = await aio_pika.connect(url, timeout=2)
    try:
        channel = await connection.channel()
        for lane in PRIORITIES:
            for n in range(Settings().log_partitions):  # partition 0 is the lane's queue
                await channel.queue_delete(lane_queue(ns, lane) + (f".{n}" if n else ""))
        for n in range(Settings().log_partitions):  # the partition leases, and the members' queue
            await channel.queue_delete(f"{ns}.partitions.{n}")
        await channel.queue_delete(f"{ns}.partitions.members")
        with contextlib.suppress(aio_pika.exceptions.ChannelClosed):
            await channel.exchange_delete(live_exchange(ns))
    finally:
        await connection.close()
