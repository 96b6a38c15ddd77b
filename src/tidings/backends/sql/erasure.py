"""A user's data on request, on either SQL engine: erase it all, or read it all out (``ports.UserData``).

What is held about a user, table by table (the list both operations walk, so they cannot disagree): the inbox
and its seq counter and retention floor, preferences, the profile (email, locale, time zone, name), Web Push
subscriptions, devices, topic memberships, pending offline deliveries (``deferred``) and the ledger's
deliveries, the channel caps' counters, stream tickets, and the decisions made for the user.

Erasure is idempotent and runs in short transactions: the inbox in batches of ``batch`` rows (a user with a
large inbox never holds the single SQLite writer or a user's counter lock for long), then everything else in
one transaction, the counter first (taken in the writers' order, so a concurrent fan-out to the user waits, then
starts a new inbox from seq 1). Export is one read; secrets are left out (push keys, device tokens, the
push endpoint's path: a capability URL).
"""

from __future__ import annotations

from functools import partial
from typing import Any
from urllib.parse import urlsplit

import orjson
from sqlalchemy import Connection, Table, select

from tidings.backends.sql.outbound import Runner
from tidings.backends.sql.rows import decision_of, prefs_of
from tidings.core.clock import Clock
from tidings.core.rules import prefs_to_json
from tidings.db.schema import (
    channel_usage,
    decisions,
    deferred,
    deliveries,
    devices,
    inbox,
    inbox_floors,
    push_subscriptions,
    stream_tickets,
    topic_subscribers,
    user_preferences,
    user_profiles,
    user_seqs,
)

# Every per-user table but the inbox, by the name the erasure's counts use; each has (app, user_id) columns.
USER_TABLES: tuple[tuple[str, Table], ...] = (
    ("seq_counter", user_seqs),
    ("retention_floor", inbox_floors),
    ("preferences", user_preferences),
    ("profile", user_profiles),
    ("push_subscriptions", push_subscriptions),
    ("devices", devices),
    ("topic_memberships", topic_subscribers),
    ("pending_deliveries", deferred),
    ("deliveries", deliveries),
    ("channel_usage", channel_usage),
    ("stream_tickets", stream_tickets),
    ("decisions", decisions),
)


def erase_inbox_batch(conn: Connection, *, app: str, user: str, batch: int) -> int:
    """Deletes the user's ``batch`` oldest inbox rows; returns how many (0: none left)."""
    oldest = (
        select(inbox.c.seq)
        .where(inbox.c.app == app, inbox.c.user_id == user)
        .order_by(inbox.c.seq)
        .limit(batch)
        .scalar_subquery()
    )
    statement = inbox.delete().where(inbox.c.app == app, inbox.c.user_id == user, inbox.c.seq.in_(oldest))
    return int(conn.execute(statement).rowcount)


def erase_rest(conn: Connection, *, app: str, user: str, keep_kinds: tuple[str, ...]) -> dict[str, int]:
    """Everything but the inbox (and what a fan-out committed since its batches), in one transaction.
    ``keep_kinds``: decisions of these kinds stay (the audit entries of erasure itself)."""
    conn.execute(
        select(user_seqs.c.last_seq)
        .where(user_seqs.c.app == app, user_seqs.c.user_id == user)
        .with_for_update(of=user_seqs)
    ).all()
    counts = {
        "inbox": int(conn.execute(inbox.delete().where(inbox.c.app == app, inbox.c.user_id == user)).rowcount)
    }
    for name, table in USER_TABLES:
        statement = table.delete().where(table.c.app == app, table.c.user_id == user)
        if table is decisions:
            statement = statement.where(decisions.c.kind.not_in(keep_kinds))
        counts[name] = int(conn.execute(statement).rowcount)
    return counts


