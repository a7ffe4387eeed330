"""The words users see as choices: statuses, triggers, channels, scopes and roles.

They live apart from the values, the workspace's pydantic models and the state store's books
that use them, so that the CLI can offer them as options without importing any of those (and
pyarrow, pydantic, SQLAlchemy or argon2 behind them). Their old homes re-export them:
`ebbtide.values.RunStatus` is `ebbtide.enums.RunStatus`. This module imports only `enum`.
"""

from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    """A run's status; the values are the words users see."""

    RUNNING = "running"
    SUCCESS = "success"
    PARTIAL_SUCCESS = "partial_success"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    CANCELLED = "cancelled"


class Trigger(StrEnum):
    """What started a run; a reset is recorded in the history as a run of its own."""

    MANUAL = "manual"
    SCHEDULE = "schedule"
    REPLAY = "replay"
    RESET = "reset"


class FailureStatus(StrEnum):
    """Where a failed record stands; the values are the words users see."""

    PENDING = "pending"  # retried by every sync until it loads or expires
    EXPIRED = "expired"  # given up: not retried until the row changes again
    RESOLVED = "resolved"  # loaded later, or the destination already has its value
    OBSOLETE = "obsolete"  # the row left the model before it could be retried
    RESET = "reset"  # closed by a reset of the mapping


class AlertStatus(StrEnum):
    """What a person can hear about: a sync that failed, one that partly failed, and the first
    success after a failure."""

    FAILED = "failed"
    PARTIAL_SUCCESS = "partial_success"
    RECOVERED = "recovered"


class Channel(StrEnum):
    EMAIL = "email"
    SLACK = "slack"
    IN_APP = "in_app"
    WEBHOOK = "webhook"


class TokenScope(StrEnum):
    READ = "read"  # GET only
    WRITE = "write"  # GET, and the POSTs that change something (sync now, pause, resume)


class Role(StrEnum):
    ADMIN = "admin"  # everything, and manages users
    EDITOR = "editor"  # sync now, reset, replay, pause, alerts
    VIEWER = "viewer"  # reads

    def may(self, needed: Role) -> bool:
        """Whether this role can do what `needed` can."""
        return _RANK[self] >= _RANK[needed]


_RANK = {Role.VIEWER: 0, Role.EDITOR: 1, Role.ADMIN: 2}
