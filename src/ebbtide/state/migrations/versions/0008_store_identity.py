"""A name of its own for each state store, drawn once when the store is created.

Run ids count from 1 in every store, so `<run id>-<batch>` alone repeats across workspaces
syncing to one destination, and after a state store is deleted; a destination that drops a
repeated idempotency key would then drop new data. The store's name makes the key unique.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    identity = op.create_table("store_identity", sa.Column("name", sa.String(32), primary_key=True))
    op.bulk_insert(identity, [{"name": uuid.uuid4().hex[:12]}])


def downgrade() -> None:
    op.drop_table("store_identity")
