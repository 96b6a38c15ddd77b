"""The deliveries ledger, the same SQL on both engines: claims, outcomes, dead letters (``ports.Outbound``).

Every function is one synchronous unit of work on a SQLAlchemy ``Connection`` inside one transaction (see
``backends.sql.outbound`` for how each engine runs it). Atomic claims: on PostgreSQL the due rows are
selected ``FOR UPDATE SKIP LOCKED``, so concurrent senders take disjoint rows without waiting on each other;
on SQLite the clause compiles to nothing and the single writer (``BEGIN IMMEDIATE``) serializes claims.
Invariants: a delivery's ``attempts`` is raised in the claim, before any send; a lease is only ever
released by its owner's ``finish`` or by its expiry; terminal rows never change again except by
``retry_dead`` (dead -> pending).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from sqlalchemy import Connection, and_, delete, func, or_, select, tuple_, update

from tidings.backends.sql.targets import insert_for
from tidings.core.delivery import (
    EMAIL_TARGET,
    WEBHOOK_DISABLE_AFTER,
    Backlog,
    Claimed,
    DeadEvent,
    DeliveryRecord,
    Finished,
    device_target,
    push_target,
    target_id,
    webhook_target,
)
from tidings.core.rules import CANCEL
from tidings.db.schema import (
    dead_events,
    decisions,
    deferred,
    deliveries,
    devices,
    inbox,
    push_subscriptions,
    user_profiles,
    webhook_endpoints,
)

d = deliveries.c


def cancel_decisions(
    conn: Connection, rows: Sequence[tuple[str, str, str, str, int]], reason: str, now: float
) -> None:
    """``cancel`` decisions for (app, event_id, user, channel, seq); one already recorded stays as it is."""
    if not rows:
        return
    values = [
        {
            "app": a,
            "event_id": e,
            "user_id": u,
            "kind": CANCEL,
            "channel": ch,
            "reason": reason,
            "seq": s,
            "at": now,
        }
        for a, e, u, ch, s in rows
    ]
    conn.execute(insert_for(conn, decisions).values(values).on_conflict_do_nothing())


# --- claims --------------------------------------------------------------------------------------------------


def expand(conn: Connection, now: float, limit: int) -> int:
    """Turns up to ``limit`` due ``deferred`` rows into deliveries, one per target; returns how many rows."""
    f = deferred.c
    due = (
        select(f.app, f.user_id, f.seq, f.channel, f.event_id, f.digest, f.traceparent, f.tracestate)
        .where(f.due_at <= now)
        .order_by(f.due_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    rows = conn.execute(due).all()
    if not rows:
        return 0
    keys = [(r.app, r.user_id, r.seq, r.channel) for r in rows]
    conn.execute(delete(deferred).where(tuple_(f.app, f.user_id, f.seq, f.channel).in_(keys)))
    made: list[dict[str, Any]] = []
    untargeted: list[tuple[str, str, str, str, int]] = []
    for r in rows:
        targets = _targets_of(conn, r.app, r.user_id, r.seq, r.channel)
        if not targets:
            untargeted.append((r.app, r.event_id, r.user_id, r.channel, r.seq))
        made += [
            {
                "app": r.app,
                "user_id": r.user_id,
                "seq": r.seq,
                "channel": r.channel,
                "target": target,
                "event_id": r.event_id,
                "digest": bool(r.digest),
                "status": "pending",
                "attempts": 0,
                "next_at": now,
                "created_at": now,
                "updated_at": now,
                "traceparent": r.traceparent,
                "tracestate": r.tracestate,
            }
            for target in targets
        ]
    if made:
        conn.execute(insert_for(conn, deliveries).values(made).on_conflict_do_nothing())
    cancel_decisions(conn, untargeted, "no target: nothing registered for this channel", now)
    return len(rows)


def _targets_of(conn: Connection, app: str, user: str, seq: int, channel: str) -> list[str]:
    if channel == "web_push":
        c = push_subscriptions.c
        ids = conn.execute(select(c.id).where(c.app == app, c.user_id == user)).scalars()
        return [push_target(i) for i in ids]
    if channel == "mobile_push":
        c2 = devices.c
        ids = conn.execute(select(c2.id).where(c2.app == app, c2.user_id == user)).scalars()
        return [device_target(i) for i in ids]
    if channel == "email":
        p = user_profiles.c
        email = conn.execute(select(p.email).where(p.app == app, p.user_id == user)).scalar()
        return [EMAIL_TARGET] if email else []
    if channel == "webhook":
        w = webhook_endpoints.c
        hooks = conn.execute(select(w.id, w.events).where(w.app == app, w.disabled.is_(False))).all()
        if not hooks:
            return []
        payload = conn.execute(
            select(inbox.c.payload).where(inbox.c.app == app, inbox.c.user_id == user, inbox.c.seq == seq)
        ).scalar()
        kind = str(orjson.loads(payload).get("type", "")) if payload else ""
        return [
            webhook_target(h.id)
            for h in hooks
            if not orjson.loads(h.events) or kind in orjson.loads(h.events)
        ]
    return []


def anything_due(conn: Connection, now: float) -> bool:
    """Whether a claim at ``now`` would find work: a read, so an idle sender's polls take no write lock."""
    f = deferred.c
    free = or_(d.lease_until.is_(None), d.lease_until <= now)
    due = select(d.id).where(d.status == "pending", d.next_at <= now, free).limit(1)
    return (
        conn.execute(select(f.seq).where(f.due_at <= now).limit(1)).first() is not None
        or conn.execute(due).first() is not None
    )


