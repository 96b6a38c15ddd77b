"""Where offline deliveries go, the same SQL on both engines: user profiles, push subscriptions, devices,
webhook endpoints and VAPID keys (``ports.Outbound``'s target half).

Every function is one synchronous unit of work on a SQLAlchemy ``Connection``: SQLite runs it on its writer
or reader thread, PostgreSQL through ``AsyncConnection.run_sync`` (see ``backends.sql.outbound``). Upserts use
the dialect's ``INSERT ... ON CONFLICT`` (both spell it alike). Secrets (webhook secrets, the VAPID private
key) are stored as they are and never leave this module except in the records the senders need.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import orjson
from sqlalchemy import Connection, Table, and_, delete, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from tidings.core.delivery import (
    EMAIL_TARGET,
    Claimed,
    Device,
    Profile,
    PushSubscription,
    WebhookEndpoint,
    target_id,
)
from tidings.db.schema import devices, push_subscriptions, user_profiles, vapid_keys, webhook_endpoints

Target = PushSubscription | Device | WebhookEndpoint | Profile


def insert_for(conn: Connection, table: Table) -> Any:
    """The dialect's ``insert`` (it has ``on_conflict_do_nothing/update``)."""
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)


# --- rows to records -----------------------------------------------------------------------------------------


def profile_of(r: Any) -> Profile:
    return Profile(r.app, r.user_id, r.email, r.locale, r.time_zone, r.name)


def subscription_of(r: Any) -> PushSubscription:
    return PushSubscription(r.id, r.app, r.user_id, r.endpoint, r.p256dh, r.auth, r.created_at)


def device_of(r: Any) -> Device:
    return Device(r.id, r.app, r.user_id, r.platform, r.token, r.created_at)


def webhook_of(r: Any) -> WebhookEndpoint:
    return WebhookEndpoint(
        id=r.id,
        app=r.app,
        url=r.url,
        events=tuple(orjson.loads(r.events)),
        secrets=tuple(orjson.loads(r.secrets)),
        created_at=r.created_at,
        rotated_until=r.rotated_until,
        disabled=bool(r.disabled),
        failing_since=r.failing_since,
    )


# --- profiles ------------------------------------------------------------------------------------------------


def set_profile(conn: Connection, p: Profile, now: float) -> None:
    values = {
        "email": p.email,
        "locale": p.locale,
        "time_zone": p.time_zone,
        "name": p.name,
        "updated_at": now,
    }
    stmt = insert_for(conn, user_profiles).values(app=p.app, user_id=p.user, **values)
    conn.execute(stmt.on_conflict_do_update(index_elements=["app", "user_id"], set_=values))


def get_profile(conn: Connection, app: str, user: str) -> Profile | None:
    c = user_profiles.c
    row = conn.execute(select(user_profiles).where(c.app == app, c.user_id == user)).first()
    return profile_of(row) if row else None


# --- push subscriptions and devices ----------------------------------------------------------------------------


def add_subscription(conn: Connection, s: PushSubscription) -> PushSubscription:
    c = push_subscriptions.c
    changes = {"user_id": s.user, "p256dh": s.p256dh, "auth": s.auth}
    stmt = insert_for(conn, push_subscriptions).values(
        id=s.id, app=s.app, endpoint=s.endpoint, created_at=s.created_at, **changes
    )
    conn.execute(stmt.on_conflict_do_update(index_elements=["app", "endpoint"], set_=changes))
    row = conn.execute(select(push_subscriptions).where(c.app == s.app, c.endpoint == s.endpoint)).one()
    return subscription_of(row)


def list_subscriptions(conn: Connection, app: str, user: str) -> list[PushSubscription]:
    c = push_subscriptions.c
    query = select(push_subscriptions).where(c.app == app, c.user_id == user).order_by(c.created_at, c.id)
    return [subscription_of(r) for r in conn.execute(query)]


def add_device(conn: Connection, d: Device) -> Device:
    c = devices.c
    changes = {"user_id": d.user, "platform": d.platform}
    stmt = insert_for(conn, devices).values(
        id=d.id, app=d.app, token=d.token, created_at=d.created_at, **changes
    )
    conn.execute(stmt.on_conflict_do_update(index_elements=["app", "token"], set_=changes))
    return device_of(conn.execute(select(devices).where(c.app == d.app, c.token == d.token)).one())


def list_devices(conn: Connection, app: str, user: str) -> list[Device]:
    c = devices.c
    query = select(devices).where(c.app == app, c.user_id == user).order_by(c.created_at, c.id)
    return [device_of(r) for r in conn.execute(query)]


