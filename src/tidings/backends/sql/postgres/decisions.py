"""``ports.Decisions`` on PostgreSQL: the decision log and the pending offline deliveries.

Invariant: one decision per (app, event, user, kind, channel); recording it again leaves the first as it is
(``ON CONFLICT DO NOTHING``). A batch is inserted in that key's order, so concurrent inserts of overlapping
decisions cannot deadlock. ``record_decisions`` is also how the inbox write path records its decisions, in the
same transaction as the rows they are about. It copies them (binary ``COPY``) into a temporary table of the
session first, then moves them with one ``INSERT ... SELECT ... ON CONFLICT DO NOTHING``: the database role
needs the ``TEMPORARY`` privilege on the database (every role has it by default).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.backends.sql import queries
from tidings.backends.sql.postgres.arrays import copy_records
from tidings.backends.sql.postgres.database import PostgresDatabase, fetch_all
from tidings.backends.sql.rows import DECISION_COLUMNS, decision_of, deferred_of, detail_json
from tidings.core.rules import Decision, Deferred


class PostgresDecisions:
    """``ports.Decisions``."""

    def __init__(self, db: PostgresDatabase) -> None:
        self._db = db

    async def record(self, items: Sequence[Decision]) -> None:
        if items:
            await self._db.write(partial(record_decisions, items=items))

    async def for_event(
        self, app: str, event_id: str, *, user: str | None, after: tuple[str, str, str] | None, limit: int
    ) -> list[Decision]:
        query = queries.decisions_query(app, event_id, user=user, after=after, limit=limit)
        return [decision_of(row) for row in await self._db.read(partial(fetch_all, query=query))]

    async def pending(self, app: str, user: str) -> list[Deferred]:
        query = queries.pending_query(app, user)
        return [deferred_of(row) for row in await self._db.read(partial(fetch_all, query=query))]

    async def prune(self, older_than: float) -> int:
        return await self._db.write(partial(_prune, older_than=older_than))


async def _prune(conn: AsyncConnection, *, older_than: float) -> int:
    return sum([int((await conn.execute(s)).rowcount) for s in queries.prune_statements(older_than)])


# Decisions are copied here first (``arrays.copy_records``: COPY has no ON CONFLICT), then moved into
# ``decisions``; per connection, emptied by the statement that moves them (and at commit).
STAGE_SQL = (
    "CREATE TEMPORARY TABLE IF NOT EXISTS tidings_decisions_in (app text, event_id text, user_id text,"
    " kind text, channel text, reason text, seq bigint, detail text, at float8) ON COMMIT DELETE ROWS"
)
_NAMES = ", ".join(DECISION_COLUMNS)
MOVE_SQL = (
    f"WITH staged AS (DELETE FROM pg_temp.tidings_decisions_in RETURNING {_NAMES})"
    f" INSERT INTO decisions ({_NAMES}) SELECT {_NAMES} FROM staged"
    " ORDER BY app, event_id, user_id, kind, channel ON CONFLICT DO NOTHING"
)


async def record_decisions(conn: AsyncConnection, items: Sequence[Decision]) -> None:
    """Inserts decisions; one already recorded for its (app, event, user, kind, channel) stays as it is.
    Inserted in that key's order, so concurrent inserts of overlapping decisions cannot deadlock."""
    if not items:
        return
    rows = {(d.app, d.event_id, d.user, d.kind, d.channel): d for d in items}.values()
    records = [
        (d.app, d.event_id, d.user, d.kind, d.channel, d.reason, d.seq, detail_json(d), d.at) for d in rows
    ]
    await conn.exec_driver_sql(STAGE_SQL)  # also begins the transaction, which the COPY needs
    await copy_records(conn, "tidings_decisions_in", DECISION_COLUMNS, records, schema="pg_temp")
    await conn.exec_driver_sql(MOVE_SQL)
