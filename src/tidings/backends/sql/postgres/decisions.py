"""``ports.Decisions`` on PostgreSQL: the decision log and the pending offline deliveries.

Invariant: one decision per (app, event, user, kind, channel); recording it again leaves the first as it is
(``ON CONFLICT DO NOTHING``). A batch is inserted in that key's order, so concurrent inserts of overlapping
decisions cannot deadlock. ``record_decisions`` is also how the inbox write path records its decisions, in the
same transaction as the rows they are about.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.backends.sql import queries
from tidings.backends.sql.postgres.arrays import Columns, insert_unnest
from tidings.backends.sql.postgres.database import PostgresDatabase, fetch_all
from tidings.backends.sql.rows import decision_of, deferred_of, detail_json
from tidings.core.rules import Decision, Deferred
from tidings.db.schema import decisions


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


async def record_decisions(conn: AsyncConnection, items: Sequence[Decision]) -> None:
    """Inserts decisions; one already recorded for its (app, event, user, kind, channel) stays as it is.
    Sorted by that key, so concurrent inserts of overlapping decisions cannot deadlock."""
    if not items:
        return
    rows = sorted(
        {(d.app, d.event_id, d.user, d.kind, d.channel): d for d in items}.values(), key=_decision_key
    )
    columns: Columns = {
        "app": ("text", [d.app for d in rows]),
        "event_id": ("text", [d.event_id for d in rows]),
        "user_id": ("text", [d.user for d in rows]),
        "kind": ("text", [d.kind for d in rows]),
        "channel": ("text", [d.channel for d in rows]),
        "reason": ("text", [d.reason for d in rows]),
        "seq": ("bigint", [d.seq for d in rows]),
        "detail": ("text", [detail_json(d) for d in rows]),
        "at": ("float", [d.at for d in rows]),
    }
    await conn.execute(insert_unnest(decisions, "dl", columns).on_conflict_do_nothing())


def _decision_key(d: Decision) -> tuple[str, str, str, str, str]:
    return (d.app, d.event_id, d.user, d.kind, d.channel)
