"""Partition leases on RabbitMQ (``backends.partitions.LeaseStore``): exclusive consumers.

RabbitMQ has no keys with a TTL, but it has what a lease needs: a consumer that only one connection can hold
and that the broker drops the moment that connection dies. Partition n's lease is an exclusive consumer
(``basic.consume`` with ``exclusive``) on the empty classic queue ``{ns}.partitions.<n>``, on a channel of its
own; nothing is ever published there. Taking it: a passive declare says whether a consumer is on it (then it is
held), else the consume; a refusal (another member won the race) closes only that channel. Renewing is
checking the channel is still open; releasing is closing it. A worker killed with -9 loses its leases as soon
as the broker sees its socket close (at once on the same machine; within the AMQP heartbeat otherwise), not
after ``log_lease``: the lease setting plays no part here.

Members: each holds one plain consumer on ``{ns}.partitions.members``; its consumer count is the number of
live members.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import cast

import aio_pika
import aiormq
from aio_pika.abc import AbstractRobustChannel, AbstractRobustConnection

from tidings.backends.rabbitmq.connection import BROKER_ERRORS, OP_TIMEOUT, broker
from tidings.errors import UnavailableError


async def _ignore(message: aiormq.abc.DeliveredMessage) -> None:
    """Nothing is published on the lease and member queues."""


class RabbitLeases:
    def __init__(self, connection: AbstractRobustConnection, namespace: str) -> None:
        self._connection = connection
        self._prefix = f"{namespace}.partitions."
        self._members_queue = f"{namespace}.partitions.members"
        self._control: AbstractRobustChannel | None = None
        self._control_lock = (
            asyncio.Lock()
        )  # ``take`` runs for several partitions at once: one control channel
        self._roster: aiormq.Channel | None = None
        self._held: dict[int, aiormq.Channel] = {}

    async def _control_channel(self) -> aiormq.Channel:
        async with self._control_lock:
            if self._control is None:
                async with broker("partition leases"):
                    self._control = await self._connection.channel(publisher_confirms=False)
        async with broker("partition leases"):
            await self._control.ready()
            return cast(aiormq.Channel, await self._control.get_underlay_channel())

    async def _plain_channel(self) -> aiormq.Channel:
        """A channel that is not restored after a reconnect: a lease held on it ends with the connection."""
        transport = cast(aio_pika.RobustConnection, self._connection).transport
        if transport is None:
            raise UnavailableError("RabbitMQ is unreachable; reconnecting")
        async with broker("partition leases"):
            return cast(aiormq.Channel, await transport.connection.channel())

    async def heartbeat(self) -> None:
        if self._roster is not None and not self._roster.is_closed:
            return
        control = await self._control_channel()
        async with broker("partition members"):
            await control.queue_declare(self._members_queue, durable=True, timeout=OP_TIMEOUT)
            self._roster = await self._plain_channel()
            await self._roster.basic_consume(self._members_queue, _ignore, no_ack=True, timeout=OP_TIMEOUT)

    async def members(self) -> int:
        control = await self._control_channel()
        async with broker("partition members"):
            declared = await control.queue_declare(self._members_queue, passive=True, timeout=OP_TIMEOUT)
        return max(1, declared.consumer_count or 0)

    async def take(self, partition: int) -> bool:
        queue = f"{self._prefix}{partition}"
        control = await self._control_channel()
        async with broker("partition lease"):
            declared = await control.queue_declare(queue, durable=True, timeout=OP_TIMEOUT)
        if declared.consumer_count:
            return False
        channel = await self._plain_channel()
        try:
            async with broker("partition lease"):
                await channel.basic_consume(queue, _ignore, no_ack=True, exclusive=True, timeout=OP_TIMEOUT)
        except UnavailableError as exc:
            with contextlib.suppress(*BROKER_ERRORS):
                await channel.close()
            if isinstance(exc.__cause__, aiormq.exceptions.ChannelAccessRefused):
                return False  # another member won the race
            raise
        self._held[partition] = channel
        return True

    async def renew(self, partitions: Sequence[int]) -> set[int]:
        kept = set()
        for partition in partitions:
            channel = self._held.get(partition)
            if channel is not None and not channel.is_closed:
                kept.add(partition)
            else:
                self._held.pop(partition, None)
        return kept

    async def release(self, partition: int) -> None:
        channel = self._held.pop(partition, None)
        if channel is not None:
            with contextlib.suppress(*BROKER_ERRORS):
                await channel.close()

    async def leave(self) -> None:
        roster, self._roster = self._roster, None
        if roster is not None:
            with contextlib.suppress(*BROKER_ERRORS):
                await roster.close()
