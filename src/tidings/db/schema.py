"""Tables, as SQLAlchemy Core metadata. The Alembic migrations in ``migrations/versions`` create exactly these;
a test checks that the migrated database matches this metadata."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

apps = Table(
    "apps",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("api_key_hash", String(64), nullable=False, unique=True),
    # The JWT secret must be readable to verify HMAC signatures; protect the database file accordingly.
    Column("jwt_secret", String(128), nullable=False),
    Column("origins", Text, nullable=False, default="[]"),
    Column("created_at", Float, nullable=False),
    # Credential rotation (migration 0005): the replaced key hash / JWT secret, honoured until its time.
    Column("previous_key_hash", String(64), nullable=True),
    Column("previous_key_until", Float, nullable=True),
    Column("previous_jwt_secret", String(128), nullable=True),
    Column("previous_secret_until", Float, nullable=True),
    Index("ux_apps_previous_key_hash", "previous_key_hash", unique=True),
)

# The embedded event log. ``offset`` orders appends; one cursor per (consumer group, lane) records acks.
event_log = Table(
    "event_log",
    metadata,
    # 64-bit on PostgreSQL; on SQLite an INTEGER PRIMARY KEY is the rowid (64-bit already).
    Column("offset", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("id", String(32), nullable=False, unique=True),
    Column("app", String(64), nullable=False),
    Column("lane", String(8), nullable=False),
    Column("idempotency_key", String(255), nullable=True),
    Column("body_hash", String(64), nullable=True),
    Column("payload", LargeBinary, nullable=False),
    Column("accepted_at", Float, nullable=False),
    Index("ix_event_log_lane_offset", "lane", "offset"),
    Index("ux_event_log_idempotency", "app", "idempotency_key", unique=True),
)

log_cursors = Table(
    "log_cursors",
    metadata,
    Column("consumer", String(64), nullable=False),
    Column("lane", String(8), nullable=False),
    Column("acked_offset", BigInteger, nullable=False),
    PrimaryKeyConstraint("consumer", "lane"),
)

# Per-user seq counter: the row is written in the same transaction as the inbox rows it numbers.
user_seqs = Table(
    "user_seqs",
    metadata,
    Column("app", String(64), nullable=False),
    Column("user_id", String(255), nullable=False),
    Column("last_seq", BigInteger, nullable=False),
    # O(1) counts (migration 0007), kept in the same transaction as every change of the user's rows: the
    # shown notifications not archived and unread / unseen, and the shown archived ones.
    Column("unread", BigInteger, nullable=False, server_default="0"),
    Column("unseen", BigInteger, nullable=False, server_default="0"),
    Column("archived", BigInteger, nullable=False, server_default="0"),
    PrimaryKeyConstraint("app", "user_id"),
)

inbox = Table(
    "inbox",
    metadata,
    Column("app", String(64), nullable=False),
    Column("user_id", String(255), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("id", String(32), nullable=False),
    Column("event_id", String(32), nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("group_key", String(255), nullable=True),
    Column("created_at", Float, nullable=False),
    Column("read_at", Float, nullable=True),
    Column("seen_at", Float, nullable=True),
    Column("replaces", BigInteger, nullable=True),
    # Aggregation (``core.aggregation``): the seq of the row that replaced this one (then it no longer counts
    # as unread and backlogs leave it out), and when this row's group started (NULL: not joinable).
    Column("replaced_by", BigInteger, nullable=True),
    Column("group_started_at", Float, nullable=True),
    # The life of a notification (migration 0007, ``backends.sql.lifecycle``): archived by the user; removed
    # (retracted by the producer or deleted by the user: no longer shown, counted or streamed); ``kind``
    # 'retract' for the marker row a retraction adds, which a backlog shows as a ``retract`` frame; the
    # notification ``type`` (for filters); ``chain``, the first seq of the aggregate the row belongs to,
    # and ``contrib``, while the row's event still counts in that aggregate, its actor and the actor limit
    # (JSON), so an aggregate is re-rendered from its surviving events.
    Column("archived_at", Float, nullable=True),
    Column("removed_at", Float, nullable=True),
    Column("kind", String(12), nullable=False, server_default="notification"),
    Column("type", String(100), nullable=True),
    Column("chain", BigInteger, nullable=True),
    Column("contrib", Text, nullable=True),
    PrimaryKeyConstraint("app", "user_id", "seq"),
    UniqueConstraint("app", "user_id", "event_id", name="ux_inbox_event"),
    # The lookup of a user's current aggregate of a group. Declared as a (trivially true) unique constraint
    # rather than an index so that it is part of the table's DDL, which the PostgreSQL hash partitioning
    # recreates (backends/sql/postgres/partitions.py), and it starts with the partition key as PostgreSQL requires.
    UniqueConstraint("app", "user_id", "group_key", "seq", name="ux_inbox_group"),
    # A retraction finds an event's rows in every inbox of the app (migration 0007). With user_id last, the
    # per-user lookup by (app, user_id, event_id) is fully indexed whichever of the two indexes a planner
    # picks (PostgreSQL, with stale statistics after a big fan-out, once picked this one for it).
    Index("ix_inbox_event", "app", "event_id", "user_id"),
)

topic_subscribers = Table(
    "topic_subscribers",
    metadata,
    Column("app", String(64), nullable=False),
    Column("topic", String(200), nullable=False),
    Column("user_id", String(255), nullable=False),
    Column("created_at", Float, nullable=False),
    PrimaryKeyConstraint("app", "topic", "user_id"),
    Index("ix_topic_subscribers_user", "app", "user_id"),  # migration 0008: a user's memberships (erasure)
)

stream_tickets = Table(
    "stream_tickets",
    metadata,
    Column("ticket_hash", String(64), primary_key=True),
    Column("app", String(64), nullable=False),
    Column("user_id", String(255), nullable=False),
    Column("expires_at", Float, nullable=False),
)

# Producers' Idempotency-Keys for broker event logs (``ports.Idempotency``); the embedded log keeps its own.
idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("app", String(64), nullable=False),
    Column("key", String(255), nullable=False),
    Column("event_id", String(32), nullable=False),
    Column("body_hash", String(64), nullable=False),
    Column("created_at", Float, nullable=False),
    PrimaryKeyConstraint("app", "key"),
    Index("ix_idempotency_keys_created_at", "created_at"),
)

# --- social rules (migration 0003) ---------------------------------------------------------------------------

# An app's notification rules (``core.rules.AppRules`` as JSON); an app without a row has the defaults.
app_rules = Table(
    "app_rules",
    metadata,
    Column("app", String(64), primary_key=True),
    Column("body", Text, nullable=False),
    Column("updated_at", Float, nullable=False),
)

# A user's preferences (``core.rules.UserPreferences`` as JSON); a user without a row has none.
user_preferences = Table(
    "user_preferences",
    metadata,
    Column("app", String(64), nullable=False),
    Column("user_id", String(255), nullable=False),
    Column("body", Text, nullable=False),
    Column("updated_at", Float, nullable=False),
    PrimaryKeyConstraint("app", "user_id"),
)

# The decision log (``core.rules.Decision``): one row per (event, user, kind, channel); user '' = the event.
decisions = Table(
    "decisions",
    metadata,
    Column("app", String(64), nullable=False),
    Column("event_id", String(32), nullable=False),
    Column("user_id", String(255), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("channel", String(16), nullable=False),
    Column("reason", Text, nullable=False),
    Column("seq", BigInteger, nullable=True),
    Column("detail", Text, nullable=True),
    Column("at", Float, nullable=False),
    PrimaryKeyConstraint("app", "event_id", "user_id", "kind", "channel"),
    Index("ix_decisions_at", "at"),
)

# Pending offline deliveries (``core.rules.Deferred``) for senders that do not exist yet: due at ``due_at``.
deferred = Table(
    "deferred",
    metadata,
    Column("app", String(64), nullable=False),
    Column("user_id", String(255), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("channel", String(16), nullable=False),
    Column("event_id", String(32), nullable=False),
    Column("due_at", Float, nullable=False),
    Column("reason", Text, nullable=False),
    Column("digest", Boolean, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("traceparent", String(55), nullable=True),  # migration 0006: the trace the send continues
    Column("tracestate", String(512), nullable=True),
    PrimaryKeyConstraint("app", "user_id", "seq", "channel"),
    Index("ix_deferred_due_at", "due_at"),
)

# Per-user cap counters of the offline channels: deliveries in the fixed window starting at window_start.
channel_usage = Table(
    "channel_usage",
    metadata,
    Column("app", String(64), nullable=False),
    Column("user_id", String(255), nullable=False),
    Column("channel", String(16), nullable=False),
    Column("window_start", Float, nullable=False),
    Column("count", Integer, nullable=False),
    PrimaryKeyConstraint("app", "user_id", "channel"),
)

# --- offline senders (migration 0004) --------------------------------------------------------------------------

# What the email channel needs to know of a user (set by the producer: PUT /v1/users/{id}).
user_profiles = Table(
    "user_profiles",
    metadata,
    Column("app", String(64), nullable=False),
    Column("user_id", String(255), nullable=False),
    Column("email", String(320), nullable=True),
    Column("locale", String(35), nullable=True),
    Column("time_zone", String(64), nullable=True),
    Column("name", String(200), nullable=True),
    Column("updated_at", Float, nullable=False),
    PrimaryKeyConstraint("app", "user_id"),
)

# A browser's Web Push subscription (RFC 8030 endpoint + RFC 8291 keys); one row per (app, endpoint).
push_subscriptions = Table(
    "push_subscriptions",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("app", String(64), nullable=False),
    Column("user_id", String(255), nullable=False),
    Column("endpoint", Text, nullable=False),
    Column("p256dh", String(128), nullable=False),
    Column("auth", String(64), nullable=False),
    Column("created_at", Float, nullable=False),
    UniqueConstraint("app", "endpoint", name="ux_push_subscriptions_endpoint"),
    Index("ix_push_subscriptions_user", "app", "user_id"),
)

# A mobile (or web) device registered with FCM; one row per (app, token).
devices = Table(
    "devices",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("app", String(64), nullable=False),
    Column("user_id", String(255), nullable=False),
    Column("platform", String(16), nullable=False),
    Column("token", String(4096), nullable=False),
    Column("created_at", Float, nullable=False),
    UniqueConstraint("app", "token", name="ux_devices_token"),
    Index("ix_devices_user", "app", "user_id"),
)

# An app's webhook endpoints. ``secrets``: JSON list, newest first; the older ones sign until ``rotated_until``.
webhook_endpoints = Table(
    "webhook_endpoints",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("app", String(64), nullable=False),
    Column("url", Text, nullable=False),
    Column("events", Text, nullable=False),
    Column("secrets", Text, nullable=False),
    Column("rotated_until", Float, nullable=True),
    Column("disabled", Boolean, nullable=False),
    Column("failing_since", Float, nullable=True),
    Column("created_at", Float, nullable=False),
    Index("ix_webhook_endpoints_app", "app"),
)

# An app's VAPID key pair (the private key is a secret: never logged or served).
vapid_keys = Table(
    "vapid_keys",
    metadata,
    Column("app", String(64), primary_key=True),
    Column("private_key", String(128), nullable=False),
    Column("public_key", String(128), nullable=False),
    Column("created_at", Float, nullable=False),
)

# One row per (app, user, seq, channel, target): a delivery the senders claim, send, retry and finish.
deliveries = Table(
    "deliveries",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("app", String(64), nullable=False),
    Column("user_id", String(255), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("channel", String(16), nullable=False),
    Column("target", String(64), nullable=False),
    Column("event_id", String(32), nullable=False),
    Column("digest", Boolean, nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_at", Float, nullable=False),
    Column("lease_owner", String(64), nullable=True),
    Column("lease_until", Float, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("traceparent", String(55), nullable=True),  # migration 0006: the trace the send continues
    Column("tracestate", String(512), nullable=True),
    UniqueConstraint("app", "user_id", "seq", "channel", "target", name="ux_deliveries_target"),
    Index("ix_deliveries_due", "status", "next_at"),
    Index("ix_deliveries_event", "app", "event_id"),
)

# Fan-out events no store accepted after their tries (the worker's poison events), kept for an operator.
dead_events = Table(
    "dead_events",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("app", String(64), nullable=False),
    Column("event_id", String(32), nullable=False),
    Column("error", Text, nullable=False),
    Column("at", Float, nullable=False),
)


# --- the life of a notification (migration 0007) ----------------------------------------------------------------

# Retractions the fan-out checks inside the inbox write, so one recorded before its event is written wins:
# ``kind`` 'event' (key: an event id) or 'key' (a cancel key: it wins over the events accepted up to ``at``).
retractions = Table(
    "retractions",
    metadata,
    Column("app", String(64), nullable=False),
    Column("kind", String(8), nullable=False),
    Column("key", String(255), nullable=False),
    Column("at", Float, nullable=False),
    PrimaryKeyConstraint("app", "kind", "key"),
    Index("ix_retractions_at", "at"),
)

# Which events carried a cancel key (written with their inbox rows), so a cancel by key finds them.
cancel_keys = Table(
    "cancel_keys",
    metadata,
    Column("app", String(64), nullable=False),
    Column("cancel_key", String(255), nullable=False),
    Column("event_id", String(32), nullable=False),
    Column("accepted_at", Float, nullable=False),
    PrimaryKeyConstraint("app", "cancel_key", "event_id"),
)

# --- retention (migration 0008) ----------------------------------------------------------------------------------

# Per (app, user): the highest seq the retention sweep deleted. Every seq at or below ``swept_to`` is gone, the
# seqs above it are kept gap-free; a stream resuming from below it is told (``core.resume``).
inbox_floors = Table(
    "inbox_floors",
    metadata,
    Column("app", String(64), nullable=False),
    Column("user_id", String(255), nullable=False),
    Column("swept_to", BigInteger, nullable=False),
    Column("swept_at", Float, nullable=False),
    PrimaryKeyConstraint("app", "user_id"),
)
