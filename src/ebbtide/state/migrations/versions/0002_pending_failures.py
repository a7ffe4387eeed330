"""Failed records pending retry across syncs, and how many records of a run were retries.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("runs") as runs:
        runs.add_column(sa.Column("retried", sa.BigInteger, nullable=False, server_default="0"))
    op.create_table(
        "pending_failures",
        sa.Column("mapping", sa.String(200), primary_key=True),
        sa.Column("record_key", sa.Text, primary_key=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("operation", sa.String(10), nullable=False),
        sa.Column("first_failed_at", TS, nullable=False),
        sa.Column("last_failed_at", TS, nullable=False),
        sa.Column("failed_syncs", sa.Integer, nullable=False),
        sa.Column("last_run_id", sa.Integer, nullable=False),
        sa.Column("error_class", sa.String(30), nullable=False),
        sa.Column("code", sa.String(100)),
        sa.Column("http_status", sa.Integer),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("payload", sa.Text),
        sa.Column("closed_at", TS),
    )
    op.create_index("ix_pending_failures_status", "pending_failures", ["mapping", "status"])


def downgrade() -> None:
    op.drop_table("pending_failures")
    with op.batch_alter_table("runs") as runs:
        runs.drop_column("retried")
