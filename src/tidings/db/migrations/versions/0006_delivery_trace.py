"""One trace per notification into its offline send: the W3C context on pending and claimed deliveries.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03

``deferred`` and ``deliveries`` gain nullable ``traceparent``/``tracestate`` (NULL: not traced, or not sampled;
the sender then makes no span), so existing rows need no backfill and the DDL is the same on both engines.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

TABLES = ("deferred", "deliveries")
COLUMNS = (("traceparent", sa.String(55)), ("tracestate", sa.String(512)))


def upgrade() -> None:
    for table in TABLES:
        for name, kind in COLUMNS:
            op.add_column(table, sa.Column(name, kind, nullable=True))


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:  # SQLite drops columns by copying the table
            for name, _ in reversed(COLUMNS):
                batch.drop_column(name)
