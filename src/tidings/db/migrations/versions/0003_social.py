"""What social apps need: aggregation columns on the inbox; app rules, user preferences, the decision log,
pending offline deliveries and per-user channel caps.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26

On SQLite the inbox changes run in batch mode (the table is copied once with the new constraint inline); on
PostgreSQL they are plain ALTERs, which a hash-partitioned inbox accepts (the constraint starts with the
partition key).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("inbox") as batch:
        batch.add_column(sa.Column("replaced_by", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("group_started_at", sa.Float(), nullable=True))
        batch.create_unique_constraint("ux_inbox_group", ["app", "user_id", "group_key", "seq"])
    _rules_and_preferences()
    _decisions_and_deliveries()


def _rules_and_preferences() -> None:
    op.create_table(
        "app_rules",
        sa.Column("app", sa.String(64), primary_key=True),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
    )
    op.create_table(
        "user_preferences",
        sa.Column("app", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("app", "user_id"),
    )


def _decisions_and_deliveries() -> None:
    op.create_table(
        "decisions",
        sa.Column("app", sa.String(64), nullable=False),
        sa.Column("event_id", sa.String(32), nullable=False),
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("app", "event_id", "user_id", "kind", "channel"),
    )
    op.create_index("ix_decisions_at", "decisions", ["at"])
    op.create_table(
        "deferred",
        sa.Column("app", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("event_id", sa.String(32), nullable=False),
        sa.Column("due_at", sa.Float(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("digest", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("app", "user_id", "seq", "channel"),
    )
    op.create_index("ix_deferred_due_at", "deferred", ["due_at"])
    op.create_table(
        "channel_usage",
        sa.Column("app", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("window_start", sa.Float(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("app", "user_id", "channel"),
    )


def downgrade() -> None:
    for index, table in (("ix_deferred_due_at", "deferred"), ("ix_decisions_at", "decisions")):
        op.drop_index(index, table_name=table)
    for table in ("channel_usage", "deferred", "decisions", "user_preferences", "app_rules"):
        op.drop_table(table)
    with op.batch_alter_table("inbox") as batch:
        batch.drop_constraint("ux_inbox_group", type_="unique")
        batch.drop_column("group_started_at")
        batch.drop_column("replaced_by")
