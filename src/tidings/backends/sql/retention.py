"""The retention sweep's units of work, on either SQL engine (synchronous SQLAlchemy Core on a ``Connection``).

One batch = one read of up to ``users`` users' counters and floors (with, per user, the newest expired seq in
the window above its floor: an index range of the primary key, never a scan of the user's whole inbox), the
pure plan (``core.retention.plan_batch``), then one short write transaction: the counters of the users with a
cut are locked in the writers' order (app, user_id) (PostgreSQL; SQLite has one writer), their seqs up to the
cut deleted with their pending offline deliveries, and the floors raised. A fan-out writing the same users
waits for that transaction only, which deletes at most ``budget`` rows.

Several sweepers may run at once (one per worker process): deletes of a seq prefix are idempotent and a floor
only rises (``max``), so two sweeps of the same user delete each row once and agree on the floor.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

from sqlalchemy import BigInteger, Connection, String, and_, column, func, select, values
from sqlalchemy.sql import ColumnElement

from tidings.backends.sql.outbound import Runner
from tidings.backends.sql.targets import insert_for
from tidings.core.clock import Clock
from tidings.core.retention import BatchPlan, Cut, Limits, Swept, UserState, plan_batch
from tidings.db.schema import deferred, deliveries, inbox, inbox_floors, user_seqs

EXPIRED = "retention: the notification was swept"


def read_states(
    conn: Connection, *, app: str, after: str | None, users: int, cutoff: float | None, window: int
) -> list[UserState]:
    """Up to ``users`` users after ``after`` (ascending) with their last seq, floor and newest expired seq."""
    floor = func.coalesce(inbox_floors.c.swept_to, 0)
    columns: list[Any] = [user_seqs.c.user_id, user_seqs.c.last_seq, floor.label("floor")]
    if cutoff is not None:
        aged = (
            select(func.max(inbox.c.seq))
            .where(
                inbox.c.app == user_seqs.c.app,
                inbox.c.user_id == user_seqs.c.user_id,
                inbox.c.seq > floor,
                inbox.c.seq <= floor + window,
                inbox.c.created_at < cutoff,
            )
            .scalar_subquery()
        )
        columns.append(aged.label("aged"))
    where: list[ColumnElement[bool]] = [user_seqs.c.app == app]
    if after is not None:
        where.append(user_seqs.c.user_id > after)
    joined = user_seqs.outerjoin(
        inbox_floors,
        and_(inbox_floors.c.app == user_seqs.c.app, inbox_floors.c.user_id == user_seqs.c.user_id),
    )
    query = select(*columns).select_from(joined).where(*where).order_by(user_seqs.c.user_id).limit(users)
    return [
        UserState(
            r.user_id,
            int(r.last_seq),
            int(r.floor),
            None if cutoff is None or r.aged is None else int(r.aged),
        )
        for r in conn.execute(query)
    ]


def apply_cuts(conn: Connection, *, app: str, cuts: Sequence[Cut], now: float) -> int:
    """Deletes each cut's seqs (and their pending offline deliveries) and raises its floor; one transaction
    (the caller's). Returns the inbox rows deleted."""
    if not cuts:
        return 0
    names = sorted(cut.user for cut in cuts)
    # The writers' lock order: a fan-out to these users waits for this transaction, never the other way round.
    conn.execute(
        select(user_seqs.c.user_id)
        .where(user_seqs.c.app == app, user_seqs.c.user_id.in_(names))
        .order_by(user_seqs.c.app, user_seqs.c.user_id)
        .with_for_update(of=user_seqs)
    ).all()
    _uncount(conn, app, cuts)
    if conn.dialect.name == "postgresql":
        deleted = _delete_joined(conn, app, cuts, now)
    else:  # SQLite: in-process, a statement per user costs no round trip
        deleted = sum(_delete_one(conn, app, cut, now) for cut in sorted(cuts, key=lambda c: c.user))
    stmt = insert_for(conn, inbox_floors).values(
        [{"app": app, "user_id": cut.user, "swept_to": cut.to, "swept_at": now} for cut in cuts]
    )
    excluded = stmt.excluded
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[inbox_floors.c.app, inbox_floors.c.user_id],
            set_={
                "swept_to": func.max(inbox_floors.c.swept_to, excluded.swept_to)
                if conn.dialect.name == "sqlite"
                else func.greatest(inbox_floors.c.swept_to, excluded.swept_to),
                "swept_at": excluded.swept_at,
            },
        )
    )
    return deleted


