"""Values the state store hands back: runs as the history shows them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ebbtide.values import RunStatus


@dataclass(frozen=True)
class RunRecord:
    """One run in the sync history."""

    id: int
    mapping: str
    trigger: str
    status: RunStatus
    started_at: datetime
    finished_at: datetime | None = None
    extract_s: float | None = None
    diff_s: float | None = None
    load_s: float | None = None
    commit_s: float | None = None
    extracted: int = 0
    added: int = 0
    updated: int = 0
    deleted: int = 0
    skipped: int = 0
    loaded_new: int = 0
    loaded_updated: int = 0
    loaded_deleted: int = 0
    failed: int = 0
    failed_by_class: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    retried: int = 0
    actor: str | None = None
    replay_of: int | None = None
    after_reset: bool = False
    snapshot_size: int | None = None  # records the destination had when the run started
    forced: bool = False

    @property
    def duration_s(self) -> float | None:
        if self.finished_at is None:
            return None
        return round((self.finished_at - self.started_at).total_seconds(), 3)

    def to_json(self) -> dict[str, Any]:
        """The stable `--json` shape of a run."""
        return {
            "id": self.id,
            "mapping": self.mapping,
            "status": str(self.status),
            "trigger": self.trigger,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "duration_s": self.duration_s,
            "extracted": self.extracted,
            "added": self.added,
            "updated": self.updated,
            "deleted": self.deleted,
            "skipped": self.skipped,
            "loaded_new": self.loaded_new,
            "loaded_updated": self.loaded_updated,
            "loaded_deleted": self.loaded_deleted,
            "failed": self.failed,
            "failed_by_class": dict(self.failed_by_class),
            "retried": self.retried,
            "phases_s": {
                "extract": self.extract_s,
                "diff": self.diff_s,
                "load": self.load_s,
                "commit": self.commit_s,
            },
            "error": self.error,
            "actor": self.actor,
            "replay_of": self.replay_of,
            "after_reset": self.after_reset,
            "snapshot_size": self.snapshot_size,
            "forced": self.forced,
        }


@dataclass(frozen=True)
class Lease:
    """A run's claim on its mapping; `token` fences writes of a run that lost it."""

    mapping: str
    token: str
    run_id: int


@dataclass(frozen=True)
class FailureGroup:
    """Failures of one run that share an error class and message."""

    error_class: str
    message: str
    count: int
    sample_keys: list[str]
    sample_payloads: list[str] = field(default_factory=list)
