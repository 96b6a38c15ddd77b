""" "Where is my notification": one event's journey, from what the store holds and what this process saw.

- accepted: the time encoded in the event id (ids are ULIDs minted at acceptance) and, when the API of this
  process accepted it, the details this process's journal kept (type, priority, recipients, trace id);
- fanned out: when and to how many inbox writes, if this process's worker did it;
- inbox: one row per recipient (user, seq, created, seen, read), read from the store with a read-only query;
- live deliveries: per row, the frames written to connections of *this* process (transport, time, live or
  resume), from its bounded journal. Another gateway's deliveries are not known here;
- offline deliveries: per row, the senders' deliveries (channel, target, status, attempts, last error) from the
  store's ledger, whichever sender made them.

The inbox query filters on ``event_id``. The inbox has a unique index on (app, user_id, event_id) but none on
``event_id`` alone: with ``app`` and ``user`` given the lookup uses that index; without, it scans the inbox
(see docs/observability.md for the cost and the index a large deployment should add).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Select, select
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.backends.sql.sqlite import SqliteStore
from tidings.core.clock import isoformat
from tidings.db.schema import inbox
from tidings.observability.journal import JOURNAL, EventRecord
from tidings.ports import Store

MAX_ROWS = 1000  # inbox rows shown per event; a larger fan-out is cut, and the answer says so
_CROCKFORD = {c: i for i, c in enumerate("0123456789ABCDEFGHJKMNPQRSTVWXYZ")}


@dataclass(frozen=True, slots=True)
class InboxRow:
    app: str
    user: str
    seq: int
    created_at: float
    seen_at: float | None
    read_at: float | None
    replaces: int | None


def id_time(event_id: str) -> float | None:
    """The acceptance time encoded in a ULID event id (its first 10 characters: milliseconds)."""
    if len(event_id) != 26 or any(c not in _CROCKFORD for c in event_id[:10]):
        return None
    millis = 0
    for c in event_id[:10]:
        millis = millis * 32 + _CROCKFORD[c]
    return millis / 1000


def _query(event_id: str, app: str | None, user: str | None) -> Select[Any]:
    c = inbox.c
    query = select(c.app, c.user_id, c.seq, c.created_at, c.seen_at, c.read_at, c.replaces).where(
        c.event_id == event_id
    )
    if app is not None:
        query = query.where(c.app == app)
    if user is not None:
        query = query.where(c.user_id == user)
    return query.order_by(c.app, c.user_id, c.seq).limit(MAX_ROWS + 1)


async def inbox_rows(
    store: Store, event_id: str, app: str | None = None, user: str | None = None
) -> list[InboxRow] | None:
    """The event's inbox rows (at most ``MAX_ROWS + 1``), or None when the store has no SQL tables to read."""
    query = _query(event_id, app, user)
    if isinstance(store, SqliteStore):

        def read(conn: Connection) -> Sequence[Any]:
            return conn.execute(query).all()

        rows = await store.db.read(read)
    else:
        # Imported only when it is the store in use (it needs the postgres extra).
        postgres = sys.modules.get("tidings.backends.sql.postgres")
        if postgres is None or not isinstance(store, postgres.PostgresStore):
            return None

        async def read_async(conn: AsyncConnection) -> Sequence[Any]:
            found: Sequence[Any] = (await conn.execute(query)).all()
            return found

        rows = await store.db.read(read_async)
    return [InboxRow(*row) for row in rows]


def _iso(ts: float | None) -> str | None:
    return isoformat(ts) if ts is not None else None


def _accepted(record: EventRecord | None) -> dict[str, Any] | None:
    if record is None or record.accepted_at is None:
        return None
    return {
        "at": _iso(record.accepted_at),
        "app": record.app,
        "type": record.type,
        "priority": record.priority,
        "recipients": record.recipients,
        "topic": record.topic,
        "trace_id": record.trace_id,
    }


def _fanout(record: EventRecord | None) -> dict[str, Any] | None:
    if record is None or record.fanned_out_at is None:
        return None
    return {"at": _iso(record.fanned_out_at), "inbox_writes": record.fanned_out_to}


Offline = dict[tuple[str, str, int], list[dict[str, Any]]]


async def offline_of(store: Store, event_id: str, rows: Sequence[InboxRow]) -> Offline:
    """The ledger's deliveries of ``event_id``, by (app, user, seq), for the apps of ``rows``."""
    found: Offline = {}
    for app in sorted({row.app for row in rows}):
        for d in await store.outbound.for_event(app, event_id, 4 * MAX_ROWS):
            found.setdefault((d.app, d.user, d.seq), []).append(
                {
                    "channel": d.channel,
                    "target": d.target,
                    "status": d.status,
                    "attempts": d.attempts,
                    "last_error": d.last_error,
                    "updated_at": _iso(d.updated_at),
                }
            )
    return found


def _row(row: InboxRow, offline: Offline | None = None) -> dict[str, Any]:
    deliveries = [
        {"transport": transport, "at": _iso(at), "live": live}
        for transport, at, live in JOURNAL.deliveries(row.app, row.user, row.seq)
    ]
    return {
        "app": row.app,
        "user": row.user,
        "seq": row.seq,
        "created_at": _iso(row.created_at),
        "seen_at": _iso(row.seen_at),
        "read_at": _iso(row.read_at),
        "replaces": row.replaces,
        "deliveries": deliveries,
        "offline": (offline or {}).get((row.app, row.user, row.seq), []),
    }


async def journey(
    store: Store, event_id: str, app: str | None = None, user: str | None = None
) -> dict[str, Any] | None:
    """The journey of ``event_id`` as JSON, or None when neither the store nor this process knows it."""
    record = JOURNAL.event(event_id)
    rows = await inbox_rows(store, event_id, app, user)
    if record is None and not rows:
        return None
    kept = (rows or [])[:MAX_ROWS]
    offline = await offline_of(store, event_id, kept)
    shown = [_row(row, offline) for row in kept]
    encoded = id_time(event_id)
    return {
        "event_id": event_id,
        "id_time": _iso(encoded),
        "accepted": _accepted(record),
        "fanout": _fanout(record),
        "store_searched": rows is not None,
        "truncated": rows is not None and len(rows) > MAX_ROWS,
        "inbox": shown,
        "summary": {
            "stored": len(shown),
            "delivered_live": sum(1 for row in shown if row["deliveries"]),
            "seen": sum(1 for row in shown if row["seen_at"]),
            "read": sum(1 for row in shown if row["read_at"]),
        },
    }
