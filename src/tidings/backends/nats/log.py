"""The NATS event log on JetStream (``NatsEventLog``).

Layout. One stream per priority lane, ``{ns}_events_{lane}``: file storage, work-queue retention (an acked
event leaves the stream, so storage is bounded by the lag), and a ``DUPLICATE_WINDOW`` in which a re-append with
the same ``Nats-Msg-Id`` (= the event id) is dropped by the server. The lane is split into
``settings.log_partitions`` partitions (``core.ordering.event_partition``): subject ``{ns}.events.{lane}.{n}``
(partition 0: ``{ns}.events.{lane}``, the subject of earlier versions), each with a durable pull consumer
``fanout-{n}`` filtered on it. A partition is read by one worker at a time, the holder of its lease (a key-value
entry, ``leases.py``; shares and rebalancing: ``backends/partitions.py``). A new holder deletes and re-creates
the partition's consumer: on a work-queue stream that starts it at the oldest event not acked, so what a dead
holder had in hand comes first, in order, and not ``ack_wait`` later (docs/decisions/0006). AckWait is
``settings.ack_wait``.

Durability. ``append`` returns once JetStream answered a PubAck for every item: the server wrote the event to
its file store. That survives the server process being killed; surviving a power cut needs the stream on a
quorum of servers (``nats://host:4222?replicas=3``) or the server syncing every write (its ``sync`` setting).

Reading. ``read`` takes ``high``, then ``normal``, then ``low``, each with a no-wait pull for just what is still
wanted, so a flood of low never delays high and a read never takes more than ``max_items``. When nothing is
there it arms one waiting pull of one event per lane (living ``WAIT_SLICE`` at most, reused by later reads) and
sleeps until one delivers; what a pull delivers after its read returned is kept for the next read. Every pull
has a subscription of its own, so its end (a 404/408 status, or its batch filled) is known exactly, and a
subscription is dropped only once its pull ended: no delivery is thrown away on the client.

Redelivery. While this process lives it keeps what it holds in progress with ``+WPI`` every ``ack_wait / 4``
seconds, for up to ``HOLD_LIMIT`` x ``ack_wait`` per event, so a long batch is not redelivered meanwhile. When it
dies, its partitions go to another worker once their leases ran out, unacked events first. ``close`` NAKs what it
held and releases its leases. When ``ack`` returns the server has applied the acks (the last of each consumer is
an AckSync request, and a consumer applies acks in arrival order); a delivery of a partition lost meanwhile is
not acked (its consumer was reset; the new holder hands it out again). ``lag`` = the streams' messages.

Failure. Every call raises ``UnavailableError`` within ``OP_TIMEOUT`` seconds (at once when the connection is
known to be down); the connection reconnects by itself, forever, and the same objects work again (``link.py``).
At least once, as the worker expects: an append that raised may still land (the client sends its buffer on
reconnect; a retry under the same Idempotency-Key is deduped), and a server killed within ~0.1 s of confirming
acks may hand those events out again (it writes ack state just after confirming). nats-server before 2.10.14
may also deliver an event twice when a redelivery meets a pull whose client went away (fixed upstream;
``close`` lets its pulls end first to avoid it).
JetStream domains are not supported (``$JS.API``).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import math
import time
from collections.abc import Sequence
from functools import partial

import orjson
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from tidings.backends.idempotent import IdempotentLog
from tidings.backends.nats.lanes import Lane, Pull, ack_fields, appended, status_of
from tidings.backends.nats.leases import NatsLeases
from tidings.backends.nats.link import LIBRARY_ERRORS, OP_TIMEOUT, Link, log, parse_url
from tidings.backends.nats.streams import ensure_stream, reset_consumer
from tidings.backends.partitions import Partitions, member_id
from tidings.core.models import PRIORITIES, Priority, event_from_bytes, event_to_bytes
from tidings.core.ordering import event_partition
from tidings.errors import InvalidInputError, UnavailableError
from tidings.ports import Append, Appended, Delivery, EventLog, Store
from tidings.settings import Settings

LEGACY_CONSUMER = "fanout"  # the one consumer of each lane before partitions: deleted (it would overlap them)
NO_WAIT_TIMEOUT = 0.25  # seconds: a no-wait pull normally ends in one round trip; past this it was held back
WAIT_SLICE = 1.0  # seconds a waiting pull lives at most: a longer read re-arms; close waits this long at most
REARM_BACKOFF = 0.1  # seconds before re-arming a waiting pull that ended early with nothing
HOLD_LIMIT = 10  # in-progress acks keep an event for at most this many ack_waits


class NatsEventLog:
    """``ports.EventLog`` on JetStream (see the module docstring); ``open`` wraps it in ``IdempotentLog``."""

    def __init__(self, link: Link, settings: Settings, replicas: int = 1) -> None:
        self._link = link
        self._js: JetStreamContext = link.nc.jetstream(timeout=OP_TIMEOUT)
        self._ns = settings.namespace
        self._ack_wait = settings.ack_wait
        self._replicas = replicas
        self._partition_count = max(1, settings.log_partitions)
        self._lease = settings.log_lease
        # Priority-major: a read takes every held partition of high before normal before low.
        self._lanes = [
            Lane(p, f"{self._ns}_events_{p}", _subject(self._ns, p, n), n, f"fanout-{n}")
            for p in PRIORITIES
            for n in range(self._partition_count)
        ]
        self._by_key = {(lane.name, lane.partition): lane for lane in self._lanes}
        self._streams = {lane.stream for lane in self._lanes}
        self._out: dict[str, int] = {}  # ack subject -> partition: handed out, not acked
        self._partitions: Partitions | None = None  # taken on the first read: an API process takes none
        self._hold_lock = asyncio.Lock()
        self._held: dict[str, float] = {}  # ack subject -> when it arrived: delivered to us, not acked
        self._puback_inbox = ""
        self._pubacks: dict[str, asyncio.Future[Msg]] = {}  # token -> its PubAck, while an append waits
        self._tokens = itertools.count()
        self._arrivals = itertools.count()
        self._pull_lock = asyncio.Lock()  # takes and arming, one at a time: two readers never share a pull
        self._changed = asyncio.Event()  # replaced on every signal: a waiter never misses one
        self._keeper: asyncio.Task[None] | None = None
        self._closed = False
        link.on_change.append(self._on_link_change)

    @classmethod
    async def open(cls, url: str, settings: Settings, store: Store) -> EventLog:
        server, replicas = parse_url(url)
        link = await Link.connect(server, "event-log")
        log_ = cls(link, settings, replicas)
        try:
            await log_.ensure()
            await log_.start()
        except BaseException:
            await link.close()
            raise
        return IdempotentLog(log_, store.idempotency)

    async def ensure(self) -> None:
        """Creates each lane's stream, or takes it as it is (idempotent); partition consumers come with leases.

        The lane's consumer of earlier versions (``fanout``, unfiltered) is deleted: a work-queue stream allows
        no overlapping consumers. What it held unacked is read again by partition 0 (the lane's old subject).
        """
        for lane in self._lanes:
            if lane.partition == 0:
                await ensure_stream(self._link, self._js, lane, self._replicas)
                with contextlib.suppress(UnavailableError):
                    await self._link.call(self._js.delete_consumer(lane.stream, LEGACY_CONSUMER))

    async def start(self) -> None:
        """Listens for PubAcks and starts the in-progress keeper."""
        self._puback_inbox = self._link.nc.new_inbox()
        await self._link.call(self._link.nc.subscribe(f"{self._puback_inbox}.*", cb=self._on_puback))
        self._keeper = asyncio.create_task(self._keep_in_progress(), name="tidings-nats-in-progress")

    # --- append ---------------------------------------------------------------------------------------------

    async def append(self, items: Sequence[Append]) -> list[Appended | Exception]:
        """Publishes every item, then waits for all PubAcks. An event id twice in one call is published once.

        The publishes do not yield to the event loop, so a whole call leaves in one socket write.
        """
        if not items:
            return []
        self._check_open()
        results: list[Appended | Exception | None] = [None] * len(items)
        tokens: dict[str, str] = {}  # event id -> PubAck token
        try:
            for index, item in enumerate(items):
                event = item.event
                lane = self._by_key.get((event.priority, event_partition(event, self._partition_count)))
                if lane is None:
                    results[index] = InvalidInputError(f"unknown priority {event.priority!r}")
                elif event.id in tokens:
                    results[index] = Appended(event.id, duplicate=True)
                else:
                    tokens[event.id] = await self._publish(lane, item)
            confirmed = await self._confirmations(tokens)
        finally:
            for token in tokens.values():
                self._pubacks.pop(token, None)
        return [r if r is not None else confirmed[items[i].event.id] for i, r in enumerate(results)]

    async def _publish(self, lane: Lane, item: Append) -> str:
        token = str(next(self._tokens))
        self._pubacks[token] = asyncio.get_running_loop().create_future()
        reply = f"{self._puback_inbox}.{token}"
        headers = {"Nats-Msg-Id": item.event.id}
        data = event_to_bytes(item.event)
        await self._link.call(self._link.nc.publish(lane.subject, data, reply=reply, headers=headers))
        return token

    async def _confirmations(self, tokens: dict[str, str]) -> dict[str, Appended]:
        futures = [self._pubacks[token] for token in tokens.values()]
        if not futures:
            return {}
        _, pending = await asyncio.wait(futures, timeout=OP_TIMEOUT)
        if pending:
            raise UnavailableError("NATS did not confirm every append in time")
        return {event_id: appended(event_id, self._pubacks[t].result()) for event_id, t in tokens.items()}

    async def _on_puback(self, msg: Msg) -> None:
        future = self._pubacks.get(msg.subject.rpartition(".")[2])
        if future is not None and not future.done():
            future.set_result(msg)

    # --- read -----------------------------------------------------------------------------------------------

    async def read(self, max_items: int, timeout: float) -> list[Delivery]:
        self._check_open()
        if self._partitions is None:
            async with self._hold_lock:  # concurrent first reads take the partitions once
                if self._partitions is None:
                    self._partitions = await self._hold_partitions()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout)
        while not self._closed:  # bounded by the deadline: every round waits for a signal or the deadline
            changed = self._changed
            got = await self._take(max_items)
            remaining = deadline - loop.time()
            if got or remaining <= 0:
                return got
            await self._arm(remaining)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await changed.wait()
            self._link.check()  # woken by a lost connection: say so now rather than at the deadline
        return []

    async def _take(self, max_items: int) -> list[Delivery]:
        """Pulls what each lane still lacks, in lane order, then hands out; a failed pull hands out nothing.

        A lane whose waiting pull is still out is not pulled: that pull is first in the server's queue, so it
        would have had an event of the lane, and a no-wait pull racing it can be held back (see ``_pull_now``).
        """
        async with self._pull_lock:
            counts: list[int] = []
            lanes = self._reading()
            for lane in lanes:
                want = max_items - sum(counts)
                if want <= 0:
                    break
                if len(lane.ready) < want and not lane.armed(time.monotonic()):
                    await self._pull_now(lane, want - len(lane.ready))
                counts.append(min(want, len(lane.ready)))
            deliveries: list[Delivery] = []
            for lane, n in zip(lanes, counts, strict=False):
                deliveries += await self._hand_out(lane, n)
            return deliveries

    async def _pull_now(self, lane: Lane, batch: int) -> None:
        pull = await self._start_pull(lane, batch, wait=None)
        try:
            async with asyncio.timeout(NO_WAIT_TIMEOUT):
                outcome = await asyncio.shield(pull.ended)
        except TimeoutError:
            self._link.check()
            # The server (2.9) holds a no-wait pull back when the events it counted were promised to other
            # waiting pulls, or MAX_ACK_PENDING is reached: it then waits like a waiting pull without expiry.
            # Keep it as the lane's waiting pull, so what it gets later lands in ``ready`` and nothing is lost.
            pull.expires_at = math.inf
            lane.waiting = pull
            return
        await self._end_pull(pull)
        if outcome is not None:
            raise UnavailableError(f"NATS refused a pull on {lane.stream}: {outcome}")

    async def _arm(self, remaining: float) -> None:
        """Makes sure each lane has a waiting pull that wakes ``read`` when an event arrives there."""
        async with self._pull_lock:
            now = time.monotonic()
            for lane in self._reading():
                if lane.armed(now):
                    continue
                if lane.waiting is not None:
                    await self._end_pull(lane.waiting)
                    lane.waiting = None
                if now >= lane.rearm_at:
                    lane.waiting = await self._start_pull(lane, 1, wait=min(remaining, WAIT_SLICE))

    async def _start_pull(self, lane: Lane, batch: int, *, wait: float | None) -> Pull:
        """A no-wait pull (``wait`` None: what is there now, then 404/408) or one that waits ``wait`` seconds."""
        self._link.check()
        request: dict[str, object] = {"batch": batch}
        if wait is None:
            request["no_wait"] = True
        else:
            request["expires"] = int(wait * 1e9)
        ended: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        pull = Pull(lane, batch, time.monotonic() + (NO_WAIT_TIMEOUT if wait is None else wait), ended)
        inbox = self._link.nc.new_inbox()
        pull.sub = await self._link.call(self._link.nc.subscribe(inbox, cb=partial(self._on_pull_msg, pull)))
        subject = f"$JS.API.CONSUMER.MSG.NEXT.{lane.stream}.{lane.consumer}"
        await self._link.call(self._link.nc.publish(subject, orjson.dumps(request), reply=inbox))
        return pull

    async def _end_pull(self, pull: Pull) -> None:
        """Drops the subscription of a pull that ended, or that the server forgot (it drops a pull whose reply
        subject has no interest, so one still out ends too, but what it sent meanwhile is lost until ack_wait)."""
        pull.end("ended by us")
        sub, pull.sub = pull.sub, None
        if sub is not None:
            with contextlib.suppress(*LIBRARY_ERRORS):
                await sub.unsubscribe()

    async def _on_pull_msg(self, pull: Pull, msg: Msg) -> None:
        status = status_of(msg)
        if status is None and msg.reply:
            lane = pull.lane
            heapq.heappush(lane.ready, (ack_fields(msg.reply)[1], next(self._arrivals), msg))
            self._held[msg.reply] = time.monotonic()
            pull.received += 1
            if pull.received >= pull.batch:
                pull.end(None)
            if pull is lane.waiting:
                self._signal()  # an event arrived while readers wait (a no-wait pull's taker awaits it anyway)
        elif status in ("404", "408"):
            self._ended(pull, None)
        elif status is not None and status != "100":  # 100: a heartbeat
            description = msg.headers.get("Description", "") if msg.headers else ""
            self._ended(pull, f"{status} {description}")

    def _ended(self, pull: Pull, outcome: str | None) -> None:
        pull.end(outcome)
        if pull is not pull.lane.waiting:
            return  # a no-wait pull: its taker is waiting for it, no reader needs waking
        now = time.monotonic()
        if pull.received == 0 and (outcome is not None or now < pull.expires_at - 0.05):
            pull.lane.rearm_at = now + REARM_BACKOFF  # ended early with nothing: do not spin on it
        self._signal()  # a waiting reader re-arms the lane

    async def _hand_out(self, lane: Lane, n: int) -> list[Delivery]:
        deliveries: list[Delivery] = []
        for _ in range(n):
            _, _, msg = heapq.heappop(lane.ready)
            try:
                event = event_from_bytes(msg.data)
            except (ValueError, KeyError, TypeError, AttributeError):
                # Not an event of ours (someone published on our subject): ending it beats redelivering it forever.
                log.error("nats_foreign_message_dropped", stream=lane.stream)
                self._held.pop(msg.reply, None)
                await self._send(msg.reply, b"+TERM")
                continue
            self._out[msg.reply] = lane.partition
            deliveries.append(Delivery(event, token=msg.reply, lane=lane.name))
        return deliveries

    # --- ack, lag -------------------------------------------------------------------------------------------

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        """Returns once the server applied every ack (a lost ack only means one more delivery)."""
        subjects = [self._ack_subject(d) for d in deliveries]
        held = set(self._partitions.readable()) if self._partitions is not None else set()
        # A delivery of a partition this log no longer holds is not acked: its consumer was reset by the new
        # holder, who hands it out again (the inbox write is idempotent), and an ack would find no one.
        sending = []
        for subject in subjects:
            self._held.pop(subject, None)  # acked or not, a retry comes as a new delivery
            partition = self._out.pop(subject, None)
            if partition is None or partition in held:
                sending.append(subject)
        subjects = sending
        if not subjects:
            return
        self._check_open()
        await self._link.call(self._settle(subjects, b"+ACK"))

    async def _settle(self, subjects: list[str], body: bytes) -> None:
        """Sends ``body`` (+ACK, -NAK) for each delivery and returns once the server applied them all: the last
        of each lane goes as a request (AckSync), and a consumer applies acks in the order they arrive."""
        by_stream: dict[str, list[str]] = {}  # by consumer, in fact: each applies its own acks in order
        for subject in subjects:
            by_stream.setdefault(subject.rsplit(".", 5)[0], []).append(subject)
        nc = self._link.nc
        for group in by_stream.values():
            for subject in group[:-1]:
                await nc.publish(subject, body)
        replies = await asyncio.gather(
            *(nc.request(group[-1], body, timeout=OP_TIMEOUT) for group in by_stream.values()),
            return_exceptions=True,
        )
        for reply in replies:
            if isinstance(reply, BaseException):
                raise reply

    def _ack_subject(self, delivery: Delivery) -> str:
        subject = delivery.token
        if not (isinstance(subject, str) and ack_fields(subject)[0] in self._streams):
            raise InvalidInputError("not a delivery of this NATS event log")
        return subject

    async def lag(self) -> int:
        """Events not yet acked, from the partition consumers' own counters (not yet delivered + delivered
        unacked); a partition no worker took yet counts the messages on its subject. Not the stream's message
        count: after a server killed with -9, acked events it had not deleted on disk yet may sit in the stream
        behind every consumer's position, never to be handed out again."""
        self._check_open()
        counts = await asyncio.gather(*(self._lane_lag(lane) for lane in self._lanes))
        return sum(counts)

    async def _lane_lag(self, lane: Lane) -> int:
        try:
            info = await self._js.consumer_info(lane.stream, lane.consumer, timeout=OP_TIMEOUT)
        except NotFoundError:
            stream = await self._link.call(self._js.stream_info(lane.stream, subjects_filter=lane.subject))
            return int((stream.state.subjects or {}).get(lane.subject, 0))
        except LIBRARY_ERRORS as exc:
            raise UnavailableError(f"NATS event log: {type(exc).__name__}") from exc
        return (info.num_pending or 0) + (info.num_ack_pending or 0)

    # --- partitions -----------------------------------------------------------------------------------------

    async def _hold_partitions(self) -> Partitions:
        member = member_id()
        leases = await NatsLeases.open(self._js, self._ns, self._lease, self._replicas, member)
        partitions = Partitions(
            leases,
            self._partition_count,
            self._lease,
            member=member,
            busy=lambda n: n in self._out.values(),
            gained=self._gained,
            lost=self._lost,
            changed=self._signal,
        )
        await partitions.start()
        return partitions

    def _reading(self) -> list[Lane]:
        """The lanes of the partitions held now, priority-major."""
        held = set(self._partitions.readable()) if self._partitions is not None else set()
        return [lane for lane in self._lanes if lane.partition in held]

    async def _gained(self, partition: int) -> None:
        """Resets the partition's three consumers, at once: a new holder's set-up is what makes a lease round
        long (``backends/partitions.py``)."""
        lanes = [self._by_key[(priority, partition)] for priority in PRIORITIES]
        await asyncio.gather(*(reset_consumer(self._link, self._js, lane, self._ack_wait) for lane in lanes))

    async def _lost(self, partition: int) -> None:
        """Drops what this process pulled of the partition and did not hand out: the next holder resets the
        consumer and gets it again, in order."""
        async with self._pull_lock:
            for priority in PRIORITIES:
                lane = self._by_key[(priority, partition)]
                if lane.waiting is not None:
                    await self._end_pull(lane.waiting)
                    lane.waiting = None
                for _, _, msg in lane.ready:
                    self._held.pop(msg.reply, None)
                lane.ready.clear()

    # --- in progress, signals, close ------------------------------------------------------------------------

    async def _keep_in_progress(self) -> None:
        # Every quarter ack_wait, so a held event hears from us at least every half ack_wait, even late.
        interval = self._ack_wait / 4
        limit = HOLD_LIMIT * self._ack_wait
        while not self._closed:  # ends with the log
            await asyncio.sleep(interval)
            now = time.monotonic()
            for subject, since in list(self._held.items()):
                if interval <= now - since < limit and self._link.nc.is_connected:
                    await self._send(subject, b"+WPI")

    async def _send(self, subject: str, body: bytes) -> None:
        with contextlib.suppress(*LIBRARY_ERRORS):
            await self._link.nc.publish(subject, body)

    def _signal(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _on_link_change(self, up: bool) -> None:
        # Either way the server forgot our waiting pulls (a new connection): re-arm them.
        for lane in self._lanes:
            if lane.waiting is not None:
                lane.waiting.end("connection lost")
            lane.rearm_at = 0.0
        self._signal()

    def _check_open(self) -> None:
        if self._closed:
            raise UnavailableError("the event log is closed")
        self._link.check()

    async def close(self) -> None:
        """Lets the waiting pulls end, then NAKs what this process held (handed out or not, unacked), so it is
        handed out again at once. Takes up to ``WAIT_SLICE`` seconds when a read was waiting. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._signal()
        await self._let_waiting_pulls_end()
        if self._keeper is not None:
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeper
        held = sorted(self._held, key=lambda s: ack_fields(s)[1])  # NAKed, so redelivered, in stream order
        self._held.clear()
        if held and self._link.nc.is_connected:
            with contextlib.suppress(UnavailableError):
                await self._link.call(self._settle(held, b"-NAK"))
        if self._partitions is not None:
            await self._partitions.close()  # the next holder resets each consumer: nothing is lost
        await self._link.close()

    async def _let_waiting_pulls_end(self) -> None:
        """Waits (bounded by their expiry) for the waiting pulls to end before dropping them. A pull dropped
        while the server still has it is where the server may route a NAKed event: that event then comes
        back only after ack_wait, and nats-server before 2.10.14 also hands out another event twice."""
        now = time.monotonic()
        # An adopted no-wait pull (expires_at infinite) never ends by itself: not worth waiting for.
        out = [
            lane.waiting.ended
            for lane in self._lanes
            if lane.waiting is not None and lane.armed(now) and lane.waiting.expires_at < math.inf
        ]
        if out and self._link.nc.is_connected:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(WAIT_SLICE + 0.2):
                    await asyncio.wait(out)
        for lane in self._lanes:
            if lane.waiting is not None:
                await self._end_pull(lane.waiting)
                lane.waiting = None


def _subject(namespace: str, priority: Priority, partition: int) -> str:
    """Partition 0 keeps the lane's subject of earlier versions, so events appended before an upgrade are read."""
    base = f"{namespace}.events.{priority}"
    return base if partition == 0 else f"{base}.{partition}"
