"""The Redis event log on Redis Streams (``RedisEventLog``).

Keys. Each priority lane (high, normal, low, so a flood of likes never sits in front of a mention) is split into
``settings.log_partitions`` streams by ``core.ordering.event_partition``: ``{namespace}:events:{lane}:{n}``
(partition 0: ``{namespace}:events:{lane}``, the key of earlier versions). Each stream has one consumer group,
``fanout``, and one consumer, ``holder``: whichever worker holds the partition's lease reads under that name
(``leases.py``; shares and rebalancing: ``backends/partitions.py``). An entry holds the event id (field ``id``)
and ``event_to_bytes(event)`` (field ``event``).

Append: concurrent calls are gathered into one Lua script (group commit: one round trip, no other client's
command in between, for up to FLUSH_MAX_ITEMS events). A call returns once Redis answered for its items; a
call that fails may have appended some of them (a retry appends them again). An event id that
carries an Idempotency-Key is appended once per DEDUPE_WINDOW_MS (``IdempotentLog`` appends a retried key again
under the first id): the script sets ``{namespace}:appended:{event id}`` with NX and skips the XADD when that key
exists, like JetStream's ``Nats-Msg-Id`` window. A repeat after the window is appended again; the inbox write,
idempotent on the event id, absorbs it.

Durability. What Redis' answer is worth is the server's configuration, not this client's:

- ``appendonly yes`` with ``appendfsync always``: Redis writes and fsyncs the AOF before it answers, so an
  accepted event survives a crash of Redis or of the machine. This is what "202 means durable" needs.
- ``appendfsync everysec`` (the default with AOF): survives Redis being killed; a power cut or kernel crash
  may lose about the last second (two, when the disk is slow).
- no AOF (snapshots only, or nothing, like the shared test server on this machine): a Redis restart loses
  everything since the last snapshot. For tests and demos only.
- Replication is asynchronous: a failover may lose what the old primary answered but had not passed on yet.
  This backend does not issue ``WAIT``; ``min-replicas-to-write`` on the server narrows the window.

Delivery. ``read`` takes, lane by lane (high, normal, low), from the partitions this worker holds: first the
entries pending in the group (a former holder's, unacked: ``XREADGROUP … 0``, in order), then entries never
delivered (``>``), one XREADGROUP per lane over its held streams; with nothing at all it blocks on every held
stream at once (slices shorter than the socket timeout and than a lease round). What a read got beyond
``max_items`` stays buffered for the next read (it is pending on ``holder``: a next holder reads it again, in
order). A worker that dies holds its partitions until their leases run out; ``close`` releases them at once. On
taking a partition, entries pending on consumers of earlier versions (one per process) are moved to ``holder``.

Ack = XACK + XDEL in one MULTI, rather than MAXLEN/MINID trimming: trimming cuts only a prefix, so one entry
slow to be acked (or unreadable) would keep every acked entry after it in memory; XDEL frees exactly what was
acked, in any order, and leaves in the stream exactly the events not acked yet (so ``XLEN`` is the backlog, and
a group recreated at id 0 after a loss hands out exactly those). The price: the streams belong to the
``fanout`` group alone; another group reading them would miss what ``fanout`` acked. A delivery of a partition
lost meanwhile is acked all the same (it was fanned out; the new holder skips an entry deleted while pending).

Lag = the streams' lengths (XLEN, by the XDEL rule above).

Unreachable Redis: every call fails within about 4 s with ``UnavailableError`` (``client.py``); a group lost
with a Redis that keeps nothing is recreated (``NOGROUP``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.exceptions import ResponseError
from redis.typing import EncodableT, KeyT, StreamIdT

from tidings.backends.idempotent import IdempotentLog
from tidings.backends.partitions import Partitions, member_id
from tidings.backends.redis.client import connect, translated
from tidings.backends.redis.leases import RedisLeases
from tidings.core.models import PRIORITIES, Event, Priority, event_from_bytes, event_to_bytes
from tidings.core.ordering import event_partition
from tidings.errors import InvalidInputError, UnavailableError
from tidings.ports import Append, Appended, Delivery, EventLog, Store
from tidings.settings import Settings

log = structlog.get_logger("tidings.redis")

GROUP = "fanout"
HOLDER = "holder"  # the one consumer name of every partition stream: whoever holds the partition's lease
FLUSH_MAX_ITEMS = 1000  # events per append script (group commit of concurrent appends)
DEDUPE_WINDOW_MS = 120_000
BLOCK_SLICE = 1.0
CLAIM_PAGE = 1000

# Per item: XADD, unless the item is keyed (ARGV flag 1) and its dedupe key exists. Returns 1/0 per item.
APPEND = """
local out = {}
for i = 1, #KEYS / 2 do
  local keyed, id, body = ARGV[3 * i - 1], ARGV[3 * i], ARGV[3 * i + 1]
  if keyed == '0' or redis.call('SET', KEYS[2 * i], '1', 'NX', 'PX', ARGV[1]) then
    redis.call('XADD', KEYS[2 * i - 1], '*', 'id', id, 'event', body)
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
"""


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _is_missing(exc: ResponseError) -> bool:
    """The stream or its group is gone (e.g. a Redis that keeps nothing restarted)."""
    return str(exc).startswith(("NOGROUP", "no such key"))


@dataclass
class _Request:
    """One ``append`` call waiting for the flusher."""

    items: list[Append]
    done: asyncio.Future[list[Appended | Exception]]


Stream = tuple[Priority, int]  # (lane, partition)


class RedisEventLog:
    """``ports.EventLog`` on Redis Streams; ``open`` wraps it in ``IdempotentLog`` (keys live in the store)."""

    def __init__(self, client: Redis, settings: Settings) -> None:
        self._client = client
        self._ns = settings.namespace
        self._lease = settings.log_lease
        self._partition_count = max(1, settings.log_partitions)
        # Partition 0 keeps the lane's key of earlier versions, so events appended before an upgrade are read.
        self.streams: dict[Stream, str] = {
            (lane, n): f"{settings.namespace}:events:{lane}" + (f":{n}" if n else "")
            for lane in PRIORITIES
            for n in range(self._partition_count)
        }
        self._stream_of = {key.encode(): stream for stream, key in self.streams.items()}
        self._appended_prefix = f"{settings.namespace}:appended:"
        self._append_script = client.register_script(APPEND)
        self._buffered: dict[Stream, deque[Delivery]] = {stream: deque() for stream in self.streams}
        self._pending_from: dict[Stream, str] = {}  # streams whose pending entries are read first, from here
        # Partition -> how many times it was gained or lost: a reply to a read sent before that changed is
        # dropped (the lease round runs while a read waits for Redis; what it read is read again, in order).
        self._turns: dict[int, int] = {}
        self._out: dict[str, int] = {}  # token of a delivery handed out, not acked -> its partition
        self._partitions: Partitions | None = None  # taken on the first read: an API process takes none
        self._hold_lock = asyncio.Lock()
        self._read_lock = asyncio.Lock()
        self._woken = asyncio.Event()
        self._appending: deque[_Request] = deque()
        self._flusher: asyncio.Task[None] | None = None
        self._closed = False

    def stream_of(self, event: Event) -> str:
        """The key of the stream ``event`` goes to (tests look at it)."""
        return self.streams[(event.priority, event_partition(event, self._partition_count))]

    @classmethod
    async def open(cls, url: str, settings: Settings, store: Store) -> EventLog:
        log_ = cls(connect(url), settings)
        try:
            await log_.prepare()
        except BaseException:
            await log_.close()
            raise
        return IdempotentLog(log_, store.idempotency)

    async def prepare(self) -> None:
        """Creates the streams and the group when missing."""
        with translated("open"):
            await self._create_groups()

    async def _create_groups(self) -> None:
        async with self._client.pipeline(transaction=False) as pipe:
            for stream in self.streams.values():
                pipe.xgroup_create(stream, GROUP, id="0", mkstream=True)
            results = await pipe.execute(raise_on_error=False)
        for result in results:
            if isinstance(result, Exception) and not str(result).startswith("BUSYGROUP"):
                raise result

    # --- append -----------------------------------------------------------------------------------------

    async def append(self, items: Sequence[Append]) -> list[Appended | Exception]:
        self._check_open()
        if not items:
            return []
        request = _Request(list(items), asyncio.get_running_loop().create_future())
        self._appending.append(request)
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush(), name="tidings-redis-append")
        return await request.done

    async def _flush(self) -> None:
        """Group commit: appends the queued calls batch by batch until none is left; while one script runs, the
        next batch gathers, so concurrent producers share round trips. A cancelled caller's events are
        appended all the same."""
        try:
            while self._appending:
                batch = [self._appending.popleft()]
                size = len(batch[0].items)
                while self._appending and size + len(self._appending[0].items) <= FLUSH_MAX_ITEMS:
                    size += len(self._appending[0].items)
                    batch.append(self._appending.popleft())
                await self._append_batch(batch)
        finally:
            self._flusher = None

    async def _append_batch(self, batch: list[_Request]) -> None:
        try:
            results = await self._append_now([item for request in batch for item in request.items])
        except Exception as error:  # every caller in the batch hears why; the flusher carries on
            for request in batch:
                if not request.done.done():
                    request.done.set_exception(error)
            return
        start = 0
        for request in batch:
            end = start + len(request.items)
            if not request.done.done():
                request.done.set_result(results[start:end])
            start = end

    async def _append_now(self, items: Sequence[Append]) -> list[Appended | Exception]:
        refused = {i: _refusal(item) for i, item in enumerate(items) if item.event.priority not in PRIORITIES}
        keys: list[KeyT] = []
        args: list[EncodableT] = [DEDUPE_WINDOW_MS]
        for i, item in enumerate(items):
            if i not in refused:
                event = item.event
                keys += [self.stream_of(event), self._appended_prefix + event.id]
                args += [int(event.idempotency_key is not None), event.id, event_to_bytes(event)]
        added: Iterator[int] = iter(())
        if keys:
            with translated("append"):
                added = iter(await self._append_script(keys=keys, args=args))
        return [
            refused[i] if i in refused else Appended(item.event.id, duplicate=not next(added))
            for i, item in enumerate(items)
        ]

    # --- read -------------------------------------------------------------------------------------------

    async def read(self, max_items: int, timeout: float) -> list[Delivery]:
        self._check_open()
        if max_items <= 0:
            return []
        if self._partitions is None:
            async with self._hold_lock:  # concurrent first reads take the partitions once
                if self._partitions is None:
                    self._partitions = await self._hold_partitions()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout)
        got: list[Delivery] = []
        with translated("read"):
            while not got and not self._closed:  # bounded by the deadline
                async with (
                    self._read_lock
                ):  # one XREADGROUP at a time: the holder's position is this process's
                    got = await self._recovering(self._read_available(max_items))
                    remaining = deadline - loop.time()
                    if got or remaining <= 0:
                        break
                    wait = min(remaining, BLOCK_SLICE, self._lease / 3)  # a gained partition is read soon
                    got = await self._recovering(self._wait_for_new(max_items, wait))
        for delivery in got:
            self._out[str(delivery.token)] = _partition_of_token(delivery.token)
        return got

    async def _recovering(self, reading: Awaitable[list[Delivery]]) -> list[Delivery]:
        """Awaits ``reading``; a stream or group gone missing is recreated, and that round reads nothing."""
        try:
            result = await reading
        except ResponseError as exc:
            if not _is_missing(exc):
                raise
            await self._create_groups()
            return []
        return result

    def _held(self) -> list[Stream]:
        held = self._partitions.readable() if self._partitions is not None else []
        return [(lane, n) for lane in PRIORITIES for n in held]

    async def _read_available(self, max_items: int) -> list[Delivery]:
        """Lane by lane, partition by partition: what is buffered, the entries a former holder left pending
        (in order, before anything newer), then new entries (one XREADGROUP per lane); never blocks."""
        for lane in PRIORITIES:
            streams = [s for s in self._held() if s[0] == lane]
            for stream in streams:
                if stream in self._pending_from and len(self._buffered[stream]) < max_items:
                    await self._read_pending(stream, max_items)
            fresh = [s for s in streams if s not in self._pending_from and not self._buffered[s]]
            if fresh and self._buffered_in(lane) < max_items:
                ids: dict[KeyT, StreamIdT] = {self.streams[s]: ">" for s in fresh}
                turns = self._turns_of(fresh)
                self._buffer(await self._client.xreadgroup(GROUP, HOLDER, ids, count=max_items), turns)
        return self._take(max_items)

    async def _read_pending(self, stream: Stream, count: int) -> None:
        key = self.streams[stream]
        turns = self._turns_of([stream])
        reply: Any = await self._client.xreadgroup(
            GROUP, HOLDER, {key: self._pending_from[stream]}, count=count
        )
        if turns != self._turns_of([stream]):
            return  # lost (and maybe gained again) meanwhile: the reply is stale
        entries: list[Any] = reply[0][1] if reply else []
        if not entries:
            del self._pending_from[stream]  # every pending entry handed out: on to new ones
            return
        self._pending_from[stream] = _text(entries[-1][0])
        self._buffer([[key.encode(), entries]], turns)

    async def _wait_for_new(self, max_items: int, seconds: float) -> list[Delivery]:
        """Blocks on the held partitions of all lanes for new entries; a surplus stays buffered for the next
        read (it is pending on this holder: a next holder reads it again, in order)."""
        streams = [s for s in self._held() if s not in self._pending_from and not self._buffered[s]]
        if not streams:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):  # no partition to wait on: until one is gained
                    await self._woken.wait()
            self._woken.clear()
            return []
        ids: dict[KeyT, StreamIdT] = {self.streams[s]: ">" for s in streams}
        block_ms = max(1, int(seconds * 1000))
        turns = self._turns_of(streams)
        self._buffer(
            await self._client.xreadgroup(GROUP, HOLDER, ids, count=max_items, block=block_ms), turns
        )
        return self._take(max_items)

    def _turns_of(self, streams: Sequence[Stream]) -> dict[Stream, int]:
        return {stream: self._turns.get(stream[1], 0) for stream in streams}

    def _buffer(self, reply: Any, turns: dict[Stream, int]) -> None:
        """XREADGROUP's reply: ``[[stream, [(id, fields), ...]], ...]`` (RESP2), or None. A stream whose
        partition was gained or lost since the read was sent (``turns``) is skipped: a stale reply."""
        for key, entries in reply or ():
            stream = self._stream_of[key]
            if turns.get(stream) != self._turns.get(stream[1], 0):
                continue
            for entry_id, fields in entries:
                if not fields:
                    continue  # deleted while pending (acked by a former holder): nothing to hand out
                try:
                    event = event_from_bytes(fields[b"event"])
                except (KeyError, TypeError, ValueError):
                    # Not ours (someone else wrote to the stream): left pending for an operator.
                    log.error("log_entry_unreadable", stream=self.streams[stream], entry=_text(entry_id))
                    continue
                token = f"{stream[1]}/{_text(entry_id)}"
                self._buffered[stream].append(Delivery(event, token=token, lane=stream[0]))

    def _buffered_in(self, lane: Priority) -> int:
        return sum(len(self._buffered[(lane, n)]) for n in range(self._partition_count))

    def _take(self, max_items: int) -> list[Delivery]:
        got: list[Delivery] = []
        for stream in self._held():
            buffered = self._buffered[stream]
            while buffered and len(got) < max_items:
                got.append(buffered.popleft())
        return got

    # --- partitions -------------------------------------------------------------------------------------

    async def _hold_partitions(self) -> Partitions:
        member = member_id()
        partitions = Partitions(
            RedisLeases(self._client, self._ns, self._lease, member),
            self._partition_count,
            self._lease,
            member=member,
            busy=lambda n: n in self._out.values(),
            gained=self._gained,
            lost=self._lost,
            changed=self._woken.set,
        )
        await partitions.start()
        return partitions

    async def _gained(self, partition: int) -> None:
        """Reading starts with the entries pending in the group (a former holder's, unacked), in order. Entries
        pending on consumers of earlier versions (one per process) are moved to the holder first."""
        self._turns[partition] = self._turns.get(partition, 0) + 1  # a read still out from before is stale
        for lane in PRIORITIES:
            stream = (lane, partition)
            key = self.streams[stream]
            start = "0-0"
            with translated("take partition"):
                for _ in range(10_000):  # bounded; ends when the scan wraps
                    try:
                        reply = await self._client.xautoclaim(key, GROUP, HOLDER, 0, start, CLAIM_PAGE)
                    except ResponseError as exc:
                        if not _is_missing(exc):
                            raise
                        await self._create_groups()
                        break
                    start = _text(reply[0])
                    if start == "0-0":
                        break
            self._buffered[stream].clear()
            self._pending_from[stream] = "0-0"

    async def _lost(self, partition: int) -> None:
        self._turns[partition] = self._turns.get(partition, 0) + 1
        for lane in PRIORITIES:
            self._buffered[(lane, partition)].clear()
            self._pending_from.pop((lane, partition), None)

    # --- ack, lag, close --------------------------------------------------------------------------------

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        """XACK + XDEL. A delivery of a partition lost meanwhile is acked all the same: it was fanned out, and
        the new holder skips an entry deleted while pending."""
        self._check_open()
        ids = self._ids_by_stream(deliveries)
        if not ids:
            return
        async with self._client.pipeline(transaction=True) as pipe:
            for stream, entry_ids in ids.items():
                # Both or neither: an entry deleted while still pending would be skipped, not redelivered.
                pipe.xack(self.streams[stream], GROUP, *entry_ids)
                pipe.xdel(self.streams[stream], *entry_ids)
            with translated("ack"):
                await pipe.execute()
        for delivery in deliveries:
            self._out.pop(str(delivery.token), None)

    def _ids_by_stream(self, deliveries: Sequence[Delivery]) -> dict[Stream, list[str]]:
        ids: dict[Stream, list[str]] = {}
        for delivery in deliveries:
            partition = _partition_of_token(delivery.token)
            stream = (delivery.lane, partition)
            if partition < 0 or stream not in self.streams:
                raise InvalidInputError("not a delivery of the redis event log")
            ids.setdefault(stream, []).append(str(delivery.token).partition("/")[2])
        return ids

    async def lag(self) -> int:
        """Events not acked: the streams' lengths (an acked entry is deleted, see the module docstring)."""
        self._check_open()
        async with self._client.pipeline(transaction=False) as pipe:
            for key in self.streams.values():
                pipe.xlen(key)
            with translated("lag"):
                lengths = await pipe.execute()
        return sum(int(n) for n in lengths)

    async def close(self) -> None:
        """Releases the partitions (their next holders read what this one left unacked, at once), then closes
        the connections. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._woken.set()
        if self._flusher is not None:
            await self._flusher  # appends already accepted as calls are carried out
        if self._partitions is not None:
            await self._partitions.close()
        await self._client.aclose()

    def _check_open(self) -> None:
        if self._closed:
            raise UnavailableError("the event log is closed")


def _partition_of_token(token: object) -> int:
    """A delivery's token is ``<partition>/<entry id>``; -1 when it is not one of ours."""
    if not isinstance(token, str):
        return -1
    head, sep, _ = token.partition("/")
    return int(head) if sep and head.isdigit() else -1


def _refusal(item: Append) -> Exception:
    return InvalidInputError(f"unknown priority {item.event.priority!r}")
