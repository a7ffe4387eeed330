"""API tokens: the SHA-256 of each token, its scope and name.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(200)),
        sa.Column("scope", sa.String(10), nullable=False),
        sa.Column("token_sha256", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ux_api_tokens_sha256", "api_tokens", ["token_sha256"], unique=True)


def downgrade() -> None:
    op.drop_index("ux_api_tokens_sha256", table_name="api_tokens")
    op.drop_table("api_tokens")
