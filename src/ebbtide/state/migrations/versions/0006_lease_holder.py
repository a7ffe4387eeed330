"""Who holds each lease: host, pid and what tells that process apart from a later one.

A run that died on this machine is then taken over at once instead of when its lease runs
out; a lease held elsewhere still has to expire, and the busy message names its holder.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("leases") as leases:
        leases.add_column(sa.Column("host", sa.String(200)))
        leases.add_column(sa.Column("pid", sa.Integer))
        leases.add_column(sa.Column("boot_id", sa.String(64)))
        leases.add_column(sa.Column("pid_ns", sa.String(64)))
        leases.add_column(sa.Column("process_start", sa.BigInteger))


def downgrade() -> None:
    with op.batch_alter_table("leases") as leases:
        for column in ("process_start", "pid_ns", "boot_id", "pid", "host"):
            leases.drop_column(column)
