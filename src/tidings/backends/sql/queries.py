"""Statements both engines run as they are: SQLAlchemy Core over ``tidings.db.schema``, compiled per dialect.

Only statements that read or change the same rows with the same SQL on SQLite and PostgreSQL live here; the
batch writes and batch lookups differ per engine (see ``tidings.backends.sql``). Every statement is scoped by
``app``, and every per-user statement names (app, user_id), the leading key of the per-user tables (which
lets PostgreSQL prune it to one hash partition).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Literal

from sqlalchemy import (
    ColumnElement,
    Delete,
    Select,
    Table,
    Update,
    and_,
    delete,
    func,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.sql.dml import ReturningDelete

from tidings.db.schema import (
    app_rules,
    apps,
    decisions,
    deferred,
    deliveries,
    idempotency_keys,
    inbox,
    stream_tickets,
    topic_subscribers,
    user_seqs,
)

# --- inbox -------------------------------------------------------------------------------------------------


def of_user(app: str, user: str) -> ColumnElement[bool]:
    return and_(inbox.c.app == app, inbox.c.user_id == user)


def streamed(app: str, user: str) -> ColumnElement[bool]:
    """The user's rows that nothing replaced or removed: what backlogs see (retraction markers included)."""
    return and_(of_user(app, user), inbox.c.replaced_by.is_(None), inbox.c.removed_at.is_(None))


def shown(app: str, user: str) -> ColumnElement[bool]:
    """The user's notifications that nothing replaced or removed: what lists and counts see."""
    return and_(streamed(app, user), inbox.c.kind == "notification")


Status = Literal["inbox", "unread", "unseen", "archived", "all"]


def with_status(status: Status) -> ColumnElement[bool] | None:
    """The filter of a ``GET /v1/me/notifications?status=``: 'inbox' (the default) is what is not archived;
    'unread'/'unseen' among those; 'archived'; 'all'."""
    c = inbox.c
    if status == "all":
        return None
    if status == "archived":
        return c.archived_at.is_not(None)
    if status == "unread":
        return and_(c.archived_at.is_(None), c.read_at.is_(None))
    if status == "unseen":
        return and_(c.archived_at.is_(None), c.seen_at.is_(None))
    return c.archived_at.is_(None)


def backlog_query(app: str, user: str, after: int, limit: int) -> Select[Any]:
    c = inbox.c
    return (
        select(c.seq, c.event_id, c.payload)
        .where(streamed(app, user), c.seq > after)
        .order_by(c.seq)
        .limit(limit)
    )


def page_query(
    app: str,
    user: str,
    *,
    after: int | None,
    before: int | None,
    limit: int,
    unread_only: bool,
    status: Status = "all",
    types: Sequence[str] | None = None,
) -> Select[Any]:
    """Oldest first from ``after`` when it is given, else newest first (below ``before`` when given);
    ``status`` and ``types`` (None: any) filter."""
    c = inbox.c
    query = select(c.seq, c.payload, c.read_at, c.seen_at, c.archived_at).where(shown(app, user)).limit(limit)
    which = with_status(status)
    if which is not None:
        query = query.where(which)
    if types is not None:
        query = query.where(c.type.in_(list(types)))
    if after is not None:
        query = query.where(c.seq > after)
    if before is not None:
        query = query.where(c.seq < before)
    if unread_only:
        query = query.where(c.read_at.is_(None))
    return query.order_by(c.seq if after is not None else c.seq.desc())


def last_seq_query(app: str, user: str) -> Select[Any]:
    c = user_seqs.c
    return select(c.last_seq).where(c.app == app, c.user_id == user)


def last_seqs_query(app: str, users: ColumnElement[bool]) -> Select[Any]:
    """(user_id, last_seq) of the app's counters whose user ``users`` matches (``user_id IN (...)`` on SQLite,
    ``user_id = ANY(:users)`` on PostgreSQL): a probe of the primary key (app, user_id) per user."""
    c = user_seqs.c
    return select(c.user_id, c.last_seq).where(c.app == app, users)


def by_app(users: Sequence[tuple[str, str]], size: int) -> Iterator[tuple[str, list[str]]]:
    """The user ids of ``users`` ((app, user) pairs), grouped by app in chunks of at most ``size``: one
    ``last_seqs_query`` each."""
    grouped: dict[str, list[str]] = {}
    for app, user in users:
        grouped.setdefault(app, []).append(user)
    for app, ids in grouped.items():
        for start in range(0, len(ids), size):
            yield app, ids[start : start + size]


def unset_statement(app: str, user: str, field: Literal["read", "seen"], at: float) -> Update:
    """Sets ``read_at`` or ``seen_at`` to ``at`` where it is unset (the first time stays); the caller adds
    which seqs."""
    column = inbox.c.read_at if field == "read" else inbox.c.seen_at
    return update(inbox).where(of_user(app, user), column.is_(None)).values({column: at})


def take_pending(app: str, user: str, which: ColumnElement[bool]) -> ReturningDelete[Any, Any, Any]:
    """Deletes the user's pending deliveries matching ``which``, returning (seq, channel, event_id) of each."""
    d = deferred.c
    return (
        delete(deferred).where(d.app == app, d.user_id == user, which).returning(d.seq, d.channel, d.event_id)
    )


# --- apps and stream tickets ---------------------------------------------------------------------------------


def app_query(match: ColumnElement[bool]) -> Select[Any]:
    return select(apps).where(match)


def app_named(name: str) -> Select[Any]:
    return select(apps.c.name).where(apps.c.name == name)


