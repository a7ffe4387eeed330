"""The protocols between the engine and its adapters. Nothing here imports a driver."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar, runtime_checkable

from ebbtide.config.models import (
    DeclaredField,
    DestinationConfig,
    FieldType,
    SourceConfig,
    SyncMode,
)
from ebbtide.errors import ErrorClass

if TYPE_CHECKING:  # `ebbtide.values` names `Operation` from here: typing only, no cycle at run
    # Named in annotations only: a command that reads the history needs no Arrow.
    import pyarrow as pa

    from ebbtide.values import (
        DueSlot,
        FailedRecord,
        FailureGroup,
        FailureStatus,
        Lease,
        PastSize,
        PendingFailure,
        RecordFailure,
        RetryOutcome,
        RunCounts,
        RunFilter,
        RunProgress,
        RunRecord,
        RunResult,
        RunStatus,
    )


class Operation(StrEnum):
    """What happened to a record since the last sync."""

    ADDED = "added"
    UPDATED = "updated"
    DELETED = "deleted"


# Column names the engine puts next to the mapped fields in every outbound batch.
OP_COLUMN = "__op"
KEY_COLUMN = "__key"
HASH_COLUMN = "__hash"
RECORD_COLUMN = "__record"
KEY_PART_PREFIX = "__k"


def is_key_part(name: str) -> bool:
    """`__k0`, `__k1`, …: the key's columns in journals (not `__key`, the key's JSON text)."""
    return name.startswith(KEY_PART_PREFIX) and name[len(KEY_PART_PREFIX) :].isdigit()


# Why a row's values cannot become its payload (NaN, text that is not a number, …); null if
# they can. Such a row fails alone with error class `mapping` and is never sent.
PROBLEM_COLUMN = "__problem"
# Why a row is too large to become a record at all (its values were not rendered); null if
# it is not. Such a row fails alone with error class `payload_too_large` and is never sent.
TOO_LARGE_COLUMN = "__too_large"
# In a run's sent journal: null for a record the destination accepted, else its error class.
OUTCOME_COLUMN = "__outcome"


@dataclass(frozen=True)
class ChangeCounts:
    """What the diff found."""

    added: int = 0
    updated: int = 0
    deleted: int = 0

    def of(self, operation: Operation) -> int:
        return int(getattr(self, operation.value))

    @property
    def total(self) -> int:
        return self.added + self.updated + self.deleted


class Source(Protocol):
    """A warehouse connection that streams a query's rows as Arrow record batches."""

    def read(self, query: str) -> pa.RecordBatchReader:
        """Stream the rows of `query`; batches are bounded so memory stays flat."""
        ...

    def close(self) -> None:
        """Release the connection."""
        ...


@runtime_checkable
class DuckDBFileSource(Protocol):
    """A source whose models live in a DuckDB file: the local diff can hash them where they
    lie, with the file attached read-only, instead of streaming every row out first."""

    def duckdb_file(self) -> Path:
        """The warehouse file."""
        ...

    def close(self) -> None:
        """Let go of the file (a later `read` opens it again). The diff in place closes the
        source before it attaches the file: a process's locks on a file all end when any one
        of its handles on it closes, so two handles would leave the attached file unguarded."""
        ...


class ColumnKind(StrEnum):
    """What a warehouse column holds, as far as rendering it as canonical text goes."""

    INTEGER = "integer"
    DECIMAL = "decimal"
    FLOAT = "float"
    BOOLEAN = "boolean"
    TEXT = "text"
    BINARY = "binary"
    DATE = "date"
    TIMESTAMP = "timestamp"  # wall-clock, no zone
    TIMESTAMPTZ = "timestamptz"  # an instant
    JSON = "json"
    OTHER = "other"


