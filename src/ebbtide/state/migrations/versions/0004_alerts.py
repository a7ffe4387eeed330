"""Alerts: subscriptions, in-app notifications, deliveries, and each mapping's alert state.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "subscriptions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("statuses", sa.JSON, nullable=False),
        sa.Column("mappings", sa.JSON),
        sa.Column("channels", sa.JSON, nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_index("ix_subscriptions_email", "subscriptions", ["email"])
    op.create_table(
        "notifications",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("run_id", sa.Integer),
        sa.Column("mapping", sa.String(200), nullable=False),
        sa.Column("event", sa.String(20), nullable=False),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("read_at", TS),
    )
    op.create_index("ix_notifications_email", "notifications", ["email", "read_at"])
    op.create_table(
        "alert_deliveries",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.Integer),
        sa.Column("mapping", sa.String(200), nullable=False),
        sa.Column("event", sa.String(20), nullable=False),
        sa.Column("channel", sa.String(20), nullable=False),
        sa.Column("target", sa.Text, nullable=False),
        sa.Column("delivered", sa.Boolean, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_index("ix_alert_deliveries_created", "alert_deliveries", ["created_at"])
    op.create_table(
        "alert_states",
        sa.Column("mapping", sa.String(200), primary_key=True),
        sa.Column("failing", sa.Boolean, nullable=False),
        sa.Column("status", sa.String(20)),
        sa.Column("since", TS, nullable=False),
        sa.Column("last_alert_at", TS),
    )


def downgrade() -> None:
    for table in ("alert_states", "alert_deliveries", "notifications", "subscriptions"):
        op.drop_table(table)
