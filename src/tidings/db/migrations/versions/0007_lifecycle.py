"""The life of a notification: retraction, archive and delete, filters, and O(1) per-user counts.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03

``inbox`` gains nullable state columns (archived, removed, type, aggregate chain and contribution) and a
``kind`` with a default, so existing rows need no rewrite but the ``type`` backfill (read from the stored
JSON); ``user_seqs`` gains the counters, backfilled from the rows (shown, not replaced). The new tables hold
retractions (checked by the fan-out inside the inbox write) and which events carried a cancel key.
Aggregates written before this migration have no recorded contributions: a retraction removes them whole.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

INBOX_COLUMNS = (
    ("archived_at", sa.Float()),
    ("removed_at", sa.Float()),
    ("type", sa.String(100)),
    ("chain", sa.BigInteger()),
    ("contrib", sa.Text()),
)
COUNTERS = ("unread", "unseen", "archived")

# Counts of the shown rows of each user (read back into user_seqs); the same SQL on both engines.
BACKFILL = """
UPDATE user_seqs SET
  unread = (SELECT count(*) FROM inbox AS i WHERE i.app = user_seqs.app AND i.user_id = user_seqs.user_id
            AND i.replaced_by IS NULL AND i.read_at IS NULL),
  unseen = (SELECT count(*) FROM inbox AS i WHERE i.app = user_seqs.app AND i.user_id = user_seqs.user_id
            AND i.replaced_by IS NULL AND i.seen_at IS NULL)
"""


def upgrade() -> None:
    for name, kind in INBOX_COLUMNS:
        op.add_column("inbox", sa.Column(name, kind, nullable=True))
    op.add_column("inbox", sa.Column("kind", sa.String(12), nullable=False, server_default="notification"))
    op.create_index("ix_inbox_event", "inbox", ["app", "event_id", "user_id"])
    for name in COUNTERS:
        op.add_column("user_seqs", sa.Column(name, sa.BigInteger(), nullable=False, server_default="0"))
    op.execute(BACKFILL)
    if op.get_bind().dialect.name == "postgresql":
        op.execute("UPDATE inbox SET type = convert_from(payload, 'UTF8')::jsonb ->> 'type'")
    else:
        op.execute("UPDATE inbox SET type = json_extract(CAST(payload AS TEXT), '$.type')")
    op.create_table(
        "retractions",
        sa.Column("app", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("app", "kind", "key"),
    )
    op.create_index("ix_retractions_at", "retractions", ["at"])
    op.create_table(
        "cancel_keys",
        sa.Column("app", sa.String(64), nullable=False),
        sa.Column("cancel_key", sa.String(255), nullable=False),
        sa.Column("event_id", sa.String(32), nullable=False),
        sa.Column("accepted_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("app", "cancel_key", "event_id"),
    )


def downgrade() -> None:
    op.drop_table("cancel_keys")
    op.drop_index("ix_retractions_at", table_name="retractions")
    op.drop_table("retractions")
    with op.batch_alter_table("user_seqs") as batch:
        for name in reversed(COUNTERS):
            batch.drop_column(name)
    op.drop_index("ix_inbox_event", table_name="inbox")
    with op.batch_alter_table("inbox") as batch:  # SQLite drops columns by copying the table
        batch.drop_column("kind")
        for name, _ in reversed(INBOX_COLUMNS):
            batch.drop_column(name)