class WarehouseSession(Protocol):
    """A connection on which the diff runs inside the warehouse (`diff: warehouse`).

    Unlike a Source's, it may write: temporary tables, and ebbtide's own schema.
    """

    dialect: str  # the name of its SQL dialect (snapshots.warehouse_sql)
    where: str  # the warehouse, for messages (no password)
    state_schema: str  # ebbtide's own schema in it

    def describe(self, query: str) -> list[tuple[str, ColumnKind]]:
        """The columns of `query`, without running it."""
        ...

    def execute(self, statement: str) -> list[tuple[object, ...]]:
        """Run one statement; the rows it returns, if any."""
        ...

    def read(self, query: str) -> pa.RecordBatchReader:
        """Stream a query's rows, typed exactly as the source reads them."""
        ...

    def insert(self, table: str, rows: pa.Table) -> None:
        """Append rows to a (temporary) table whose columns match theirs by name."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class FieldSpec:
    """A field a destination action accepts.

    For an object, `properties` lists the properties it accepts; for an array of objects,
    those of each item. None means any property goes.
    """

    name: str
    type: FieldType = FieldType.ANY
    required: bool = False
    properties: tuple[FieldSpec, ...] | None = None

    @classmethod
    def declared(cls, field: DeclaredField) -> FieldSpec:
        """A field as a destination's options declare it (a webhook's `fields:`)."""
        properties = field.properties
        return cls(
            field.name,
            field.type,
            field.required,
            None if properties is None else tuple(cls.declared(p) for p in properties),
        )

    def property_named(self, name: str) -> FieldSpec | None:
        """The declared property `name`; a field without a fixed list takes any name."""
        if self.properties is None:
            return FieldSpec(name)
        return next((p for p in self.properties if p.name == name), None)


@dataclass(frozen=True)
class ActionSpec:
    """Something a destination can do with a record; `fields` None accepts any field."""

    name: str
    description: str
    fields: tuple[FieldSpec, ...] | None = None
    modes: frozenset[SyncMode] = frozenset(SyncMode)
    # Whether the destination reads one typed column per field (a table writer) or only the
    # JSON record; without them, outbound batches carry half the bytes.
    field_columns: bool = True


@dataclass(frozen=True)
class OutboundBatch:
    """Records on their way to a destination, as one Arrow record batch.

    Columns: `__op`, `__key` (the key as JSON), `__record` (the whole record as JSON:
    op, key and data), `__hash`, `__k0…` (key parts) and one column per mapped field.
    """

    run_id: int
    number: int
    mapping: str
    action: str
    mode: SyncMode
    records: pa.RecordBatch
    part: str = ""  # ".1", ".2.1", … for halves of a batch split to find a bad record
    origin: str = ""  # the state store's name: run ids repeat from one store to another
    # Changes when a resend is intended and must not be deduplicated by the destination: a
    # replay ("replay-<run>") or the syncs after a reset ("reset-<reset run>"). Destinations
    # that derive message ids from a record's version (Segment's messageId) mix it in, so a
    # crash's resend dedupes and an intended resend does not.
    epoch: str = ""

    @property
    def idempotency_key(self) -> str:
        origin = f"-{self.origin}" if self.origin else ""
        return f"{self.run_id}-{self.number}{self.part}{origin}"

    def halves(self) -> tuple[OutboundBatch, OutboundBatch]:
        middle = self.records.num_rows // 2
        first, second = self.records.slice(0, middle), self.records.slice(middle)
        return (
            dataclasses.replace(self, records=first, part=f"{self.part}.1"),
            dataclasses.replace(self, records=second, part=f"{self.part}.2"),
        )

    def with_records(self, records: pa.RecordBatch) -> OutboundBatch:
        return dataclasses.replace(self, records=records)

    def __len__(self) -> int:
        return self.records.num_rows


@dataclass(frozen=True)
class RecordRejection:
    """The destination refused one record of a batch that it otherwise accepted."""

    key: str
    error_class: ErrorClass
    message: str
    code: str | None = None
    http_status: int | None = None


@dataclass(frozen=True)
class BatchResult:
    """What the destination said of a batch: every record not rejected was accepted.

    Keys are JSON text. Every key named here, refused or explicitly `accepted`, must be the key
    of exactly one record of the batch: an answer naming any other key (in another form, twice,
    unknown) is not an acknowledgement, and no record of the batch counts as loaded.
    """

    rejected: tuple[RecordRejection, ...] = ()
    accepted: tuple[str, ...] = ()
    # The destination's rate-limit headers say its allowance is spent for this long: nothing
    # more is sent to it before then (the engine pauses the destination's limiter).
    pause_s: float | None = None


class Destination(Protocol):
    """Sends batches; batching, concurrency, retries and bookkeeping are the engine's.

    A whole-batch failure raises `DestinationError` with its error class.
    """

    async def open(self) -> None:
        """Connect (called once per run, before the first batch)."""
        ...

    async def send(self, batch: OutboundBatch) -> BatchResult:
        """Deliver one batch and say which of its records were rejected."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


