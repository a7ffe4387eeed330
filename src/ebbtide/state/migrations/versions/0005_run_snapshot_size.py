"""What the destination had when each run started, and whether the run was forced.

The delete guard measures a shrink against the largest size the destination had in recent
runs, so a model cannot empty a destination a little at a time; a forced run re-bases it.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as runs:
        runs.add_column(sa.Column("snapshot_size", sa.BigInteger))
        runs.add_column(sa.Column("forced", sa.Boolean, nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("runs") as runs:
        runs.drop_column("forced")
        runs.drop_column("snapshot_size")
