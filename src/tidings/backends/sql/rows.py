"""Rows to models and models to rows, the same on both engines: what a stored column holds and how it is read.

Invariants: ``apps.origins``, ``decisions.detail``, ``user_preferences.body`` and ``app_rules.body`` hold JSON
text (orjson); ``deferred.digest`` is read back as a ``bool`` (SQLite returns 0/1). A mapper does no I/O and
no per-row work beyond building its model.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from tidings.core.models import App, InboxItem, StoredNotification
from tidings.core.rules import (
    CANCEL,
    AppRules,
    Decision,
    Deferred,
    UserPreferences,
    prefs_from_json,
    prefs_to_json,
    rules_from_json,
    rules_to_json,
)
from tidings.ports import Claim

InboxKey = tuple[str, str, str]  # (app, user, event id)
UserKey = tuple[str, str]  # (app, user)


# The column orders of the rows the write path inserts in bulk, the same on both engines (SQLite's
# ``batches.insert_many``, PostgreSQL's ``arrays.copy_records``): a row tuple's fields in this order.
INBOX_COLUMNS = (
    "app",
    "user_id",
    "seq",
    "id",
    "event_id",
    "payload",
    "group_key",
    "created_at",
    "replaces",
    "replaced_by",
    "group_started_at",
    "type",
    "chain",
    "contrib",
)
DEFERRED_COLUMNS = (
    "app",
    "user_id",
    "seq",
    "channel",
    "event_id",
    "due_at",
    "reason",
    "digest",
    "created_at",
    "traceparent",
    "tracestate",
)
DECISION_COLUMNS = ("app", "event_id", "user_id", "kind", "channel", "reason", "seq", "detail", "at")


def notifications_of(app: str, user: str, rows: Iterable[Any]) -> list[StoredNotification]:
    """Rows of (seq, event_id, payload) of one user's inbox (``queries.backlog_query``)."""
    return [StoredNotification(app, user, r.seq, r.event_id, r.payload) for r in rows]


def items_of(rows: Iterable[Any]) -> list[InboxItem]:
    """Rows of (seq, payload, read_at, seen_at, archived_at) (``queries.page_query``)."""
    return [InboxItem(r.seq, r.payload, r.read_at, r.seen_at, r.archived_at) for r in rows]


def app_row(app: App) -> dict[str, object]:
    return {
        "name": app.name,
        "api_key_hash": app.api_key_hash,
        "jwt_secret": app.jwt_secret,
        "origins": orjson.dumps(list(app.origins)).decode(),
        "created_at": app.created_at,
        "previous_key_hash": app.previous_key_hash,
        "previous_key_until": app.previous_key_until,
        "previous_jwt_secret": app.previous_jwt_secret,
        "previous_secret_until": app.previous_secret_until,
    }


def app_of(row: Any) -> App:
    return App(
        row.name,
        row.api_key_hash,
        row.jwt_secret,
        tuple(orjson.loads(row.origins)),
        row.created_at,
        row.previous_key_hash,
        row.previous_key_until,
        row.previous_jwt_secret,
        row.previous_secret_until,
    )


def ticket_row(ticket_hash: str, app: str, user: str, expires_at: float) -> dict[str, object]:
    return {"ticket_hash": ticket_hash, "app": app, "user_id": user, "expires_at": expires_at}


def redeemed(taken: Any, now: float) -> tuple[str, str] | None:
    """(app, user) of a ticket taken by ``queries.take_ticket``; None when there was none or it expired."""
    if taken is None or taken.expires_at <= now:
        return None
    return taken.app, taken.user_id


def subscriber_row(app: str, topic: str, user: str, now: float) -> dict[str, object]:
    return {"app": app, "topic": topic, "user_id": user, "created_at": now}


def claim_row(claim: Claim) -> dict[str, str]:
    return {"app": claim.app, "key": claim.key, "event_id": claim.event_id, "body_hash": claim.body_hash}


def prefs_row(app: str, user: str, prefs: UserPreferences) -> dict[str, str]:
    return {"app": app, "user_id": user, "body": orjson.dumps(prefs_to_json(prefs)).decode()}


def prefs_of(body: str | bytes) -> UserPreferences:
    return prefs_from_json(orjson.loads(body))


def rules_row(app: str, rules: AppRules) -> dict[str, str]:
    return {"app": app, "body": orjson.dumps(rules_to_json(rules)).decode()}


def rules_of(body: str | bytes) -> AppRules:
    return rules_from_json(orjson.loads(body))


def detail_json(d: Decision) -> str | None:
    return orjson.dumps(d.detail).decode() if d.detail is not None else None


def decision_of(row: Any) -> Decision:
    detail = orjson.loads(row.detail) if row.detail is not None else None
    return Decision(
        row.app, row.event_id, row.user_id, row.kind, row.reason, row.channel, row.seq, row.at, detail
    )


def deferred_of(row: Any) -> Deferred:
    return Deferred(
        row.app,
        row.user_id,
        row.seq,
        row.channel,
        row.event_id,
        row.due_at,
        row.reason,
        bool(row.digest),
        row.traceparent,
        row.tracestate,
    )


def cancel_decision(app: str, user: str, field: str, row: Any, at: float) -> Decision:
    """The decision recording that marking a row read or seen cancelled a pending delivery (``row``: a row of
    ``queries.take_pending``)."""
    reason = f"the user has {field} the notification: no {row.channel} needed"
    return Decision(app, row.event_id, user, CANCEL, reason, row.channel, row.seq, at)