@dataclass(frozen=True)
class PendingFate:
    """What this run did with a pending record, as the snapshot store saw it."""

    sent: bool  # among the changes this run had to send
    accepted: bool  # the destination accepted it in this run
    in_model: bool  # the model still has the row


class Journal(Protocol):
    """Durable record of the batches a destination accepted during one run."""

    # Whether an append may wait on the network (an object store, a warehouse): it then runs
    # off the event loop; a local append (microseconds) runs on it, sparing a thread handoff.
    remote: bool

    def append(self, records: pa.RecordBatch) -> None: ...

    def close(self) -> None: ...


class SentLog(Protocol):
    """Every record a run sent, with its outcome, kept so the run can be replayed."""

    def write(self, records: pa.RecordBatch, outcomes: Sequence[str | None]) -> None:
        """`outcomes`: None for an accepted record, else the error class it failed with."""
        ...

    def close(self) -> None: ...


class SnapshotStore(Protocol):
    """Per mapping: primary key → hash of the row as the destination last accepted it.

    It also runs the diff, since that belongs where the snapshot lives.
    """

    journal_dir: Path  # where acknowledged batches wait to be merged (a dead run's too)
    detection: str  # how extract() found the changes: "full", "cursor" or "full: <why>"

    def merge_journals(self, unsent: frozenset[Operation] = frozenset()) -> int:
        """Fold accepted records, and changes the mode does not send, into the snapshot."""
        ...

    def extract(
        self,
        source: Source,
        query: str,
        include: pa.Table | None = None,
        pending: Sequence[str] = (),
    ) -> int:
        """Read the model and stage it; returns how many rows it has. `include`: keys (as
        key parts) a replay resends, and `pending`: keys (as sent) of records that failed
        before, which the diff must stage even when unchanged."""
        ...

    def stage(self, rows: pa.RecordBatchReader) -> int:
        """Take in the model's rows and hash them; returns how many were extracted."""
        ...

    def check_keys(self) -> None:
        """Raise ModelError on null or duplicate primary keys."""
        ...

    def diff(self, *, dry_run: bool = False) -> ChangeCounts:
        """Compare the staged rows with the snapshot; a dry run persists nothing."""
        ...

    def replay(self, sent: pa.Table, *, latest: bool) -> tuple[ChangeCounts, int]:
        """A past run's records as this run's changes; returns them and the keys skipped."""
        ...

    def snapshot_size(self) -> int:
        """How many records the snapshot holds."""
        ...

    def outbound(self, operations: frozenset[Operation], batch_size: int) -> pa.RecordBatchReader:
        """The changed rows to send, as outbound record batches."""
        ...

    def sample_changes(
        self, operations: frozenset[Operation], limit: int
    ) -> list[dict[str, object]]:
        """A few records per operation as they would be sent."""
        ...

    def release(self) -> None:
        """Let go of the snapshot while records are in flight (reopened to commit)."""
        ...

    def collect_accepted(self, unsent: frozenset[Operation] = frozenset()) -> list[Path]:
        """Gather accepted records and unsent changes; returns the journals gathered."""
        ...

    def pending_fates(
        self, keys: list[str], operations_sent: frozenset[Operation]
    ) -> dict[str, PendingFate]:
        """For records that failed before: sent now, accepted now, still in the model."""
        ...

    def give_up(self, keys: list[str]) -> None:
        """Advance the snapshot for expired records so they stop being retried."""
        ...

    def apply_accepted(self, files: list[Path], *, complete: bool = False) -> int:
        """Commit what was gathered into the snapshot, then drop the journals. `complete`:
        the run offered the destination every change (a cursor it read may be kept)."""
        ...

    def open_journal(self, run_id: int) -> Journal:
        """Where this run appends what the destination accepted."""
        ...

    def close(self) -> None:
        """Release files; scratch data is dropped."""
        ...


