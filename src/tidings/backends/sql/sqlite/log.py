"""``ports.EventLog`` in the SQLite file of a ``SqliteStore``: the embedded log (``memory://`` as broker).

Append (group commit). Concurrent appends are queued; one flusher task commits everything pending, up to
``FLUSH_MAX_ITEMS`` events, in one transaction on the store's writer thread, then resolves every caller. So a
caller returns only once its events are committed (durable as ``synchronous`` allows), and under load one
commit (one fsync) serves many requests: while a commit runs the next batch gathers.

Idempotency. ``event_log`` has a unique (app, idempotency_key): a key seen before answers with the first
event's id (``duplicate=True``) or, for a different ``body_hash``, with an ``IdempotencyMismatchError`` in its
slot. Items of one batch are checked in order, as if appended one after another. An event id already in the
log is not appended twice either. ``prune`` keeps an event that carries a key for ``IDEMPOTENCY_WINDOW``
(24 h) after it was accepted, so a producer may retry with the same key for a day.

Read and ack. Each priority is a lane; ``read`` returns ``high`` before ``normal`` before ``low``, in offset
order within a lane. This process remembers what it handed out (so nothing is handed out twice while it runs);
the durable per-(consumer, lane) cursor in ``log_cursors`` is the highest offset up to which everything was
acked, so after a restart reading starts there and every unacked event comes again. One process consumes a
given consumer name: scaling the worker out is what the broker backends are for.

Offsets are SQLite rowids: the newest row is never pruned, so an offset is never reused.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol

from sqlalchemy import Connection, delete, func, or_, select
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from tidings.backends.sql.sqlite.batches import insert_many, rows_matching
from tidings.backends.sql.sqlite.database import SqliteDatabase
from tidings.core.clock import Clock
from tidings.core.models import PRIORITIES, Priority, event_from_bytes, event_to_bytes
from tidings.db.schema import event_log, log_cursors
from tidings.errors import IdempotencyMismatchError, InvalidInputError, UnavailableError
from tidings.ports import Append, Appended, Delivery
from tidings.settings import Settings

FLUSH_MAX_ITEMS = 1000
POLL_INTERVAL = 0.05  # how soon appends by other processes are seen
IDEMPOTENCY_WINDOW = 24 * 3600.0

Result = Appended | Exception
AppKey = tuple[str, str]  # (app, idempotency key)


class LogHome(Protocol):
    """What the log needs of its ``SqliteStore``: the database whose writer thread it shares, and the clock."""

    @property
    def db(self) -> SqliteDatabase: ...

    @property
    def clock(self) -> Clock: ...


@dataclass
class _Request:
    items: list[Append]
    done: asyncio.Future[list[Result]]


@dataclass
class _Lane:
    """Read/ack bookkeeping of one lane in this process.

    ``position``: highest offset handed out. ``acked``: every offset handed out up to it is acked (the durable
    cursor). ``handed``: handed out and not yet covered by ``acked``, ascending. ``done``: acked out of order.
    """

    position: int
    acked: int
    handed: deque[int] = field(default_factory=deque)
    done: set[int] = field(default_factory=set)

    def hand_out(self, offset: int) -> None:
        self.handed.append(offset)
        self.position = offset

    def ack(self, offset: int) -> bool:
        """Records one ack; True when ``acked`` moved (acks may come in any order)."""
        if not self.acked < offset <= self.position:
            return False  # already covered, or not handed out by this process (e.g. before a restart)
        self.done.add(offset)
        moved = False
        while self.handed and self.handed[0] in self.done:
            self.acked = self.handed.popleft()
            self.done.discard(self.acked)
            moved = True
        return moved


class SqliteEventLog:
    """The event log in a ``SqliteStore``'s file, on that store's writer thread. Close it before the store.

    ``settings`` is taken for the same signature as the other logs; nothing in it tunes this one yet.
    ``consumer`` names the durable cursors (one consuming process per name).
    """

    def __init__(
        self,
        store: LogHome,
        settings: Settings,
        *,
        consumer: str = "fanout",
        poll_interval: float = POLL_INTERVAL,
    ) -> None:
        self._db = store.db
        self._clock = store.clock
        self._consumer = consumer
        self._poll_interval = poll_interval
        self._pending: deque[_Request] = deque()
        self._flusher_wake = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        # Replaced after every commit: a reader waits on the one it saw, so no wake-up is ever lost.
        self._appended = asyncio.Event()
        self._lanes: dict[Priority, _Lane] = {}
        self._lanes_lock = asyncio.Lock()
        self._read_lock = asyncio.Lock()
        self._closed = False
        self.flushes = 0  # statistics: commits made by the flusher, and the events they held
        self.flushed_items = 0

    # --- append -----------------------------------------------------------------------------------------

    async def append(self, items: Sequence[Append]) -> list[Appended | Exception]:
        if not items:
            return []
        if self._closed:
            raise UnavailableError("the event log is closed")
        request = _Request(list(items), asyncio.get_running_loop().create_future())
        self._pending.append(request)
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush_until_closed(), name="tidings-log-flusher")
        self._flusher_wake.set()
        return await request.done

    async def _flush_until_closed(self) -> None:
        """Runs while the log is open; after ``close`` it still commits what was queued before, then ends."""
        while self._pending or not self._closed:
            if not self._pending:
                self._flusher_wake.clear()
                await self._flusher_wake.wait()
                continue
            await self._flush(self._take_batch())

    def _take_batch(self) -> list[_Request]:
        batch = [self._pending.popleft()]
        size = len(batch[0].items)
        while self._pending and size + len(self._pending[0].items) <= FLUSH_MAX_ITEMS:
            size += len(self._pending[0].items)
            batch.append(self._pending.popleft())
        return batch

    async def _flush(self, batch: list[_Request]) -> None:
        items = [item for request in batch for item in request.items]
        try:
            results = await self._db.write(partial(_append_batch, items=items))
        except Exception as error:  # every caller in the batch hears why; the flusher carries on
            for request in batch:
                if not request.done.done():
                    request.done.set_exception(error)
            return
        self.flushes += 1
        self.flushed_items += len(items)
        self._appended.set()
        self._appended = asyncio.Event()
        start = 0
        for request in batch:
            end = start + len(request.items)
            if not request.done.done():  # a cancelled caller: its events are appended all the same
                request.done.set_result(results[start:end])
            start = end

    # --- read, ack, lag ---------------------------------------------------------------------------------

    async def read(self, max_items: int, timeout: float) -> list[Delivery]:
        lanes = await self._load_lanes()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout)
        while True:
            appended = self._appended  # taken before the query: an append after it sets this event
            deliveries = await self._read_once(lanes, max_items)
            remaining = deadline - loop.time()
            if deliveries or self._closed or remaining <= 0:
                return deliveries
            # Wakes at once for an append in this process; polls for appends made by other processes.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(self._poll_interval, remaining)):
                    await appended.wait()

    async def _read_once(self, lanes: dict[Priority, _Lane], max_items: int) -> list[Delivery]:
        # The lock makes query-then-advance atomic: two readers never get the same events.
        async with self._read_lock:
            positions = {name: lane.position for name, lane in lanes.items()}
            deliveries = await self._db.read(partial(_read_after, positions=positions, limit=max_items))
            for delivery in deliveries:
                lanes[delivery.lane].hand_out(_offset(delivery))
            return deliveries

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        lanes = await self._load_lanes()
        moved: dict[Priority, int] = {}
        for delivery in deliveries:
            lane = lanes.get(delivery.lane)
            if lane is not None and lane.ack(_offset(delivery)):
                moved[delivery.lane] = lane.acked
        if moved:
            await self._db.write(partial(_save_cursors, consumer=self._consumer, cursors=moved))

    async def lag(self) -> int:
        """Exact count of events after the acked cursors: an index range scan, O(lag). Sample it
        periodically rather than on every request when the lag may be large."""
        lanes = await self._load_lanes()
        cursors = {name: lane.acked for name, lane in lanes.items()}
        return await self._db.read(partial(_count_after, cursors=cursors))

    async def _load_lanes(self) -> dict[Priority, _Lane]:
        if self._closed:
            raise UnavailableError("the event log is closed")
        async with self._lanes_lock:
            if not self._lanes:
                cursors = await self._db.read(partial(_load_cursors, consumer=self._consumer))
                self._lanes = {name: _Lane(cursors.get(name, 0), cursors.get(name, 0)) for name in PRIORITIES}
        return self._lanes

    # --- housekeeping -----------------------------------------------------------------------------------

    async def prune(self, older_than: float) -> int:
        """Deletes events accepted before ``older_than`` (epoch seconds) that every consumer with a cursor
        acked; events with an idempotency key stay ``IDEMPOTENCY_WINDOW`` at least. Returns how many went."""
        keys_before = min(older_than, self._clock.time() - IDEMPOTENCY_WINDOW)
        return await self._db.write(partial(_prune, older_than=older_than, keys_before=keys_before))

    async def close(self) -> None:
        """Commits the appends already queued, then refuses new work. Idempotent."""
        self._closed = True
        self._flusher_wake.set()
        self._appended.set()  # readers waiting for events return now
        if self._flusher is not None:
            await self._flusher


def _offset(delivery: Delivery) -> int:
    if not isinstance(delivery.token, int):
        raise InvalidInputError("not a delivery of the sqlite event log")
    return delivery.token


# --- units of work (run on the database threads) ----------------------------------------------------------


def _append_batch(conn: Connection, *, items: list[Append]) -> list[Result]:
    """Appends in item order; each idempotency key and event id is looked up in the log and in the batch."""
    keys = _stored_keys(conn, list(dict.fromkeys(_key(i) for i in items if i.event.idempotency_key)))
    seen_ids = _stored_ids(conn, list(dict.fromkeys(i.event.id for i in items)))
    rows: list[tuple[object, ...]] = []
    results: list[Result] = []
    for item in items:
        event = item.event
        if event.priority not in PRIORITIES:
            results.append(InvalidInputError(f"unknown priority {event.priority!r}"))
            continue
        if event.idempotency_key is not None:
            first = keys.get(_key(item))
            if first is not None:
                results.append(_replay(first, item))
                continue
            keys[_key(item)] = (event.id, item.body_hash)
        if event.id in seen_ids:
            results.append(Appended(event.id, duplicate=True))
            continue
        seen_ids.add(event.id)
        rows.append(_log_row(item))
        results.append(Appended(event.id))
    insert_many(conn, event_log.name, _LOG_COLUMNS, rows)  # plain tuples: no per-row SQLAlchemy processing
    return results


def _key(item: Append) -> AppKey:
    return item.event.app, item.event.idempotency_key or ""


def _replay(first: tuple[str, str | None], item: Append) -> Result:
    first_id, first_hash = first
    if first_hash == item.body_hash:
        return Appended(first_id, duplicate=True)
    return IdempotencyMismatchError(
        "this Idempotency-Key was used before with a different body", event_id=first_id
    )


_LOG_COLUMNS = ("id", "app", "lane", "idempotency_key", "body_hash", "payload", "accepted_at")


def _log_row(item: Append) -> tuple[object, ...]:
    event = item.event
    payload = event_to_bytes(event)
    return (
        event.id,
        event.app,
        event.priority,
        event.idempotency_key,
        item.body_hash,
        payload,
        event.accepted_at,
    )


def _stored_keys(
    conn: Connection, keys: list[tuple[str, str]]
) -> dict[tuple[str, str], tuple[str, str | None]]:
    columns = ("app", "idempotency_key", "id", "body_hash")
    rows = rows_matching(conn, event_log, ("app", "idempotency_key"), columns, keys)
    return {(app, key): (event_id, body_hash) for app, key, event_id, body_hash in rows}


def _stored_ids(conn: Connection, ids: list[str]) -> set[str]:
    return {event_id for (event_id,) in rows_matching(conn, event_log, ("id",), ("id",), [(i,) for i in ids])}


def _read_after(conn: Connection, *, positions: dict[Priority, int], limit: int) -> list[Delivery]:
    c = event_log.c
    deliveries: list[Delivery] = []
    for lane in PRIORITIES:
        wanted = limit - len(deliveries)
        if wanted <= 0:
            break
        query = (
            select(c.offset, c.payload)
            .where(c.lane == lane, c.offset > positions[lane])
            .order_by(c.offset)
            .limit(wanted)
        )
        for row in conn.execute(query):
            deliveries.append(Delivery(event_from_bytes(row.payload), token=row.offset, lane=lane))
    return deliveries


def _load_cursors(conn: Connection, *, consumer: str) -> dict[str, int]:
    c = log_cursors.c
    rows = conn.execute(select(c.lane, c.acked_offset).where(c.consumer == consumer))
    return {row.lane: int(row.acked_offset) for row in rows}


def _save_cursors(conn: Connection, *, consumer: str, cursors: dict[Priority, int]) -> None:
    upsert = sqlite_insert(log_cursors)
    # MAX: a cursor never moves back, whatever order concurrent acks reach the writer in.
    upsert = upsert.on_conflict_do_update(
        index_elements=[log_cursors.c.consumer, log_cursors.c.lane],
        set_={"acked_offset": func.max(log_cursors.c.acked_offset, upsert.excluded.acked_offset)},
    )
    rows = [{"consumer": consumer, "lane": lane, "acked_offset": offset} for lane, offset in cursors.items()]
    conn.execute(upsert, rows)


def _count_after(conn: Connection, *, cursors: dict[Priority, int]) -> int:
    c = event_log.c
    total = 0
    for lane, acked in cursors.items():
        total += conn.execute(select(func.count()).where(c.lane == lane, c.offset > acked)).scalar_one()
    return total


def _prune(conn: Connection, *, older_than: float, keys_before: float) -> int:
    c = event_log.c
    newest = conn.execute(select(func.max(c.offset))).scalar()
    if newest is None:
        return 0
    lc = log_cursors.c
    acked = conn.execute(select(lc.lane, func.min(lc.acked_offset)).group_by(lc.lane))
    deleted = 0
    for lane, cursor in acked.all():
        query = delete(event_log).where(
            c.lane == lane,
            c.offset <= cursor,
            c.offset < newest,  # keeps the newest row, so SQLite never hands out its rowid again
            c.accepted_at < older_than,
            or_(c.idempotency_key.is_(None), c.accepted_at < keys_before),
        )
        deleted += conn.execute(query).rowcount
    return deleted