def export_user(conn: Connection, *, app: str, user: str, limit: int) -> dict[str, Any]:
    """Everything held about the user, as JSON-ready values (at most ``limit`` inbox rows and decisions,
    newest first; ``truncated`` says when more were held)."""
    mine = {"app": app, "user": user}
    rows = conn.execute(
        select(inbox)
        .where(inbox.c.app == app, inbox.c.user_id == user)
        .order_by(inbox.c.seq.desc())
        .limit(limit + 1)
    ).all()
    made = conn.execute(
        select(decisions)
        .where(decisions.c.app == app, decisions.c.user_id == user)
        .order_by(decisions.c.at.desc())
        .limit(limit + 1)
    ).all()
    prefs = conn.execute(
        select(user_preferences.c.body).where(
            user_preferences.c.app == app, user_preferences.c.user_id == user
        )
    ).scalar()
    profile = _one(conn, user_profiles, **mine)
    counter = conn.execute(
        select(user_seqs.c.last_seq).where(user_seqs.c.app == app, user_seqs.c.user_id == user)
    ).scalar()
    floor = conn.execute(
        select(inbox_floors.c.swept_to).where(inbox_floors.c.app == app, inbox_floors.c.user_id == user)
    ).scalar()
    return {
        "app": app,
        "user": user,
        "profile": None
        if profile is None
        else {k: profile[k] for k in ("email", "locale", "time_zone", "name", "updated_at")},
        "preferences": None if prefs is None else prefs_to_json(prefs_of(prefs)),
        "inbox": {
            "last_seq": 0 if counter is None else int(counter),
            "swept_to": 0 if floor is None else int(floor),
            "notifications": [_notification(r) for r in rows[:limit]],
        },
        "push_subscriptions": [
            {"id": r.id, "endpoint_origin": _origin(r.endpoint), "created_at": r.created_at}
            for r in _all(conn, push_subscriptions, **mine)
        ],
        "devices": [
            {"id": r.id, "platform": r.platform, "created_at": r.created_at}
            for r in _all(conn, devices, **mine)
        ],
        "topics": sorted(r.topic for r in _all(conn, topic_subscribers, **mine)),
        "pending_deliveries": [
            {
                "seq": r.seq,
                "channel": r.channel,
                "event_id": r.event_id,
                "due_at": r.due_at,
                "reason": r.reason,
            }
            for r in _all(conn, deferred, **mine)
        ],
        "deliveries": [
            {
                "id": r.id,
                "seq": r.seq,
                "channel": r.channel,
                "target": r.target,
                "event_id": r.event_id,
                "status": r.status,
                "attempts": r.attempts,
                "updated_at": r.updated_at,
            }
            for r in _all(conn, deliveries, **mine)
        ],
        "decisions": [_decision(r) for r in made[:limit]],
        "truncated": len(rows) > limit or len(made) > limit,
    }


def _notification(r: Any) -> dict[str, Any]:
    return {
        "seq": r.seq,
        "id": r.id,
        "event_id": r.event_id,
        "created_at": r.created_at,
        "read_at": r.read_at,
        "seen_at": r.seen_at,
        "replaced_by": r.replaced_by,
        "notification": orjson.loads(r.payload),
    }


def _decision(r: Any) -> dict[str, Any]:
    d = decision_of(r)
    return {
        "event_id": d.event_id,
        "kind": d.kind,
        "channel": d.channel or None,
        "reason": d.reason,
        "seq": d.seq,
        "at": d.at,
    }


def _origin(endpoint: str) -> str:
    """Only where a push endpoint lives: its path is a capability (whoever holds it can push to the browser)."""
    parts = urlsplit(endpoint)
    return f"{parts.scheme}://{parts.netloc}"


def _all(conn: Connection, table: Table, *, app: str, user: str) -> list[Any]:
    return list(conn.execute(select(table).where(table.c.app == app, table.c.user_id == user)).all())


def _one(conn: Connection, table: Table, *, app: str, user: str) -> Any:
    row = conn.execute(select(table).where(table.c.app == app, table.c.user_id == user)).first()
    return None if row is None else row._mapping


class SqlUserData:
    """``ports.UserData`` over a ``write`` and a ``read`` runner of synchronous units of work."""

    AUDIT_KINDS = ("erase", "export")

    def __init__(self, write: Runner, read: Runner, clock: Clock) -> None:
        self._write = write
        self._read = read
        self._clock = clock

    async def erase(self, app: str, user: str, *, batch: int = 1000) -> dict[str, int]:
        inbox_rows = 0
        while True:  # bounded: each batch deletes rows of a finite inbox, or returns 0
            deleted = int(await self._write(partial(erase_inbox_batch, app=app, user=user, batch=batch)))
            inbox_rows += deleted
            if deleted < batch:
                break
        counts: dict[str, int] = await self._write(
            partial(erase_rest, app=app, user=user, keep_kinds=self.AUDIT_KINDS)
        )
        counts["inbox"] += inbox_rows
        return counts

    async def export(self, app: str, user: str, *, limit: int = 100_000) -> dict[str, Any]:
        result: dict[str, Any] = await self._read(partial(export_user, app=app, user=user, limit=limit))
        return result