def claim(conn: Connection, owner: str, now: float, lease: float, limit: int) -> list[Claimed]:
    expand(conn, now, limit)
    free = or_(d.lease_until.is_(None), d.lease_until <= now)
    due = (
        select(d.id)
        .where(d.status == "pending", d.next_at <= now, free)
        .order_by(d.next_at, d.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    ids = list(conn.execute(due).scalars())
    if not ids:
        return []
    conn.execute(
        update(deliveries)
        .where(d.id.in_(ids))
        .values(lease_owner=owner, lease_until=now + lease, attempts=d.attempts + 1, updated_at=now)
    )
    i = inbox.c
    joined = deliveries.outerjoin(inbox, and_(i.app == d.app, i.user_id == d.user_id, i.seq == d.seq))
    query = (
        select(
            deliveries,
            i.payload,
            i.read_at,
            i.seen_at,
            i.replaced_by,
            i.removed_at,
            i.created_at.label("made_at"),
        )
        .select_from(joined)
        .where(d.id.in_(ids))
        .order_by(d.id)
    )
    claimed: list[Claimed] = []
    cancelled: dict[str, list[Any]] = {}
    for r in conn.execute(query):
        why = _cancel_reason(r)
        if why is not None:
            cancelled.setdefault(why, []).append(r)
            continue
        claimed.append(
            Claimed(
                r.id,
                r.app,
                r.user_id,
                r.seq,
                r.channel,
                r.target,
                r.event_id,
                bool(r.digest),
                r.attempts,
                r.made_at,
                r.payload,
                r.traceparent,
                r.tracestate,
            )
        )
    for why, rows in cancelled.items():
        conn.execute(
            update(deliveries)
            .where(d.id.in_([r.id for r in rows]))
            .values(status="cancelled", last_error=why, lease_owner=None, lease_until=None, updated_at=now)
        )
        cancel_decisions(conn, [(r.app, r.event_id, r.user_id, r.channel, r.seq) for r in rows], why, now)
    return claimed


def _cancel_reason(r: Any) -> str | None:
    if r.payload is None:
        return "the notification is gone"
    if r.removed_at is not None:
        return "retracted or deleted before the send"
    if r.read_at is not None:
        return "read before the send"
    if r.seen_at is not None:
        return "seen before the send"
    if r.replaced_by is not None:
        return f"replaced by seq {r.replaced_by} before the send"
    return None


# --- outcomes ------------------------------------------------------------------------------------------------


def finish(conn: Connection, owner: str, results: Sequence[Finished], now: float) -> int:
    if not results:
        return 0
    mine = {
        r.id: r
        for r in conn.execute(
            select(d.id, d.app, d.user_id, d.channel, d.target).where(
                d.id.in_([x.id for x in results]), d.lease_owner == owner, d.status == "pending"
            )
        )
    }
    for res in results:
        row = mine.get(res.id)
        if row is None:
            continue
        values: dict[str, Any] = {
            "status": res.status,
            "lease_owner": None,
            "lease_until": None,
            "last_error": res.error,
            "updated_at": now,
        }
        if res.status == "pending":
            values["next_at"] = res.next_at
        conn.execute(update(deliveries).where(d.id == res.id).values(values))
        if res.remove_target:
            _remove_target(conn, row.app, row.user_id, row.target)
        if row.channel == "webhook" and res.ok is not None:
            _webhook_health(conn, target_id(row.target), res.ok, now)
    return len(mine)


def _remove_target(conn: Connection, app: str, user: str, target: str) -> None:
    kind, ident = target.partition(":")[0], target_id(target)
    table = {"push": push_subscriptions, "device": devices, "webhook": webhook_endpoints}.get(kind)
    if table is not None:
        conn.execute(delete(table).where(table.c.id == ident, table.c.app == app))
    elif target == EMAIL_TARGET:
        p = user_profiles.c
        conn.execute(update(user_profiles).where(p.app == app, p.user_id == user).values(email=None))


def _webhook_health(conn: Connection, hook_id: str, ok: bool, now: float) -> None:
    w = webhook_endpoints.c
    if ok:
        conn.execute(update(webhook_endpoints).where(w.id == hook_id).values(failing_since=None))
        return
    conn.execute(
        update(webhook_endpoints).where(w.id == hook_id, w.failing_since.is_(None)).values(failing_since=now)
    )
    conn.execute(
        update(webhook_endpoints)
        .where(w.id == hook_id, w.failing_since <= now - WEBHOOK_DISABLE_AFTER)
        .values(disabled=True)
    )


# --- views for the API, the CLI and the metrics ----------------------------------------------------------------


def record_of(r: Any) -> DeliveryRecord:
    return DeliveryRecord(
        r.id,
        r.app,
        r.user_id,
        r.seq,
        r.channel,
        r.target,
        r.event_id,
        r.status,
        r.attempts,
        r.next_at,
        r.last_error,
        r.updated_at,
    )


def for_event(conn: Connection, app: str, event_id: str, limit: int) -> list[DeliveryRecord]:
    query = (
        select(deliveries)
        .where(d.app == app, d.event_id == event_id)
        .order_by(d.user_id, d.seq, d.channel, d.target)
        .limit(limit)
    )
    return [record_of(r) for r in conn.execute(query)]


def dead(conn: Connection, app: str | None, limit: int) -> tuple[list[DeliveryRecord], list[DeadEvent]]:
    q = select(deliveries).where(d.status == "dead")
    e = dead_events.c
    qe = select(dead_events)
    if app is not None:
        q, qe = q.where(d.app == app), qe.where(e.app == app)
    rows = [record_of(r) for r in conn.execute(q.order_by(d.updated_at.desc(), d.id.desc()).limit(limit))]
    events = [
        DeadEvent(r.id, r.app, r.event_id, r.error, r.at)
        for r in conn.execute(qe.order_by(e.at.desc()).limit(limit))
    ]
    return rows, events


def retry_dead(conn: Connection, ids: Sequence[int] | None, now: float) -> int:
    stmt = update(deliveries).where(d.status == "dead")
    if ids is not None:
        stmt = stmt.where(d.id.in_(list(ids)))
    values = {"status": "pending", "attempts": 0, "next_at": now, "lease_owner": None, "lease_until": None}
    return int(conn.execute(stmt.values(updated_at=now, **values)).rowcount)


def record_dead_event(conn: Connection, app: str, event_id: str, error: str, now: float) -> None:
    conn.execute(dead_events.insert().values(app=app, event_id=event_id, error=error[:500], at=now))


def depth(conn: Connection, now: float) -> Backlog:
    free = or_(d.lease_until.is_(None), d.lease_until <= now)
    due, oldest = conn.execute(
        select(func.count(), func.min(d.next_at)).where(d.status == "pending", d.next_at <= now, free)
    ).one()
    f = deferred.c
    due2, oldest2 = conn.execute(select(func.count(), func.min(f.due_at)).where(f.due_at <= now)).one()
    firsts = [t for t in (oldest, oldest2) if t is not None]
    dead_rows = conn.execute(select(func.count()).where(d.status == "dead")).scalar() or 0
    dead_others = conn.execute(select(func.count()).select_from(dead_events)).scalar() or 0
    w = webhook_endpoints.c
    disabled = conn.execute(select(func.count()).where(w.disabled.is_(True))).scalar() or 0
    return Backlog(
        int(due) + int(due2),
        min(firsts) if firsts else None,
        int(dead_rows) + int(dead_others),
        int(disabled),
    )
