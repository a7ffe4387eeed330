"""How each run found its changes: every row's hash, or rows past a cursor.

Revision ID: 0017
Revises: 0016
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as runs:
        runs.add_column(sa.Column("detection", sa.String(200)))


def downgrade() -> None:
    with op.batch_alter_table("runs") as runs:
        runs.drop_column("detection")
