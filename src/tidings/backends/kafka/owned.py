"""What the Kafka log keeps per partition it owns, and per record it fetched or handed out (``log.py``)."""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiokafka import TopicPartition

from tidings.core.models import Event, event_from_bytes

log = structlog.get_logger("tidings.kafka")

# The appending process's running count, a record header: events accepted in the same instant (one batch)
# keep their order when a worker merges partitions by acceptance time.
ORDER_HEADER = "tidings-n"


@dataclass(frozen=True, slots=True)
class Token:
    """What ``ack`` needs: the record's place, and the ownership epoch it was handed out under."""

    topic: str
    partition: int
    offset: int
    epoch: int


@dataclass(frozen=True, slots=True)
class Fetched:
    """A record fetched and not handed out yet; ``event`` None when it is not an event of ours."""

    offset: int
    event: Event | None
    appended: int  # the ``ORDER_HEADER`` count, 0 without one


def acceptance_order(fetched: Fetched) -> tuple[float, int]:
    """Acceptance order: accepted_at, then the order of appending (the events of one batch share a time)."""
    return (fetched.event.accepted_at if fetched.event is not None else -1.0, fetched.appended)


def appended_count(record: Any) -> int:
    for name, value in record.headers or ():
        if name == ORDER_HEADER and isinstance(value, bytes):
            return int.from_bytes(value, "big")
    return 0


def decoded(tp: TopicPartition, record: Any) -> Event | None:
    try:
        return event_from_bytes(record.value)
    except (TypeError, ValueError):
        # Not ours (someone else wrote to the topic): skipped, and committed past like an ack.
        log.error("log_entry_unreadable", topic=tp.topic, offset=record.offset)
        return None


@dataclass
class Owned:
    """One partition while this member owns it: records fetched not handed out, and handed out not acked."""

    epoch: int
    fetched: deque[Fetched] = field(default_factory=deque)
    outstanding: set[int] = field(default_factory=set)
    handed_up_to: int | None = None  # one past the last record handed out
    committed: int = -1
    settled: asyncio.Event = field(default_factory=asyncio.Event)

    def commit_point(self) -> int | None:
        """The offset to commit: the first record handed out and not acked, else one past the last handed."""
        if self.outstanding:
            return min(self.outstanding)
        return self.handed_up_to


@dataclass
class Seen:
    """An event id handed out recently: where, under which ownership, and whether it was acked."""

    tp: TopicPartition
    epoch: int
    acked: bool = False