@dataclass(frozen=True)
class SnapshotPointer:
    """The current version of a mapping's snapshot in a shared store (object store, folder).

    `through_run`: the acknowledgement journals of runs up to this id are in the version (or
    void); those of later runs are still to be applied. Generation 0: never published.
    """

    mapping: str
    version: str | None  # None: empty (never published, or reset)
    through_run: int
    generation: int


class SnapshotPointerBook(Protocol):
    """Where the current shared snapshot version of each mapping is kept (the state store)."""

    def current(self, mapping: str) -> SnapshotPointer:
        """The version every worker fetches."""
        ...

    def advance(
        self, lease: Lease, seen: SnapshotPointer, version: str | None, through_run: int
    ) -> SnapshotPointer:
        """Compare-and-set from `seen`, only while `lease` holds; LeaseLostError otherwise."""
        ...


class FailureBook(Protocol):
    """Failed records across syncs, per mapping and key (DESIGN invariant 6)."""

    def pending(self, mapping: str) -> dict[str, PendingFailure]:
        """The mapping's records still being retried, by key."""
        ...

    def listed(
        self,
        mapping: str,
        statuses: Sequence[FailureStatus],
        limit: int,
        *,
        error_class: str | None = None,
        key_contains: str | None = None,
        keys: Sequence[str] | None = None,
    ) -> list[FailedRecord]:
        """The mapping's failed records in these statuses, oldest failure first; only these
        key texts, or keys containing a text, when asked."""
        ...

    def settle(self, mapping: str, run_id: int, outcome: RetryOutcome, now: datetime) -> None:
        """Record what a run did to the failed records (retried, resolved, expired, …)."""
        ...

    def close_all(self, mapping: str, status: FailureStatus, now: datetime) -> int:
        """Close every open failed record of the mapping with `status` (a reset)."""
        ...


class Ledger(Protocol):
    """Counts a run writes before it finishes, so a killed run still shows them."""

    def record_size(self, run_id: int, size: int) -> None:
        """How many records the destination had when the run started."""
        ...

    def largest_recent(
        self, mapping: str, window: timedelta, before_run: int | None = None
    ) -> PastSize | None:
        """The delete guard's reference: the largest size recorded within `window`."""
        ...

    def record_loaded(self, run_id: int, counts: RunCounts) -> None:
        """A run's loaded counts before its commit."""
        ...

    def record_acknowledged(self, acknowledged: dict[int, ChangeCounts]) -> None:
        """Credit dead runs with what their journals show the destination accepted."""
        ...


class ProgressBoard(Protocol):
    """Where a running run says how far it is, and hears that someone asked it to stop."""

    def report(
        self, run_id: int, mapping: str, phase: str, done: int, total: int | None, now: datetime
    ) -> bool:
        """Record the run's phase and records done; True when a cancel was requested."""
        ...

    def get(self, run_id: int) -> RunProgress | None:
        """Where the run is, if it has reported."""
        ...

    def cancelled_by(self, run_id: int) -> str | None:
        """Who asked the run to stop."""
        ...

    def forget(self, run_id: int) -> None:
        """The run ended."""
        ...


class ScheduleSlots(Protocol):
    """What the scheduler keeps per mapping: its next due time, and whether it is paused."""

    def slot(self, mapping: str) -> DueSlot | None: ...


