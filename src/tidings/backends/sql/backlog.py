"""The resume read path, batched: what many live streams need to open, in one read unit of work.

A stream that opens reads the user's ``last_seq``, the retention floor when its cursor is behind, and then the
first page of its backlog: three store round trips per connection, each a SQLAlchemy statement built and
compiled and a hop to a reader thread. In a resume storm (10k clients reconnecting at once) those reads were
43% of the gateway's samples (docs/performance.md). ``ports.Inbox.openings`` answers many streams at once
instead; the gateway coalesces the streams opening at the same moment into one call (``gateway.reads``).

SQLite: one reader-thread hop and one read transaction (one snapshot) for the whole batch, and per stream
prepared statements on the driver connection (no SQLAlchemy per statement): the user's counter with the floor,
and the page only when the cursor is behind. PostgreSQL: one statement for the whole batch, the
requests as arrays joined ``LATERAL`` to each user's page. Both read the same rows as ``queries.last_seq_query``,
``retention.floor_of`` and ``queries.backlog_query`` (what backlogs see: rows nothing replaced or removed).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.core.models import StoredNotification
from tidings.ports import Opening, OpenRequest

# The user's counter and retention floor in one step (the floor's primary key lookup costs less than a
# second statement; it is used only when the cursor is behind).
LAST_SEQ = (
    "SELECT s.last_seq, (SELECT f.swept_to FROM inbox_floors f WHERE f.app = s.app AND f.user_id = s.user_id)"
    " FROM user_seqs s WHERE s.app = ? AND s.user_id = ?"
)
PAGE = (
    "SELECT seq, event_id, payload FROM inbox WHERE app = ? AND user_id = ? AND replaced_by IS NULL"
    " AND removed_at IS NULL AND seq > ? ORDER BY seq LIMIT ?"
)


def sqlite_openings(conn: Connection, *, requests: Sequence[OpenRequest], limit: int) -> list[Opening]:
    """The openings of ``requests``, in their order, from one read transaction of ``conn``."""
    if not conn.in_transaction():
        conn.begin()  # the engine's BEGIN: one snapshot for the whole batch
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        return [_sqlite_opening(cursor, request, limit) for request in requests]
    finally:
        cursor.close()


def _sqlite_opening(cursor: Any, request: OpenRequest, limit: int) -> Opening:
    app, user, after = request
    found = cursor.execute(LAST_SEQ, (app, user)).fetchone()
    last_seq = int(found[0]) if found else 0
    if after is None or after >= last_seq:
        return Opening(last_seq, 0, None)  # no backlog to read (and no floor to compare with)
    floor = int(found[1] or 0)
    rows = cursor.execute(PAGE, (app, user, after, limit)).fetchall()
    return Opening(last_seq, floor, [StoredNotification(app, user, s, e, bytes(p)) for s, e, p in rows])


PG_OPENINGS = text(
    """
    SELECT r.i AS i, s.last_seq AS last_seq, f.swept_to AS floor, p.seq AS seq, p.event_id AS event_id,
           p.payload AS payload
    FROM unnest(CAST(:apps AS text[]), CAST(:users AS text[]), CAST(:afters AS bigint[]))
         WITH ORDINALITY AS r(app, user_id, after, i)
    LEFT JOIN user_seqs s ON s.app = r.app AND s.user_id = r.user_id
    LEFT JOIN inbox_floors f ON f.app = r.app AND f.user_id = r.user_id AND r.after < s.last_seq
    LEFT JOIN LATERAL (
        SELECT seq, event_id, payload FROM inbox
        WHERE inbox.app = r.app AND inbox.user_id = r.user_id AND inbox.replaced_by IS NULL
          AND inbox.removed_at IS NULL AND inbox.seq > r.after AND r.after < s.last_seq
        ORDER BY seq LIMIT :lim
    ) p ON true
    ORDER BY r.i, p.seq
    """
)


async def postgres_openings(
    conn: AsyncConnection, *, requests: Sequence[OpenRequest], limit: int
) -> list[Opening]:
    """The openings of ``requests``, in their order, from one statement (one snapshot)."""
    params = {
        "apps": [app for app, _user, _after in requests],
        "users": [user for _app, user, _after in requests],
        "afters": [after for _app, _user, after in requests],  # NULL (no cursor) reads no page
        "lim": limit,
    }
    found: list[tuple[int, int, list[StoredNotification]]] = [(0, 0, []) for _ in requests]
    for row in (await conn.execute(PG_OPENINGS, params)).all():
        index = int(row.i) - 1
        app, user, _after = requests[index]
        _last, _floor, page = found[index]
        if row.seq is not None:
            page.append(StoredNotification(app, user, int(row.seq), row.event_id, bytes(row.payload)))
        found[index] = (int(row.last_seq or 0), int(row.floor or 0), page)
    return [_pg_opening(request, *item) for request, item in zip(requests, found, strict=True)]


def _pg_opening(request: OpenRequest, last_seq: int, floor: int, page: list[StoredNotification]) -> Opening:
    after = request[2]
    if after is None or after >= last_seq:
        return Opening(last_seq, 0, None)
    return Opening(last_seq, floor, page)
