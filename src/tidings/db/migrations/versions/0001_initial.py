"""The initial schema: apps, the embedded event log and its cursors, inboxes and their seq counters, topic
subscribers, stream tickets. Mirrors ``tidings.db.schema`` exactly (a test compares them).

Revision ID: 0001
Revises:
Create Date: 2026-01-01

Hand-written and dialect-neutral so that PostgreSQL runs this same file. ``offset`` is a reserved word in
SQL: it is only ever named through SQLAlchemy, which quotes it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    _apps()
    _event_log()
    _inbox()
    _topics_and_tickets()


def _apps() -> None:
    op.create_table(
        "apps",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("api_key_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("jwt_secret", sa.String(128), nullable=False),
        sa.Column("origins", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
    )


def _event_log() -> None:
    op.create_table(
        "event_log",
        sa.Column(
            "offset",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("id", sa.String(32), nullable=False, unique=True),
        sa.Column("app", sa.String(64), nullable=False),
        sa.Column("lane", sa.String(8), nullable=False),
        sa.Column("idempotency_key", sa.String(255), nullable=True),
        sa.Column("body_hash", sa.String(64), nullable=True),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("accepted_at", sa.Float(), nullable=False),
    )
    op.create_index("ix_event_log_lane_offset", "event_log", ["lane", "offset"])
    op.create_index("ux_event_log_idempotency", "event_log", ["app", "idempotency_key"], unique=True)
    op.create_table(
        "log_cursors",
        sa.Column("consumer", sa.String(64), nullable=False),
        sa.Column("lane", sa.String(8), nullable=False),
        sa.Column("acked_offset", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("consumer", "lane"),
    )


def _inbox() -> None:
    op.create_table(
        "user_seqs",
        sa.Column("app", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("app", "user_id"),
    )
    op.create_table(
        "inbox",
        sa.Column("app", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("event_id", sa.String(32), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("group_key", sa.String(255), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("read_at", sa.Float(), nullable=True),
        sa.Column("seen_at", sa.Float(), nullable=True),
        sa.Column("replaces", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("app", "user_id", "seq"),
        sa.UniqueConstraint("app", "user_id", "event_id", name="ux_inbox_event"),
    )


def _topics_and_tickets() -> None:
    op.create_table(
        "topic_subscribers",
        sa.Column("app", sa.String(64), nullable=False),
        sa.Column("topic", sa.String(200), nullable=False),
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("app", "topic", "user_id"),
    )
    op.create_table(
        "stream_tickets",
        sa.Column("ticket_hash", sa.String(64), primary_key=True),
        sa.Column("app", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
    )


def downgrade() -> None:
    for table in (
        "stream_tickets",
        "topic_subscribers",
        "inbox",
        "user_seqs",
        "log_cursors",
        "event_log",
        "apps",
    ):
        op.drop_table(table)