def remove_owned(conn: Connection, table: Table, app: str, user: str | None, row_id: str) -> bool:
    """Deletes one row of ``table`` by id, only when it belongs to ``app`` (and ``user`` when given)."""
    c = table.c
    where = [c.id == row_id, c.app == app] + ([c.user_id == user] if user is not None else [])
    return bool(conn.execute(delete(table).where(*where)).rowcount > 0)


# --- webhooks and VAPID keys -----------------------------------------------------------------------------------


def add_webhook(conn: Connection, h: WebhookEndpoint) -> None:
    conn.execute(
        webhook_endpoints.insert().values(
            id=h.id,
            app=h.app,
            url=h.url,
            events=orjson.dumps(list(h.events)).decode(),
            secrets=orjson.dumps(list(h.secrets)).decode(),
            rotated_until=h.rotated_until,
            disabled=h.disabled,
            failing_since=h.failing_since,
            created_at=h.created_at,
        )
    )


def list_webhooks(conn: Connection, app: str) -> list[WebhookEndpoint]:
    c = webhook_endpoints.c
    query = select(webhook_endpoints).where(c.app == app).order_by(c.created_at, c.id)
    return [webhook_of(r) for r in conn.execute(query)]


def disabled_webhooks(conn: Connection, limit: int) -> list[WebhookEndpoint]:
    """The disabled endpoints, the longest failing first, at most ``limit`` (the admin page lists them)."""
    c = webhook_endpoints.c
    query = select(webhook_endpoints).where(c.disabled.is_(True)).order_by(c.failing_since, c.id).limit(limit)
    return [webhook_of(r) for r in conn.execute(query)]


def rotate_secret(
    conn: Connection, app: str, hook_id: str, secret: str, overlap_until: float
) -> WebhookEndpoint | None:
    c = webhook_endpoints.c
    row = conn.execute(select(webhook_endpoints).where(c.app == app, c.id == hook_id)).first()
    if row is None:
        return None
    kept = [secret, *orjson.loads(row.secrets)[:1]]
    conn.execute(
        update(webhook_endpoints)
        .where(c.id == hook_id)
        .values(secrets=orjson.dumps(kept).decode(), rotated_until=overlap_until)
    )
    return webhook_of(conn.execute(select(webhook_endpoints).where(c.id == hook_id)).one())


def vapid(conn: Connection, app: str, make: Callable[[], tuple[str, str]], now: float) -> tuple[str, str]:
    c = vapid_keys.c
    row = conn.execute(select(c.private_key, c.public_key).where(c.app == app)).first()
    if row is None:
        private, public = make()
        stmt = insert_for(conn, vapid_keys).values(
            app=app, private_key=private, public_key=public, created_at=now
        )
        conn.execute(stmt.on_conflict_do_nothing())
        row = conn.execute(select(c.private_key, c.public_key).where(c.app == app)).one()
    return str(row.private_key), str(row.public_key)


# --- what claimed deliveries go to -------------------------------------------------------------------------------


def resolve(conn: Connection, rows: Sequence[Claimed]) -> dict[tuple[str, str, str], Target]:
    """The record behind each claimed delivery's target, keyed by (app, user, target); a target deleted since
    the delivery was made is missing from the answer."""
    found: dict[tuple[str, str, str], Target] = {}
    by_kind: dict[str, list[Claimed]] = {}
    for row in rows:
        by_kind.setdefault(row.target.partition(":")[0], []).append(row)
    for kind, table, mapper in (
        ("push", push_subscriptions, subscription_of),
        ("device", devices, device_of),
        ("webhook", webhook_endpoints, webhook_of),
    ):
        wanted = by_kind.get(kind, [])
        if wanted:
            ids = sorted({target_id(r.target) for r in wanted})
            records = {r.id: mapper(r) for r in conn.execute(select(table).where(table.c.id.in_(ids)))}
            for row in wanted:
                record = records.get(target_id(row.target))
                if record is not None and record.app == row.app:
                    found[(row.app, row.user, row.target)] = record
    mail = by_kind.get(EMAIL_TARGET, [])
    if mail:
        for profile in _profiles(conn, {(r.app, r.user) for r in mail}):
            if profile.email:
                found[(profile.app, profile.user, EMAIL_TARGET)] = profile
    return found


def _profiles(conn: Connection, users: Iterable[tuple[str, str]]) -> list[Profile]:
    c = user_profiles.c
    match = or_(*[and_(c.app == app, c.user_id == user) for app, user in sorted(users)])
    return [profile_of(r) for r in conn.execute(select(user_profiles).where(match))]
