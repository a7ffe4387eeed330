"""Indexes for the history filtered by status or trigger within a mapping: without them,
SQLite scans a mapping's whole history to find that none of its runs failed.

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_runs_mapping_status_id", "runs", ["mapping", "status", "id"])
    op.create_index("ix_runs_mapping_trigger_id", "runs", ["mapping", "trigger", "id"])


def downgrade() -> None:
    op.drop_index("ix_runs_mapping_trigger_id", table_name="runs")
    op.drop_index("ix_runs_mapping_status_id", table_name="runs")
