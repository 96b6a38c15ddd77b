"""The Redis event log on Redis Streams (``RedisEventLog``).

Keys. ``{namespace}:events:{lane}`` is one stream per priority lane (high, normal, low), so a flood of likes in
``low`` never sits in front of a mention in ``high``. Each stream has one consumer group, ``fanout``; every open
``RedisEventLog`` (one per worker process) is a consumer of it under a name of its own. An entry holds the event
id (field ``id``) and ``event_to_bytes(event)`` (field ``event``).

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

Delivery. ``read`` takes, lane by lane (high, normal, low), first the entries idle for longer than
``settings.ack_wait`` (XAUTOCLAIM: a dead worker's deliveries are taken over; looked for at most every
ack_wait/4), then entries never delivered (XREADGROUP ``>``); with nothing at all it blocks on the three streams
at once (XREADGROUP BLOCK, in slices shorter than the socket timeout). A blocked read that wakes with more than
``max_items`` (several lanes filled at once) hands the surplus back at once (below).

Leases. A delivery stays with the worker that read it while that worker lives: every ack_wait/3 a task renews
the deliveries handed out and not acked yet (XCLAIM to itself with JUSTID: resets the idle time, not the
delivery count), so a long batch is not handed to another worker while it is processed. A worker that dies
stops renewing and, ack_wait later, its deliveries go to the next reader. ``close`` hands back every entry
pending on its consumer at once (XCLAIM ... IDLE a year: any reader's next XAUTOCLAIM takes them). Rare
double hand-outs remain possible (a renewal late by ack_wait, a read whose reply was lost): the inbox write is
idempotent on the event id, so they cost work, not duplicates.

Ack = XACK + XDEL in one MULTI, rather than MAXLEN/MINID trimming: trimming cuts only a prefix, so one entry
slow to be acked (or unreadable) would keep every acked entry after it in memory; XDEL frees exactly what was
acked, in any order, and leaves in the stream exactly the events not acked yet (so ``XLEN`` is the backlog, and
a group recreated at id 0 after a loss hands out exactly those). The price: the streams belong to the
``fanout`` group alone; another group reading them would miss what ``fanout`` acked.

Lag = XINFO GROUPS ``lag`` (never delivered) + ``pending`` (delivered, not acked), per lane. When a deletion sits
right at the group's position Redis cannot tell ``lag``; XLEN, equal by the XDEL rule above, stands in.

Unreachable Redis: every call fails within about 4 s with ``UnavailableError`` (``client.py``); a group lost
with a Redis that keeps nothing is recreated (``NOGROUP``). Consumers of earlier processes that hold nothing are
removed when a log opens.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import secrets
import socket
from collections import deque
from collections.abc import Awaitable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError
from redis.typing import EncodableT, KeyT, StreamIdT

from tidings.backends.idempotent import IdempotentLog
from tidings.backends.redis.client import connect, translated
from tidings.core.models import PRIORITIES, Priority, event_from_bytes, event_to_bytes
from tidings.errors import InvalidInputError, UnavailableError
from tidings.ports import Append, Appended, Delivery, EventLog, Store
from tidings.settings import Settings

log = structlog.get_logger("tidings.redis")

GROUP = "fanout"
FLUSH_MAX_ITEMS = 1000  # events per append script (group commit of concurrent appends)
DEDUPE_WINDOW_MS = 120_000
BLOCK_SLICE = 1.0
# "Idle for a year": past any ack_wait, yet below the server's clamp (an idle time past now counts as 0).
RELEASED_IDLE_MS = 365 * 86_400_000
PENDING_PAGE = 1000
PENDING_MAX_PAGES = 100  # close hands back at most this many pages per lane; the rest wait out ack_wait

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

# Removes the group's consumers that hold nothing and were idle for ARGV[2] ms, atomically per consumer
# (deleting one that holds entries would lose them for the group). Bounded by the number of consumers.
REAP_CONSUMERS = """
local removed = 0
for _, key in ipairs(KEYS) do
  for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', key, ARGV[1])) do
    local info = {}
    for i = 1, #c, 2 do info[c[i]] = c[i + 1] end
    if info['pending'] == 0 and info['idle'] >= tonumber(ARGV[2]) then
      redis.call('XGROUP', 'DELCONSUMER', key, ARGV[1], info['name'])
      removed = removed + 1
    end
  end
end
return removed
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


