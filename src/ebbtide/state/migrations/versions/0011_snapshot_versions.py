"""Snapshot versions: per mapping, the version of its snapshot kept in a shared store (object
store or shared folder) that is current, advanced with compare-and-set under the run's lease.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "snapshot_versions",
        sa.Column("mapping", sa.String(200), primary_key=True),
        sa.Column("version", sa.String(100)),
        sa.Column("through_run", sa.Integer, nullable=False),
        sa.Column("generation", sa.Integer, nullable=False),
        sa.Column("run_id", sa.Integer),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("snapshot_versions")
