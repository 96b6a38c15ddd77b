"""The JetStream objects of the event log: a lane's stream (created, or brought to the partitioned layout) and a
partition's consumer (re-created by each new holder). See ``log.py`` for the layout and why."""

from __future__ import annotations

import asyncio
import contextlib

from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError, ServerError

from tidings.backends.nats.lanes import Lane
from tidings.backends.nats.link import Link, log
from tidings.errors import UnavailableError

CREATE_ATTEMPTS = 3  # creating a stream: a transient server error is tried again this many times in all
DUPLICATE_WINDOW = 120.0  # seconds in which JetStream drops a re-append of the same event id
MAX_ACK_PENDING = 20_000  # events delivered and unacked per partition consumer


async def ensure_stream(link: Link, js: JetStreamContext, lane: Lane, replicas: int) -> None:
    """The lane's stream on the lane's subject and its partitions' (``<subject>.<n>``). A stream that exists with
    another configuration is used as it is (an operator changed it), except that the partition subjects are
    added when missing: a stream of an earlier version has the lane's subject only."""
    subjects = [lane.subject, f"{lane.subject}.*"]
    config = StreamConfig(
        name=lane.stream,
        subjects=subjects,
        storage=StorageType.FILE,
        retention=RetentionPolicy.WORK_QUEUE,
        duplicate_window=DUPLICATE_WINDOW,
        num_replicas=replicas,
    )
    for attempt in range(1, CREATE_ATTEMPTS + 1):  # bounded
        try:
            await link.call(js.add_stream(config))
            return
        except UnavailableError as exc:
            if isinstance(exc.__cause__, BadRequestError):
                await _add_subjects(link, js, lane.stream, subjects)
                return
            # nats-server 2.9 fails a create that races the deletion of the account's last stream (it removes
            # the streams directory): a transient 500 worth another try.
            if not isinstance(exc.__cause__, ServerError) or attempt == CREATE_ATTEMPTS:
                raise
        await asyncio.sleep(0.05 * attempt)


async def _add_subjects(link: Link, js: JetStreamContext, stream: str, subjects: list[str]) -> None:
    info = await link.call(js.stream_info(stream))
    have = list(info.config.subjects or [])
    missing = [s for s in subjects if s not in have]
    if not missing:
        log.warning("nats_stream_config_differs", stream=stream)
        return
    info.config.subjects = have + missing
    await link.call(js.update_stream(info.config))
    log.info("nats_stream_partition_subjects_added", stream=stream, subjects=missing)


async def reset_consumer(link: Link, js: JetStreamContext, lane: Lane, ack_wait: float) -> None:
    """The partition's consumer, created afresh: it starts at the partition's oldest event still in the stream,
    and on a work-queue stream that is the oldest one not acked. So a new holder of the partition hands out what
    the last holder left unacked first, in order, then the newer events."""
    with contextlib.suppress(UnavailableError):
        await link.call(js.delete_consumer(lane.stream, lane.consumer))
    config = ConsumerConfig(
        durable_name=lane.consumer,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=ack_wait,
        max_ack_pending=MAX_ACK_PENDING,
        filter_subject=lane.subject,
    )
    await link.call(js.add_consumer(lane.stream, config))