def _consumer_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class RedisEventLog:
    """``ports.EventLog`` on Redis Streams; ``open`` wraps it in ``IdempotentLog`` (keys live in the store).

    ``consumer`` is this instance's name in the ``fanout`` group: unique per instance unless given.
    """

    def __init__(self, client: Redis, settings: Settings, consumer: str | None = None) -> None:
        self._client = client
        self.consumer = consumer or _consumer_name()
        self.streams: dict[Priority, str] = {
            lane: f"{settings.namespace}:events:{lane}" for lane in PRIORITIES
        }
        self._lane_of = {stream.encode(): lane for lane, stream in self.streams.items()}
        self._appended_prefix = f"{settings.namespace}:appended:"
        self._append_script = client.register_script(APPEND)
        self._ack_wait_ms = max(1, round(settings.ack_wait * 1000))
        self._reclaim_every = settings.ack_wait / 4
        self._reclaimed_at = -math.inf
        self._reclaim_from: dict[Priority, str] = dict.fromkeys(PRIORITIES, "0-0")
        self._held: dict[Priority, set[str]] = {lane: set() for lane in PRIORITIES}  # handed out, not acked
        self._renewer: asyncio.Task[None] | None = None
        self._appending: deque[_Request] = deque()
        self._flusher: asyncio.Task[None] | None = None
        self._closed = False

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
        """Creates the streams and the group when missing; removes consumers of earlier processes that hold
        nothing and were idle for ack_wait (each process is a new consumer: they would pile up)."""
        with translated("open"):
            await self._create_groups()
            reap = self._client.register_script(REAP_CONSUMERS)
            await reap(keys=list(self.streams.values()), args=[GROUP, self._ack_wait_ms])

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
        refused = {
            i: _refusal(item) for i, item in enumerate(items) if item.event.priority not in self.streams
        }
        keys: list[KeyT] = []
        args: list[EncodableT] = [DEDUPE_WINDOW_MS]
        for i, item in enumerate(items):
            if i not in refused:
                event = item.event
                keys += [self.streams[event.priority], self._appended_prefix + event.id]
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
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout)
        got: list[Delivery] = []
        with translated("read"):
            while not got and not self._closed:  # bounded by the deadline
                got = await self._recovering(self._read_available(max_items))
                remaining = deadline - loop.time()
                if got or remaining <= 0:
                    break
                # Short enough slices that entries of a dead worker are looked for while waiting, too.
                wait = min(remaining, BLOCK_SLICE, self._reclaim_every)
                got = await self._recovering(self._wait_for_new(max_items, wait))
        self._hold(got)
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

    async def _read_available(self, max_items: int) -> list[Delivery]:
        """Lane by lane: entries idle past ack_wait (when due), then new ones; never blocks."""
        loop = asyncio.get_running_loop()
        reclaim = loop.time() - self._reclaimed_at >= self._reclaim_every
        if reclaim:
            self._reclaimed_at = loop.time()
        got: list[Delivery] = []
        for lane in PRIORITIES:
            if reclaim and len(got) < max_items:
                got += await self._reclaim(lane, max_items - len(got))
            if len(got) < max_items:
                reply = await self._client.xreadgroup(
                    GROUP, self.consumer, {self.streams[lane]: ">"}, count=max_items - len(got)
                )
                got += self._deliveries(reply)
        return got

    async def _reclaim(self, lane: Priority, count: int) -> list[Delivery]:
        # The scan resumes where the last one stopped (XAUTOCLAIM looks at count*10 entries per call), so
        # entries of a dead worker are found even behind many that live workers hold.
        reply = await self._client.xautoclaim(
            self.streams[lane], GROUP, self.consumer, self._ack_wait_ms, self._reclaim_from[lane], count=count
        )
        self._reclaim_from[lane] = _text(reply[0])
        return self._entries(lane, reply[1])

    async def _wait_for_new(self, max_items: int, seconds: float) -> list[Delivery]:
        """Blocks on all lanes for new entries; a surplus past ``max_items`` is handed back at once."""
        streams: dict[KeyT, StreamIdT] = dict.fromkeys(self.streams.values(), ">")
        block_ms = max(1, int(seconds * 1000))
        reply = await self._client.xreadgroup(GROUP, self.consumer, streams, count=max_items, block=block_ms)
        got = sorted(self._deliveries(reply), key=lambda d: PRIORITIES.index(d.lane))  # stable: keeps order
        if len(got) > max_items:
            await self._release(_ids_by_lane(got[max_items:]))
            got = got[:max_items]
        return got

    def _deliveries(self, reply: Any) -> list[Delivery]:
        """XREADGROUP's reply: ``[[stream, [(id, fields), ...]], ...]`` (RESP2), or None."""
        got: list[Delivery] = []
        for stream, entries in reply or ():
            got += self._entries(self._lane_of[stream], entries)
        return got

    def _entries(self, lane: Priority, entries: Sequence[Any]) -> list[Delivery]:
        got: list[Delivery] = []
        for entry_id, fields in entries:
            if not fields:
                continue  # deleted while pending: nothing to hand out
            try:
                event = event_from_bytes(fields[b"event"])
            except (KeyError, TypeError, ValueError):
                # Not ours (someone else wrote to the stream): left pending for an operator, logged each time
                # it comes round again.
                log.error("log_entry_unreadable", stream=self.streams[lane], entry=_text(entry_id))
                continue
            got.append(Delivery(event, token=_text(entry_id), lane=lane))
        return got

    # --- leases -----------------------------------------------------------------------------------------

    def _hold(self, deliveries: Sequence[Delivery]) -> None:
        for delivery in deliveries:
            self._held[delivery.lane].add(str(delivery.token))
        if deliveries and self._renewer is None:
            self._renewer = asyncio.create_task(self._renew_leases(), name="tidings-redis-leases")

    async def _renew_leases(self) -> None:
        """Runs until ``close``: every ack_wait/3, resets the idle time of what this process holds."""
        while not self._closed:
            await asyncio.sleep(self._ack_wait_ms / 3000)
            held = {lane: list(ids) for lane, ids in self._held.items() if ids}
            if not held:
                continue
            try:
                await self._claim(held, idle_ms=None)
            except (RedisError, OSError) as exc:
                log.warning("redis_lease_renewal_failed", error=type(exc).__name__)

    async def _claim(self, ids: dict[Priority, list[str]], idle_ms: int | None) -> None:
        """XCLAIM to this consumer, JUSTID: idle time reset to ``idle_ms`` (None: 0), delivery count kept."""
        async with self._client.pipeline(transaction=False) as pipe:
            for lane, entry_ids in ids.items():
                claimed: list[StreamIdT] = [*entry_ids]
                pipe.xclaim(self.streams[lane], GROUP, self.consumer, 0, claimed, idle=idle_ms, justid=True)
            await pipe.execute()

    async def _release(self, ids: dict[Priority, list[str]]) -> None:
        """Makes entries claimable by any reader's next XAUTOCLAIM, ours included (which scans from 0 again)."""
        await self._claim(ids, idle_ms=RELEASED_IDLE_MS)
        for lane in ids:
            self._reclaim_from[lane] = "0-0"
        self._reclaimed_at = -math.inf

    async def _release_pending(self) -> None:
        """Hands back everything pending on this consumer, read by the caller or not (a lost reply)."""
        for lane, stream in self.streams.items():
            start = "-"
            for _ in range(PENDING_MAX_PAGES):
                try:
                    page = await self._client.xpending_range(
                        stream, GROUP, min=start, max="+", count=PENDING_PAGE, consumername=self.consumer
                    )
                except ResponseError as exc:
                    if not _is_missing(exc):
                        raise
                    break  # the stream is gone, and what was pending on it with it
                if page:
                    await self._release({lane: [_text(p["message_id"]) for p in page]})
                if len(page) < PENDING_PAGE:
                    break
                start = "(" + _text(page[-1]["message_id"])

    # --- ack, lag, close --------------------------------------------------------------------------------

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        self._check_open()
        ids = _ids_by_lane(deliveries)
        if not ids:
            return
        async with self._client.pipeline(transaction=True) as pipe:
            for lane, entry_ids in ids.items():
                # Both or neither: an entry deleted while still pending would be skipped, not redelivered.
                pipe.xack(self.streams[lane], GROUP, *entry_ids)
                pipe.xdel(self.streams[lane], *entry_ids)
            with translated("ack"):
                await pipe.execute()
        for lane, entry_ids in ids.items():
            self._held[lane].difference_update(entry_ids)

    async def lag(self) -> int:
        self._check_open()
        with translated("lag"):
            return sum([await self._lane_lag(stream) for stream in self.streams.values()])

    async def _lane_lag(self, stream: str) -> int:
        try:
            groups = await self._client.xinfo_groups(stream)
        except ResponseError as exc:
            if not _is_missing(exc):
                raise
            await self._create_groups()
            return 0
        for group in groups:
            if _text(group["name"]) == GROUP and group["lag"] is not None:
                return int(group["lag"]) + int(group["pending"])
        return int(await self._client.xlen(stream))

    async def close(self) -> None:
        """Hands back what this consumer holds unacked (best effort: else it comes back after ack_wait), then
        closes the connections. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._flusher is not None:
            await self._flusher  # appends already accepted as calls are carried out
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
        try:
            await self._release_pending()
        except (RedisError, OSError) as exc:
            log.warning("redis_release_failed", error=type(exc).__name__)
        await self._client.aclose()

    def _check_open(self) -> None:
        if self._closed:
            raise UnavailableError("the event log is closed")


def _refusal(item: Append) -> Exception:
    return InvalidInputError(f"unknown priority {item.event.priority!r}")


def _ids_by_lane(deliveries: Sequence[Delivery]) -> dict[Priority, list[str]]:
    ids: dict[Priority, list[str]] = {}
    for delivery in deliveries:
        if not isinstance(delivery.token, str) or delivery.lane not in PRIORITIES:
            raise InvalidInputError("not a delivery of the redis event log")
        ids.setdefault(delivery.lane, []).append(delivery.token)
    return ids
