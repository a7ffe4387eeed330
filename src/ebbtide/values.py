"""Values that travel between the engine, the services and the stores that record them.

They sit below the engine so that the state store and the snapshot stores can name a run's
status, its counts and its failed records without importing the engine that produces them.
The rules about them (which status counts imply, when a record expires) stay in `engine/`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

# The statuses live in `ebbtide.enums` (the CLI offers them without importing this module);
# they are named here as they always were.
from ebbtide.enums import FailureStatus as FailureStatus
from ebbtide.enums import RunStatus as RunStatus
from ebbtide.enums import Trigger as Trigger
from ebbtide.errors import DestinationError, ErrorClass
from ebbtide.ports import Operation


@dataclass(frozen=True)
class CursorSettings:
    """A mapping's `change_detection: {cursor: …}`, as the snapshot store applies it."""

    column: str
    lookback: timedelta | float | None  # a duration for a time cursor, a number for a numeric
    full_diff_every: int  # syncs
    full_diff_interval: timedelta


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


@dataclass(frozen=True)
class PendingFailure:
    """A record that failed in an earlier sync and is still being retried."""

    key: str
    first_failed_at: datetime
    failed_syncs: int


@dataclass
class RetryOutcome:
    """Transitions to record once the run is committed."""

    retried: int = 0
    resolved: list[str] = field(default_factory=list)
    obsolete: list[str] = field(default_factory=list)
    expired: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class PastSize:
    """The largest size the destination had at the start of a recent run."""

    size: int
    run_id: int
    at: datetime

    def describe(self) -> str:
        return f"at the start of run {self.run_id} ({self.at:%Y-%m-%d %H:%M} UTC)"


@dataclass
class RunResult:
    """Everything the run found and did, whatever its status."""

    status: RunStatus = RunStatus.RUNNING
    counts: RunCounts = field(default_factory=RunCounts)
    timings: PhaseTimings = field(default_factory=PhaseTimings)
    error: str | None = None
    fatal: DestinationError | None = None
    retry: RetryOutcome | None = None
    # How the changes were found: "full" (every row's hash), "cursor", or "full" with why a
    # cursor mapping read everything ("full: every 24 syncs"); "" for a replay.
    detection: str = ""


@dataclass(frozen=True)
class RunRecord:
    """One run in the sync history, as the state store recorded it."""

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
    detection: str | None = None  # how the changes were found (RunResult.detection)

    @property
    def duration_s(self) -> float | None:
        if self.finished_at is None:
            return None
        return round((self.finished_at - self.started_at).total_seconds(), 3)


@dataclass(frozen=True)
class RunFilter:
    """Which runs a history listing keeps; `before` pages by run id (newest first)."""

    status: RunStatus | None = None
    trigger: str | None = None
    since: datetime | None = None  # started at or after
    until: datetime | None = None  # started before
    before: int | None = None  # run ids below this one: the next page after that run


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


@dataclass(frozen=True)
class FailedRecord:
    """A record of a mapping that failed, as `ebbtide records failed` lists it."""

    key: str
    status: FailureStatus
    operation: str
    first_failed_at: datetime
    last_failed_at: datetime
    failed_syncs: int
    last_run_id: int
    error_class: str
    code: str | None
    http_status: int | None
    message: str
    payload: str | None


@dataclass(frozen=True)
class DueSlot:
    """A mapping's row: the schedule its due time was computed from, and that time."""

    mapping: str
    schedule: str
    timezone: str
    due_at: datetime | None  # None: never due (manual)
    paused: bool
    version: int
    claimed_at: datetime | None = None
    claimed_by: str | None = None


@dataclass(frozen=True)
class RunProgress:
    """How far a running run has got, and whether someone asked it to stop."""

    run_id: int
    mapping: str
    phase: str
    done: int
    total: int | None
    updated_at: datetime
    cancel_requested_by: str | None = None
    cancel_requested_at: datetime | None = None
