"""Schedules: each mapping's next due time, claimed with compare-and-set; sync requests.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "schedules",
        sa.Column("mapping", sa.String(200), primary_key=True),
        sa.Column("schedule", sa.String(200), nullable=False),
        sa.Column("timezone", sa.String(100), nullable=False),
        sa.Column("due_at", TS),
        sa.Column("paused", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("version", sa.Integer, nullable=False, server_default="0"),
        sa.Column("claimed_at", TS),
        sa.Column("claimed_by", sa.String(200)),
    )
    op.create_table(
        "sync_requests",
        sa.Column("mapping", sa.String(200), primary_key=True),
        sa.Column("requested_at", TS, nullable=False),
        sa.Column("requested_by", sa.String(200)),
    )


def downgrade() -> None:
    op.drop_table("sync_requests")
    op.drop_table("schedules")
