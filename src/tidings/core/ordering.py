"""Order by key: which partition of a lane an event goes to.

Events with the same ordering key are fanned out in acceptance order, however many workers share the lane.
Every event log keeps that promise the same way: a lane is split into a fixed number of partitions, an event
goes to the partition its key hashes to, and each partition is consumed by one worker at a time. This module
is the one place that says what an event's key is and where a key lands, so every engine agrees.
"""

from __future__ import annotations

import hashlib

from tidings.core.models import Event


def ordering_key(event: Event) -> str:
    """The producer's ``ordering_key``; else the single recipient, else the topic, else the event id.

    A fan-out job of a split topic event (``event.part``) is keyed by its root and index, so a celebrity's
    chunks spread over the partitions instead of queueing behind each other: chunks go to different
    recipients, and each recipient's order is kept by the inbox seq, not by the log.
    """
    part = event.part
    if part is not None:
        return f"{part.root}/{part.kind}/{part.index}"
    if event.ordering_key is not None:
        return event.ordering_key
    if event.recipients is not None and len(event.recipients) == 1:
        return event.recipients[0]
    if event.topic is not None:
        return event.topic
    return event.id


def partition_of(key: str, partitions: int) -> int:
    """The partition in ``range(partitions)`` that ``key`` lands on: stable across processes, runs and engines
    (not Python's salted ``hash``), and spread evenly (the first 8 bytes of a BLAKE2b digest)."""
    if partitions <= 1:
        return 0
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % partitions


def event_partition(event: Event, partitions: int) -> int:
    return partition_of(ordering_key(event), partitions)