def _uncount(conn: Connection, app: str, cuts: Sequence[Cut]) -> None:
    """Takes the shown notifications about to be swept out of their users' counters (``user_seqs`` unread,
    unseen, archived equal a COUNT of the shown rows: see ``backends.sql.lifecycle``), in the sweep's
    transaction. Replaced, removed and marker rows are not counted, so they go without a change."""
    i = inbox.c
    unread = func.count().filter(i.read_at.is_(None), i.archived_at.is_(None))
    unseen = func.count().filter(i.seen_at.is_(None), i.archived_at.is_(None))
    archived = func.count().filter(i.archived_at.is_not(None))
    for cut in cuts:
        row = conn.execute(
            select(unread, unseen, archived).where(
                i.app == app,
                i.user_id == cut.user,
                i.seq > cut.floor,
                i.seq <= cut.to,
                i.replaced_by.is_(None),
                i.removed_at.is_(None),
                i.kind == "notification",
            )
        ).one()
        if any(row):
            c = user_seqs.c
            conn.execute(
                user_seqs.update()
                .where(c.app == app, c.user_id == cut.user)
                .values(unread=c.unread - row[0], unseen=c.unseen - row[1], archived=c.archived - row[2])
            )


def _delete_one(conn: Connection, app: str, cut: Cut, now: float) -> int:
    span = (inbox.c.app == app, inbox.c.user_id == cut.user, inbox.c.seq > cut.floor, inbox.c.seq <= cut.to)
    deleted = int(conn.execute(inbox.delete().where(*span)).rowcount)
    conn.execute(
        deferred.delete().where(
            deferred.c.app == app, deferred.c.user_id == cut.user, deferred.c.seq <= cut.to
        )
    )
    conn.execute(
        deliveries.update()
        .where(
            deliveries.c.app == app,
            deliveries.c.user_id == cut.user,
            deliveries.c.seq <= cut.to,
            deliveries.c.status == "pending",
        )
        .values(status="expired", last_error=EXPIRED, updated_at=now)
    )
    return deleted


def _delete_joined(conn: Connection, app: str, cuts: Sequence[Cut], now: float) -> int:
    """PostgreSQL: the batch's cuts as one VALUES list joined by three statements (three round trips per
    batch, not three per user)."""
    data = [(cut.user, cut.floor, cut.to) for cut in sorted(cuts, key=lambda c: c.user)]

    def ranges() -> Any:
        return values(
            column("user_id", String), column("lo", BigInteger), column("hi", BigInteger), name="cuts"
        ).data(data)

    c = ranges()
    deleted = conn.execute(
        inbox.delete().where(
            inbox.c.app == app, inbox.c.user_id == c.c.user_id, inbox.c.seq > c.c.lo, inbox.c.seq <= c.c.hi
        )
    ).rowcount
    c = ranges()
    conn.execute(
        deferred.delete().where(
            deferred.c.app == app, deferred.c.user_id == c.c.user_id, deferred.c.seq <= c.c.hi
        )
    )
    c = ranges()
    conn.execute(
        deliveries.update()
        .where(
            deliveries.c.app == app,
            deliveries.c.user_id == c.c.user_id,
            deliveries.c.seq <= c.c.hi,
            deliveries.c.status == "pending",
        )
        .values(status="expired", last_error=EXPIRED, updated_at=now)
    )
    return int(deleted)


def plan(
    states: Sequence[UserState], limits: Limits, budget: int, after: str | None, users: int
) -> BatchPlan:
    return plan_batch(states, limits, budget, after=after, full=len(states) >= users)


def floor_of(conn: Connection, *, app: str, user: str) -> int:
    value = conn.execute(
        select(inbox_floors.c.swept_to).where(inbox_floors.c.app == app, inbox_floors.c.user_id == user)
    ).scalar()
    return 0 if value is None else int(value)


class SqlRetention:
    """``ports.Retention`` over a ``write`` and a ``read`` runner of synchronous units of work
    (``backends.sql.outbound.Runner``)."""

    def __init__(self, write: Runner, read: Runner, clock: Clock) -> None:
        self._write = write
        self._read = read
        self._clock = clock

    async def sweep(self, app: str, after: str | None, limits: Limits, *, users: int, budget: int) -> Swept:
        now = self._clock.time()
        cutoff = None if limits.max_age is None else now - limits.max_age
        states: list[UserState] = await self._read(
            partial(read_states, app=app, after=after, users=users, cutoff=cutoff, window=budget)
        )
        planned = plan(states, limits, budget, after, users)
        rows = int(await self._write(partial(apply_cuts, app=app, cuts=planned.cuts, now=now)))
        return Swept(rows, planned.next_after, planned.done, len(planned.cuts))

    async def floor(self, app: str, user: str) -> int:
        return int(await self._read(partial(floor_of, app=app, user=user)))