class StateStore(Protocol):
    """Runtime state: runs and their leases, failed records, counts (SQLite or PostgreSQL).

    What services use; `ebbtide.state.store.SqlStateStore` is the implementation.
    """

    @property
    def name(self) -> str:
        """The store's own name, drawn when it was created (part of idempotency keys)."""
        ...

    @property
    def pending_failures(self) -> FailureBook: ...

    @property
    def ledger(self) -> Ledger: ...

    @property
    def progress(self) -> ProgressBoard: ...

    @property
    def schedules(self) -> ScheduleSlots: ...

    def start_run(
        self,
        mapping: str,
        trigger: str,
        lease_ttl_s: float,
        *,
        actor: str | None = None,
        replay_of: int | None = None,
        forced: bool = False,
    ) -> tuple[RunRecord, Lease]:
        """Claim the mapping and record a running run, or raise MappingBusyError."""
        ...

    def heartbeat(self, lease: Lease, lease_ttl_s: float) -> None:
        """Extend the lease; raise LeaseLostError if another run took it over."""
        ...

    def check_lease(self, lease: Lease) -> None:
        """Raise LeaseLostError unless the run still holds its mapping."""
        ...

    def finish_run(self, lease: Lease, status: RunStatus, result: RunResult) -> RunRecord:
        """Record the run's outcome and release its mapping."""
        ...

    def add_failures(self, run_id: int, failures: Sequence[RecordFailure]) -> None:
        """Record records that failed in the run."""
        ...

    def get_run(self, run_id: int) -> RunRecord:
        """One run, or raise UsageError if there is no such run."""
        ...

    def list_runs(
        self, mapping: str | None = None, limit: int = 50, *, where: RunFilter | None = None
    ) -> list[RunRecord]:
        """Runs, newest first, that pass `where`."""
        ...

    def failures(
        self,
        run_id: int,
        limit: int = 100,
        *,
        error_class: str | None = None,
        key_contains: str | None = None,
    ) -> list[RecordFailure]:
        """Records that failed in one run, of one error class, whose key contains a text."""
        ...

    def key_failures(self, mapping: str, keys: Sequence[str]) -> dict[int, RecordFailure]:
        """Per run of the mapping, how a record with one of these key texts failed in it."""
        ...

    def failure_groups(self, run_id: int, samples: int = 5) -> list[FailureGroup]:
        """A run's failures grouped by error class and message, largest group first."""
        ...


@dataclass(frozen=True)
class AdapterContext:
    """What an adapter may need from the workspace: where relative paths start."""

    root: Path


SourceConfigT = TypeVar("SourceConfigT", bound=SourceConfig)
DestinationConfigT = TypeVar("DestinationConfigT", bound=DestinationConfig)


@dataclass(frozen=True)
class SourcePlugin(Generic[SourceConfigT]):
    """A source type: its options and how to connect."""

    config: type[SourceConfigT]
    connect: Callable[[SourceConfigT, AdapterContext], Source]
    # `diff: warehouse`: a connection the diff runs on, inside the warehouse.
    pushdown: Callable[[SourceConfigT, AdapterContext], WarehouseSession] | None = None


@dataclass(frozen=True)
class DestinationPlugin(Generic[DestinationConfigT]):
    """A destination type: its options, its actions and how to build a client."""

    config: type[DestinationConfigT]
    actions: dict[str, ActionSpec]
    build: Callable[[DestinationConfigT, AdapterContext], Destination]
    # Fields that depend on the destination's options (a webhook that declares what its
    # receiver accepts); by default an action accepts what `actions` says.
    describe: Callable[[DestinationConfigT, ActionSpec], ActionSpec] | None = None
    # `ebbtide validate --check-credentials`: one cheap authenticated call (an account-info
    # endpoint); returns what it found ("portal 62515"), raises DestinationError otherwise.
    check: Callable[[DestinationConfigT, AdapterContext], Awaitable[str]] | None = None

    def action(self, config: DestinationConfigT, name: str) -> ActionSpec:
        """Action `name` of the destination configured by `config`."""
        action = self.actions[name]
        return action if self.describe is None else self.describe(config, action)


def iter_batches(reader: pa.RecordBatchReader) -> Iterator[pa.RecordBatch]:
    """Batches of a reader, typed for mypy."""
    while True:
        try:
            yield reader.read_next_batch()
        except StopIteration:
            return
