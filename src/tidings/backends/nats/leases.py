"""Partition leases on NATS (``backends.partitions.LeaseStore``): a JetStream key-value bucket.

Bucket ``{ns}_partitions``, history 1, max age = ``settings.log_lease``: an entry the server has not seen
written for ``lease`` seconds is gone. ``p.<n>`` holds partition n's lease (value: the member), ``m.<member>``
is a member's heartbeat. Taking is ``create`` (only if absent: compare-and-set on the key's last revision),
renewing is ``update`` against the revision this member wrote last (a lease lost to another member fails it),
all of a member's leases at once; releasing is a ``delete`` against that revision. Every process must run with
the same lease; the last one to open the bucket sets its max age.

Members are counted from the bucket stream's per-subject counts (one stream-info request), not with the
key-value ``keys()`` call: that opens an ordered consumer per call, which the server keeps for five minutes
(``inactive_threshold``), so every round of every worker left one more consumer on the bucket, and it waits
without a deadline for a marker that does not come if the entries it counted expire before they are sent. A
member that leaves purges its heartbeat's subject (a ``delete`` would leave a marker, counted until it expires).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Sequence
from typing import TypeVar

from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BadRequestError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from tidings.backends.nats.link import LIBRARY_ERRORS
from tidings.errors import UnavailableError

T = TypeVar("T")


async def _call(operation: Awaitable[T]) -> T:
    try:
        return await operation
    except LIBRARY_ERRORS as exc:
        raise UnavailableError(f"NATS partition leases: {type(exc).__name__}") from exc


class NatsLeases:
    def __init__(self, js: JetStreamContext, kv: KeyValue, bucket: str, member: str) -> None:
        self._js = js
        self._kv = kv
        self._stream = f"KV_{bucket}"
        self._members_subjects = f"$KV.{bucket}.m.>"
        self._member = member.encode()
        self._key = "m." + re.sub(r"[^-_=a-zA-Z0-9]", "_", member)
        self._member_subject = f"$KV.{bucket}.{self._key}"
        self._revisions: dict[int, int] = {}  # partition -> revision of our last write

    @classmethod
    async def open(
        cls, js: JetStreamContext, namespace: str, lease: float, replicas: int, member: str
    ) -> NatsLeases:
        config = KeyValueConfig(
            bucket=f"{namespace}_partitions",
            history=1,
            ttl=lease,
            storage=StorageType.FILE,
            replicas=replicas,
        )
        try:
            kv = await _call(js.create_key_value(config))
        except UnavailableError as exc:
            if not isinstance(exc.__cause__, BadRequestError):
                raise
            # The bucket exists with another max age (the lease setting changed): the last opener sets it.
            stream = f"KV_{config.bucket}"
            info = await _call(js.stream_info(stream))
            info.config.max_age = lease
            await _call(js.update_stream(info.config))
            kv = await _call(js.key_value(config.bucket))
        return cls(js, kv, config.bucket, member)

    async def heartbeat(self) -> None:
        await _call(self._kv.put(self._key, self._member))

    async def members(self) -> int:
        info = await _call(self._js.stream_info(self._stream, subjects_filter=self._members_subjects))
        return max(1, len(info.state.subjects or {}))

    async def take(self, partition: int) -> bool:
        try:
            self._revisions[partition] = await self._kv.create(f"p.{partition}", self._member)
        except KeyWrongLastSequenceError:
            return False
        except LIBRARY_ERRORS as exc:
            raise UnavailableError(f"NATS partition leases: {type(exc).__name__}") from exc
        return True

    async def renew(self, partitions: Sequence[int]) -> set[int]:
        renewed = await asyncio.gather(*(self._renew(p) for p in partitions))
        return {p for p, kept in zip(partitions, renewed, strict=True) if kept}

    async def _renew(self, partition: int) -> bool:
        revision = self._revisions.get(partition)
        if revision is None:
            return False
        try:
            self._revisions[partition] = await self._kv.update(f"p.{partition}", self._member, last=revision)
        except (KeyWrongLastSequenceError, KeyNotFoundError):
            self._revisions.pop(partition, None)
            return False
        except LIBRARY_ERRORS as exc:
            raise UnavailableError(f"NATS partition leases: {type(exc).__name__}") from exc
        return True

    async def release(self, partition: int) -> None:
        revision = self._revisions.pop(partition, None)
        if revision is None:
            return
        try:
            await self._kv.delete(f"p.{partition}", last=revision)
        except (KeyWrongLastSequenceError, KeyNotFoundError):
            return  # not ours any more
        except LIBRARY_ERRORS as exc:
            raise UnavailableError(f"NATS partition leases: {type(exc).__name__}") from exc

    async def leave(self) -> None:
        # A purge of the member's subject, not a key-value delete: that leaves a marker message, counted as a
        # member until it expires (message deletes are denied on a key-value stream).
        await _call(self._js.purge_stream(self._stream, subject=self._member_subject))
