"""Credential rotation: an app's replaced API key hash and JWT secret, each honoured until a time.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03

Only nullable columns are added (NULL: no rotation in progress), so existing rows need no backfill and the
migration is the same plain DDL on SQLite and PostgreSQL.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

COLUMNS = (
    ("previous_key_hash", sa.String(64)),
    ("previous_key_until", sa.Float()),
    ("previous_jwt_secret", sa.String(128)),
    ("previous_secret_until", sa.Float()),
)


def upgrade() -> None:
    for name, kind in COLUMNS:
        op.add_column("apps", sa.Column(name, kind, nullable=True))
    op.create_index("ux_apps_previous_key_hash", "apps", ["previous_key_hash"], unique=True)


def downgrade() -> None:
    op.drop_index("ux_apps_previous_key_hash", table_name="apps")
    with op.batch_alter_table("apps") as batch:  # SQLite drops columns by copying the table
        for name, _ in reversed(COLUMNS):
            batch.drop_column(name)
