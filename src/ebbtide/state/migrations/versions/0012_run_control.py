"""Controlling runs from the API: progress and cancel requests, queued replays, the actions
people took, and revoked tokens.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "run_progress",
        sa.Column("run_id", sa.Integer, primary_key=True),
        sa.Column("mapping", sa.String(200), nullable=False),
        sa.Column("phase", sa.String(20), nullable=False),
        sa.Column("done", sa.BigInteger, nullable=False),
        sa.Column("total", sa.BigInteger),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("cancel_requested_at", sa.DateTime(timezone=True)),
        sa.Column("cancel_requested_by", sa.String(200)),
    )
    op.create_table(
        "replay_requests",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("mapping", sa.String(200), nullable=False),
        sa.Column("run_id", sa.Integer, nullable=False),
        sa.Column("latest", sa.Boolean, nullable=False),
        sa.Column("only_failed", sa.Boolean, nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("requested_by", sa.String(200)),
    )
    op.create_table(
        "actions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(200)),
        sa.Column("action", sa.String(50), nullable=False),
        sa.Column("mapping", sa.String(200)),
        sa.Column("run_id", sa.Integer),
        sa.Column("detail", sa.Text),
    )
    op.create_index("ix_actions_mapping_id", "actions", ["mapping", "id"])
    op.add_column("api_tokens", sa.Column("revoked_at", sa.DateTime(timezone=True)))


def downgrade() -> None:
    op.drop_column("api_tokens", "revoked_at")
    op.drop_index("ix_actions_mapping_id", table_name="actions")
    op.drop_table("actions")
    op.drop_table("replay_requests")
    op.drop_table("run_progress")
