"""Where a run comes from: who started it, the run it replays, whether it follows a reset.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as runs:
        runs.add_column(sa.Column("actor", sa.String(200)))
        runs.add_column(sa.Column("replay_of", sa.Integer))
        runs.add_column(
            sa.Column("after_reset", sa.Boolean, nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("runs") as runs:
        runs.drop_column("after_reset")
        runs.drop_column("replay_of")
        runs.drop_column("actor")
