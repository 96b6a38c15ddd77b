"""Retention and a user's data on request: how far each inbox was swept, and a user's topic memberships by user.

Revision ID: 0008
Revises: 0006
Create Date: 2026-12-03

``inbox_floors`` holds, per (app, user), the highest seq the retention sweep deleted (every seq at or below it
is gone; the seqs above it are gap-free): a client resuming from at or below it is told (docs/protocol.md).
``ix_topic_subscribers_user`` finds a user's memberships for erasure and export without a scan of every
topic. (Chained after 0006 on this branch; the lifecycle migration 0007 goes between them when merged.)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "inbox_floors",
        sa.Column("app", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("swept_to", sa.BigInteger, nullable=False),
        sa.Column("swept_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("app", "user_id"),
    )
    op.create_index("ix_topic_subscribers_user", "topic_subscribers", ["app", "user_id"])


def downgrade() -> None:
    op.drop_index("ix_topic_subscribers_user", table_name="topic_subscribers")
    op.drop_table("inbox_floors")
