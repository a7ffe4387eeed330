"""Runs, per-record failures and leases.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("mapping", sa.String(200), nullable=False),
        sa.Column("trigger", sa.String(20), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("finished_at", TS),
        sa.Column("heartbeat_at", TS),
        *[sa.Column(name, sa.Float) for name in ("extract_s", "diff_s", "load_s", "commit_s")],
        *[
            sa.Column(name, sa.BigInteger, nullable=False, server_default="0")
            for name in (
                "extracted",
                "added",
                "updated",
                "deleted",
                "skipped",
                "loaded_new",
                "loaded_updated",
                "loaded_deleted",
                "failed",
            )
        ],
        sa.Column("failed_by_class", sa.JSON, nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("host", sa.String(200)),
        sa.Column("pid", sa.Integer),
    )
    op.create_index("ix_runs_mapping_id", "runs", ["mapping", "id"])
    op.create_index("ix_runs_status", "runs", ["status"])
    op.create_table(
        "run_failures",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "run_id", sa.Integer, sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("record_key", sa.Text, nullable=False),
        sa.Column("operation", sa.String(10), nullable=False),
        sa.Column("error_class", sa.String(30), nullable=False),
        sa.Column("code", sa.String(100)),
        sa.Column("http_status", sa.Integer),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("payload", sa.Text),
    )
    op.create_index("ix_run_failures_run", "run_failures", ["run_id", "error_class"])
    op.create_table(
        "leases",
        sa.Column("mapping", sa.String(200), primary_key=True),
        sa.Column("run_id", sa.Integer),
        sa.Column("token", sa.String(64), nullable=False),
        sa.Column("expires_at", TS, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("leases")
    op.drop_table("run_failures")
    op.drop_table("runs")
