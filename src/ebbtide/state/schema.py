"""Tables of the state store. Every change here comes with an Alembic migration."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on every backend."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the state store")
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        stored: datetime = value
        return stored.replace(tzinfo=UTC) if stored.tzinfo is None else stored.astimezone(UTC)


metadata = sa.MetaData()

runs = sa.Table(
    "runs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("mapping", sa.String(200), nullable=False),
    sa.Column("trigger", sa.String(20), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("started_at", UTCDateTime, nullable=False),
    sa.Column("finished_at", UTCDateTime),
    sa.Column("heartbeat_at", UTCDateTime),
    sa.Column("extract_s", sa.Float),
    sa.Column("diff_s", sa.Float),
    sa.Column("load_s", sa.Float),
    sa.Column("commit_s", sa.Float),
    sa.Column("extracted", sa.BigInteger, nullable=False, default=0),
    sa.Column("added", sa.BigInteger, nullable=False, default=0),
    sa.Column("updated", sa.BigInteger, nullable=False, default=0),
    sa.Column("deleted", sa.BigInteger, nullable=False, default=0),
    sa.Column("skipped", sa.BigInteger, nullable=False, default=0),
    sa.Column("loaded_new", sa.BigInteger, nullable=False, default=0),
    sa.Column("loaded_updated", sa.BigInteger, nullable=False, default=0),
    sa.Column("loaded_deleted", sa.BigInteger, nullable=False, default=0),
    sa.Column("failed", sa.BigInteger, nullable=False, default=0),
    sa.Column("failed_by_class", sa.JSON, nullable=False, default=dict),
    sa.Column("error", sa.Text),
    sa.Column("retried", sa.BigInteger, nullable=False, default=0),
    sa.Column("actor", sa.String(200)),  # who started it: a person's login, or the scheduler
    sa.Column("replay_of", sa.Integer),  # the run a replay resends
    sa.Column("after_reset", sa.Boolean, nullable=False, default=False),
    # Records the destination had when the run started (after absorbing a crashed run's
    # acknowledgements): the delete guard's memory of how large the destination was.
    sa.Column("snapshot_size", sa.BigInteger),
    sa.Column("forced", sa.Boolean, nullable=False, default=False),  # `--force`: re-bases it
    # How the run found its changes: "full", "cursor", or "full: <why>" (change_detection).
    sa.Column("detection", sa.String(200)),
    sa.Column("host", sa.String(200)),
    sa.Column("pid", sa.Integer),
    sa.Index("ix_runs_mapping_id", "mapping", "id"),
    sa.Index("ix_runs_status", "status"),
    # A mapping's history filtered by status or trigger, newest first (runs list, the API).
    sa.Index("ix_runs_mapping_status_id", "mapping", "status", "id"),
    sa.Index("ix_runs_mapping_trigger_id", "mapping", "trigger", "id"),
)

run_failures = sa.Table(
    "run_failures",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    sa.Column("record_key", sa.Text, nullable=False),
    sa.Column("operation", sa.String(10), nullable=False),
    sa.Column("error_class", sa.String(30), nullable=False),
    sa.Column("code", sa.String(100)),
    sa.Column("http_status", sa.Integer),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("payload", sa.Text),
    sa.Index("ix_run_failures_run", "run_id", "error_class"),
)

leases = sa.Table(
    "leases",
    metadata,
    sa.Column("mapping", sa.String(200), primary_key=True),
    sa.Column("run_id", sa.Integer),
    sa.Column("token", sa.String(64), nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False),
    # The holder (state/holder.py): a dead one on this machine is taken over at once.
    sa.Column("host", sa.String(200)),
    sa.Column("pid", sa.Integer),
    sa.Column("boot_id", sa.String(64)),
    sa.Column("pid_ns", sa.String(64)),
    sa.Column("process_start", sa.BigInteger),
)

pending_failures = sa.Table(
    "pending_failures",
    metadata,
    sa.Column("mapping", sa.String(200), primary_key=True),
    sa.Column("record_key", sa.Text, primary_key=True),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("operation", sa.String(10), nullable=False),
    sa.Column("first_failed_at", UTCDateTime, nullable=False),
    sa.Column("last_failed_at", UTCDateTime, nullable=False),
    sa.Column("failed_syncs", sa.Integer, nullable=False),
    sa.Column("last_run_id", sa.Integer, nullable=False),
    sa.Column("error_class", sa.String(30), nullable=False),
    sa.Column("code", sa.String(100)),
    sa.Column("http_status", sa.Integer),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("payload", sa.Text),
    sa.Column("closed_at", UTCDateTime),
    sa.Index("ix_pending_failures_status", "mapping", "status"),
)

# -- alerts ---------------------------------------------------------------------------------

subscriptions = sa.Table(
    "subscriptions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("email", sa.String(320)),  # an address or alias; null: a Slack subscription
    sa.Column("statuses", sa.JSON, nullable=False),
    sa.Column("mappings", sa.JSON),  # null: every mapping
    sa.Column("channels", sa.JSON, nullable=False),  # email, in_app, slack
    sa.Column("created_at", UTCDateTime, nullable=False),
    # A secret (its path is the token): never listed, logged or rendered back.
    sa.Column("slack_webhook_url", sa.String(2000)),
    sa.Column("slack_channel", sa.String(200)),
    sa.Column("owner", sa.String(320)),  # who made it in the web UI; null: the CLI or the API
    sa.Index("ix_subscriptions_email", "email"),
)

notifications = sa.Table(
    "notifications",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("email", sa.String(320), nullable=False),
    sa.Column("run_id", sa.Integer),
    sa.Column("mapping", sa.String(200), nullable=False),
    sa.Column("event", sa.String(20), nullable=False),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("read_at", UTCDateTime),
    sa.Index("ix_notifications_email", "email", "read_at"),
)

alert_deliveries = sa.Table(
    "alert_deliveries",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.Integer),  # null for `alerts test`
    sa.Column("mapping", sa.String(200), nullable=False),
    sa.Column("event", sa.String(20), nullable=False),
    sa.Column("channel", sa.String(20), nullable=False),
    sa.Column("target", sa.Text, nullable=False),  # secrets masked
    sa.Column("delivered", sa.Boolean, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("error", sa.Text),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Index("ix_alert_deliveries_created", "created_at"),
)

# Per mapping: whether it is failing, since when, and when people were last told.
alert_states = sa.Table(
    "alert_states",
    metadata,
    sa.Column("mapping", sa.String(200), primary_key=True),
    sa.Column("failing", sa.Boolean, nullable=False),
    sa.Column("status", sa.String(20)),  # failed or partial_success, while failing
    sa.Column("since", UTCDateTime, nullable=False),
    sa.Column("last_alert_at", UTCDateTime),
    # Fingerprints of the error groups the open incident announced (JSON list).
    sa.Column("announced", sa.JSON),
)

# One row: the store's own name, part of every idempotency key its runs send.
store_identity = sa.Table(
    "store_identity", metadata, sa.Column("name", sa.String(32), primary_key=True)
)

# -- which diff keeps each mapping's snapshot (state/snapshot_modes.py) ------------------------

# `local` or `warehouse`: switching a mapping between them is refused until it is reset, since
# the other diff's snapshot knows nothing of what the destination has.
snapshot_modes = sa.Table(
    "snapshot_modes",
    metadata,
    sa.Column("mapping", sa.String(200), primary_key=True),
    sa.Column("mode", sa.String(20), nullable=False),
    sa.Column("since", UTCDateTime, nullable=False),
)

# -- snapshots in a shared store (state/snapshot_versions.py) ----------------------------------

# Per mapping whose snapshot is kept in an object store or shared folder: the version every
# worker fetches. Advanced with compare-and-set on `generation`, in one transaction with a check
# of the publishing run's lease, so a run that lost its lease never makes its upload current.
snapshot_versions = sa.Table(
    "snapshot_versions",
    metadata,
    sa.Column("mapping", sa.String(200), primary_key=True),
    sa.Column("version", sa.String(100)),  # null: empty (never published, or reset)
    # Acknowledgement journals of runs up to this id are in the version (or void).
    sa.Column("through_run", sa.Integer, nullable=False),
    sa.Column("generation", sa.Integer, nullable=False),
    sa.Column("run_id", sa.Integer),  # the run (or reset) that published it
    sa.Column("published_at", UTCDateTime, nullable=False),
)

# -- the scheduler (state/schedules.py) --------------------------------------------------------

# Per mapping: when its schedule next comes due. Schedulers sharing the store claim a due slot
# with compare-and-set on (due_at, version), so each slot starts once whoever sees it.
schedules = sa.Table(
    "schedules",
    metadata,
    sa.Column("mapping", sa.String(200), primary_key=True),
    # What due_at was computed from: a changed schedule or time zone is computed afresh.
    sa.Column("schedule", sa.String(200), nullable=False),
    sa.Column("timezone", sa.String(100), nullable=False),
    sa.Column("due_at", UTCDateTime),  # null: never due (manual)
    sa.Column("paused", sa.Boolean, nullable=False, default=False),
    sa.Column("version", sa.Integer, nullable=False, default=0),  # bumped by every change
    sa.Column("claimed_at", UTCDateTime),
    sa.Column("claimed_by", sa.String(200)),
)

# "Sync now": at most one request waits per mapping; a second one is merged into it.
sync_requests = sa.Table(
    "sync_requests",
    metadata,
    sa.Column("mapping", sa.String(200), primary_key=True),
    sa.Column("requested_at", UTCDateTime, nullable=False),
    sa.Column("requested_by", sa.String(200)),
)

# A replay asked for through the API, waiting for a scheduler to run it (oldest first).
replay_requests = sa.Table(
    "replay_requests",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("mapping", sa.String(200), nullable=False),
    sa.Column("run_id", sa.Integer, nullable=False),  # the run to replay
    sa.Column("latest", sa.Boolean, nullable=False),
    sa.Column("only_failed", sa.Boolean, nullable=False),
    sa.Column("requested_at", UTCDateTime, nullable=False),
    sa.Column("requested_by", sa.String(200)),
)

# -- runs in flight (state/progress.py) --------------------------------------------------------

# Per running run: its phase and records done, written by the run a few times a second at
# most, and a cancel request it reads back on the same write.
run_progress = sa.Table(
    "run_progress",
    metadata,
    sa.Column("run_id", sa.Integer, primary_key=True),
    sa.Column("mapping", sa.String(200), nullable=False),
    sa.Column("phase", sa.String(20), nullable=False),
    sa.Column("done", sa.BigInteger, nullable=False),
    sa.Column("total", sa.BigInteger),  # null: not known in this phase
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("cancel_requested_at", UTCDateTime),
    sa.Column("cancel_requested_by", sa.String(200)),
)

# -- what people did (state/actions.py) --------------------------------------------------------

# Every action taken on a mapping or run (sync now, pause, reset, replay, cancel, …), with who.
actions = sa.Table(
    "actions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("actor", sa.String(200)),
    sa.Column("action", sa.String(50), nullable=False),
    sa.Column("mapping", sa.String(200)),
    sa.Column("run_id", sa.Integer),
    sa.Column("detail", sa.Text),
    sa.Index("ix_actions_mapping_id", "mapping", "id"),
)

# -- the REST API (state/tokens.py) ------------------------------------------------------------

# API tokens: only the SHA-256 of each is kept; the token itself is printed once, when created.
api_tokens = sa.Table(
    "api_tokens",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(200)),
    sa.Column("scope", sa.String(10), nullable=False),  # read or write
    sa.Column("token_sha256", sa.String(64), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("revoked_at", UTCDateTime),  # a revoked token is refused, and kept for the record
    sa.Index("ux_api_tokens_sha256", "token_sha256", unique=True),
)

# -- the web UI (state/users.py) ---------------------------------------------------------------

# People who log in to the web UI: an argon2 hash of the password, never the password.
users = sa.Table(
    "ui_users",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("email", sa.String(320), nullable=False),  # stored lower-cased
    sa.Column("role", sa.String(10), nullable=False),  # admin, editor or viewer
    sa.Column("password_hash", sa.String(200), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("disabled_at", UTCDateTime),  # a disabled user cannot log in, and is kept
    # Failed logins in a row; past the limit the account is locked until `locked_until`.
    sa.Column("failed_logins", sa.Integer, nullable=False, server_default="0"),
    sa.Column("locked_until", UTCDateTime),
    # Bumped by a password, role or disabled change: sessions signed before it are refused.
    sa.Column("session_epoch", sa.Integer, nullable=False, server_default="0"),
    sa.Index("ux_ui_users_email", "email", unique=True),
)

# Keys the serve processes of one state store share, generated once: the session cookie's
# signing key, so that a session started on one machine is valid on all of them.
server_keys = sa.Table(
    "server_keys",
    metadata,
    sa.Column("name", sa.String(50), primary_key=True),
    sa.Column("value", sa.String(200), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
)
