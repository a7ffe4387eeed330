"""Which diff keeps each mapping's snapshot: `local` (DuckDB) or `warehouse`.

Revision ID: 0016
Revises: 0015
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "snapshot_modes",
        sa.Column("mapping", sa.String(200), primary_key=True),
        sa.Column("mode", sa.String(20), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("snapshot_modes")
