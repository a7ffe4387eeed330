"""What a run produced: counts, timings, per-record failures and the status they imply."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum

from ebbtide.errors import ErrorClass
from ebbtide.ports import Operation


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


@dataclass(frozen=True)
class RecordFailure:
    """One record the destination did not accept, with what a person needs to fix it."""

    key: str
    operation: Operation
    error_class: ErrorClass
    message: str
    code: str | None = None
    http_status: int | None = None
    payload: str | None = None


@dataclass
class RunCounts:
    """Counts a run records (DESIGN invariant 8)."""

    extracted: int = 0
    added: int = 0
    updated: int = 0
    deleted: int = 0
    skipped: int = 0
    loaded_new: int = 0
    loaded_updated: int = 0
    loaded_deleted: int = 0
    failed: int = 0
    failed_by_class: Counter[str] = field(default_factory=Counter)
    retried: int = 0  # records of this run that had failed in an earlier run

    @property
    def loaded(self) -> int:
        return self.loaded_new + self.loaded_updated + self.loaded_deleted

    def count_loaded(self, operation: Operation, n: int) -> None:
        if operation is Operation.ADDED:
            self.loaded_new += n
        elif operation is Operation.UPDATED:
            self.loaded_updated += n
        else:
            self.loaded_deleted += n

    def count_failed(self, error_class: ErrorClass, n: int) -> None:
        self.failed += n
        self.failed_by_class[error_class.value] += n


@dataclass
class PhaseTimings:
    extract_s: float = 0.0
    diff_s: float = 0.0
    load_s: float = 0.0
    commit_s: float = 0.0


def status_of(counts: RunCounts, fatal: bool) -> RunStatus:
    """success: nothing failed; partial_success: some loaded, some failed; failed otherwise."""
    if fatal or (counts.failed and not counts.loaded):
        return RunStatus.FAILED
    if counts.failed:
        return RunStatus.PARTIAL_SUCCESS
    return RunStatus.SUCCESS