def with_key(key_hash: str) -> ColumnElement[bool]:
    """The app whose current or previous API key hash is ``key_hash`` (the caller checks the expiry)."""
    return or_(apps.c.api_key_hash == key_hash, apps.c.previous_key_hash == key_hash)


def all_apps() -> Select[Any]:
    return select(apps).order_by(apps.c.name)


def rotate_key(name: str, key_hash: str, previous_until: float) -> Update:
    """The current key hash becomes the previous one (replacing any older previous), ``key_hash`` current.
    Right-hand sides read the row as it was before the update, on both engines."""
    c = apps.c
    return (
        update(apps)
        .where(c.name == name)
        .values(previous_key_hash=c.api_key_hash, previous_key_until=previous_until, api_key_hash=key_hash)
    )


def rotate_secret(name: str, jwt_secret: str, previous_until: float) -> Update:
    """Like ``rotate_key``, for the JWT secret."""
    c = apps.c
    return (
        update(apps)
        .where(c.name == name)
        .values(previous_jwt_secret=c.jwt_secret, previous_secret_until=previous_until, jwt_secret=jwt_secret)
    )


def delete_app(name: str) -> tuple[Delete, Delete]:
    """The app's row (its key hashes and JWT secrets) and its unredeemed stream tickets."""
    return delete(apps).where(apps.c.name == name), delete(stream_tickets).where(stream_tickets.c.app == name)


def drop_expired_tickets(now: float) -> Delete:
    return delete(stream_tickets).where(stream_tickets.c.expires_at <= now)


def take_ticket(ticket_hash: str) -> ReturningDelete[Any, Any, Any]:
    """Deletes the ticket, returning (app, user_id, expires_at): of concurrent redeems, one gets the row."""
    c = stream_tickets.c
    return (
        delete(stream_tickets).where(c.ticket_hash == ticket_hash).returning(c.app, c.user_id, c.expires_at)
    )


# --- topics ---------------------------------------------------------------------------------------------------


def unsubscribe_statement(app: str, topic: str, user: str) -> Delete:
    c = topic_subscribers.c
    return delete(topic_subscribers).where(c.app == app, c.topic == topic, c.user_id == user)


def subscribers_page(app: str, topic: str, after: str | None, limit: int) -> Select[Any]:
    """A keyset page along the primary key: the same cost at any depth of a topic."""
    c = topic_subscribers.c
    query = select(c.user_id).where(c.app == app, c.topic == topic).order_by(c.user_id).limit(limit)
    if after is not None:
        query = query.where(c.user_id > after)
    return query


def boundaries_query(app: str, topic: str, after: str | None, every: int, limit: int) -> Select[Any]:
    """Every ``every``-th subscriber id after ``after`` (see ``ports.Topics.boundaries``): a bounded scan of
    the primary key, numbered by a window function."""
    c = topic_subscribers.c
    scan = select(c.user_id).where(c.app == app, c.topic == topic).order_by(c.user_id).limit(every * limit)
    if after is not None:
        scan = scan.where(c.user_id > after)
    ids = scan.subquery("ids")
    numbered = select(ids.c.user_id, func.row_number().over(order_by=ids.c.user_id).label("n")).subquery("n")
    return select(numbered.c.user_id).where(numbered.c.n % every == 0).order_by(numbered.c.user_id)


# --- idempotency keys, app rules ------------------------------------------------------------------------------


def prune_keys(older_than: float) -> Delete:
    return delete(idempotency_keys).where(idempotency_keys.c.created_at < older_than)


def rules_query(app: str) -> Select[Any]:
    return select(app_rules.c.body).where(app_rules.c.app == app)


def upsert_body(insert: Callable[[Table], Any], table: Table, row: Mapping[str, str], now: float) -> Any:
    """Stores ``row``'s JSON ``body`` (a user's preferences, an app's rules) under its primary key, new or
    replacing. ``insert`` is the dialect's ``insert`` (both spell ``ON CONFLICT ... DO UPDATE`` alike)."""
    upsert = insert(table).values({**row, "updated_at": now})
    keys = list(table.primary_key.columns)
    return upsert.on_conflict_do_update(index_elements=keys, set_={"body": row["body"], "updated_at": now})


# --- the decision log and pending offline deliveries ----------------------------------------------------------


def prune_statements(older_than: float) -> tuple[Delete, ...]:
    """Decisions made before ``older_than``; pending deliveries due before it that no sender took; deliveries
    that ended (sent, failed, cancelled, expired) before it. Dead ones stay for an operator."""
    ended = deliveries.c.status.in_(("sent", "failed", "cancelled", "expired"))
    return (
        delete(decisions).where(decisions.c.at < older_than),
        delete(deferred).where(deferred.c.due_at < older_than),
        delete(deliveries).where(ended, deliveries.c.updated_at < older_than),
    )


def decisions_query(
    app: str, event_id: str, *, user: str | None, after: tuple[str, str, str] | None, limit: int
) -> Select[Any]:
    """An event's decisions in (user, kind, channel) order: keyset pages along the primary key."""
    c = decisions.c
    query = select(decisions).where(c.app == app, c.event_id == event_id)
    if user is not None:
        query = query.where(c.user_id == user)
    if after is not None:
        query = query.where(tuple_(c.user_id, c.kind, c.channel) > tuple_(*after))
    return query.order_by(c.user_id, c.kind, c.channel).limit(limit)


def pending_query(app: str, user: str) -> Select[Any]:
    d = deferred.c
    return select(deferred).where(d.app == app, d.user_id == user).order_by(d.seq, d.channel)
