"""Subscriptions made in the web UI: a Slack target (webhook URL and channel) instead of an
email address, and the person who made it (who may remove it).

Revision ID: 0015
Revises: 0014
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("subscriptions") as subscriptions:
        subscriptions.alter_column("email", existing_type=sa.String(320), nullable=True)
        subscriptions.add_column(sa.Column("slack_webhook_url", sa.String(2000)))
        subscriptions.add_column(sa.Column("slack_channel", sa.String(200)))
        subscriptions.add_column(sa.Column("owner", sa.String(320)))


def downgrade() -> None:
    op.execute("DELETE FROM subscriptions WHERE email IS NULL")
    with op.batch_alter_table("subscriptions") as subscriptions:
        subscriptions.drop_column("owner")
        subscriptions.drop_column("slack_channel")
        subscriptions.drop_column("slack_webhook_url")
        subscriptions.alter_column("email", existing_type=sa.String(320), nullable=False)
