"""Alerts per incident: the error groups each mapping's open incident has announced.

A run whose error groups were all announced already is not news, whatever its status, so a
record that keeps failing is not announced at every flip between partial success and failure.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("alert_states") as states:
        states.add_column(sa.Column("announced", sa.JSON))


def downgrade() -> None:
    with op.batch_alter_table("alert_states") as states:
        states.drop_column("announced")
