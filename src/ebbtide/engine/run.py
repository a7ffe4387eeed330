"""One sync run: extract → check → diff → load → commit, timing each phase."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

import pyarrow as pa

from ebbtide.config.redact import Redactor
from ebbtide.engine.guards import Guards, GuardTripped
from ebbtide.engine.load import Loader, LoadSettings
from ebbtide.engine.outcome import status_of
from ebbtide.engine.retries import RetryPolicy, settle
from ebbtide.errors import DestinationError, ErrorClass
from ebbtide.mapping.compiler import CompiledMapping
from ebbtide.ports import (
    OUTCOME_COLUMN,
    ChangeCounts,
    Destination,
    Operation,
    SentLog,
    SnapshotStore,
    Source,
    is_key_part,
)
from ebbtide.values import (
    PastSize,
    PendingFailure,
    PhaseTimings,
    RecordFailure,
    RetryOutcome,
    RunCounts,
    RunResult,
)


class Phase(StrEnum):
    EXTRACT = "extract"
    DIFF = "diff"
    LOAD = "load"
    COMMIT = "commit"


class RunListener:
    """Hears about a run's progress; the CLI draws progress bars from it."""

    def phase(self, phase: Phase, total: int | None = None) -> None:
        """A phase starts; `total` is the number of records it will handle, when known."""

    def advance(self, records: int) -> None:
        """Records done in the current phase."""


@dataclass
class SyncJob:
    """The parts of one run, assembled by the sync service."""

    run_id: int
    mapping: CompiledMapping
    query: str
    source: Source
    snapshot: SnapshotStore
    destination: Destination
    load: LoadSettings
    record_failures: Callable[[list[RecordFailure]], None]
    redact: Redactor
    listener: RunListener = field(default_factory=RunListener)
    pending: dict[str, PendingFailure] = field(default_factory=dict)
    retry_policy: RetryPolicy = field(default_factory=RetryPolicy)
    fence: Callable[[], None] = lambda: None  # raises LeaseLostError once the lease is gone
    guards: Guards = field(default_factory=Guards)
    force: bool = False  # send even when a guard trips
    past_size: PastSize | None = None  # the largest size the destination had in recent runs
    record_size: Callable[[int], None] = lambda size: None  # its size as this run starts
    record_loaded: Callable[[RunCounts], None] = lambda counts: None  # before the commit
    replay: Replay | None = None  # resend a past run's records instead of a diff
    sent_log: SentLog | None = None  # where the records this run sends are kept for replays
    origin: str = ""  # the state store's name: with the run id, unique idempotency keys
    epoch: str = ""  # changes when a resend is intended (OutboundBatch.epoch)


@dataclass(frozen=True)
class Replay:
    """A past run's records (its sent journal), resent as sent or with the model's latest data."""

    records: pa.Table
    latest: bool

    def keys(self) -> pa.Table:
        """The keys replayed, as key parts (`__key_0`, …)."""
        return self.records.select([n for n in self.records.column_names if is_key_part(n)])

    def reader(self, batch_size: int) -> pa.RecordBatchReader:
        """The records exactly as they were sent."""
        records = self.records
        if OUTCOME_COLUMN in records.column_names:  # what happened to them is not resent
            records = records.drop_columns([OUTCOME_COLUMN])
        batches = records.to_batches(max_chunksize=batch_size)
        return pa.RecordBatchReader.from_batches(records.schema, batches)


def execute(job: SyncJob, result: RunResult) -> RunResult:
    """Run every phase; an exception leaves `result` with the counts reached so far."""
    timings = result.timings
    with _timed(timings, "extract_s"):
        job.listener.phase(Phase.EXTRACT)
        job.snapshot.merge_journals()  # what a crashed run had delivered
        size = job.snapshot.snapshot_size()
        job.record_size(size)
        include = job.replay.keys() if job.replay is not None else None
        result.counts.extracted = job.snapshot.extract(
            job.source, job.query, include, pending=list(job.pending)
        )
        job.source.close()  # its buffers are not needed past this point
        result.detection = "" if job.replay is not None else job.snapshot.detection
        job.snapshot.check_keys()
    with _timed(timings, "diff_s"):
        job.listener.phase(Phase.DIFF)
        changes = _changes(job, result.counts, size)
    failed_keys: dict[str, ErrorClass] = {}
    with _timed(timings, "load_s"):
        to_send = sum(changes.of(op) for op in _sent_ops(job))
        job.listener.phase(Phase.LOAD, to_send)
        job.snapshot.release()  # a run stalled mid-load must not lock out the next one
        if to_send:
            result.fatal = _load(job, result.counts, failed_keys)
    with _timed(timings, "commit_s"):
        job.listener.phase(Phase.COMMIT)
        job.record_loaded(result.counts)
        # A replay's read is no diff: a cursor it read says nothing of the rows it left out.
        complete = result.fatal is None and job.replay is None
        result.retry = _commit(job, failed_keys, complete=complete)
        result.counts.retried = result.retry.retried
    stopped = result.fatal
    result.status = status_of(
        result.counts, fatal=stopped is not None and stopped.error_class.fatal
    )
    if stopped is not None:
        why = (
            ""
            if stopped.error_class.fatal
            else "stopped after batches in a row failed every retry: "
        )
        result.error = f"{why}{stopped} — {stopped.error_class.recommended_action}"
    return result


def _sent_ops(job: SyncJob) -> frozenset[Operation]:
    """A replay resends every record it replays; a sync sends what its mode sends."""
    return frozenset(Operation) if job.replay is not None else job.mapping.operations_sent


def _changes(job: SyncJob, counts: RunCounts, size: int) -> ChangeCounts:
    """What this run sends: the diff (stopped by a guard that trips), or a replay's records."""
    if job.replay is not None:
        changes, skipped = job.snapshot.replay(job.replay.records, latest=job.replay.latest)
        _count_changes(counts, changes, frozenset(Operation))
        counts.skipped = skipped  # keys no longer in the model
        return changes
    changes = job.snapshot.diff()
    _count_changes(counts, changes, job.mapping.operations_sent)
    tripped = job.guards.tripped(changes, size, job.mapping.operations_sent, job.past_size)
    if tripped and not job.force:
        raise GuardTripped(
            f"guard {tripped}; nothing was sent. Check the model; if the change is meant,"
            " run the sync again with --force (once), or raise the limit under `guards:` in"
            " ebbtide.yml (max_delete_pct: 100 turns the delete share off)."
        )
    return changes


def _commit(job: SyncJob, failed_keys: dict[str, ErrorClass], *, complete: bool) -> RetryOutcome:
    """Settle failed records, then advance the snapshot in one transaction. `complete`: every
    change was offered to the destination (none left unsent by a stop)."""
    sent = _sent_ops(job)
    files = job.snapshot.collect_accepted(unsent=frozenset(Operation) - sent)
    fates = job.snapshot.pending_fates(list(job.pending), sent)
    outcome = settle(job.pending, fates, failed_keys, job.retry_policy, datetime.now(UTC))
    job.snapshot.give_up(outcome.expired)
    job.fence()
    job.snapshot.apply_accepted(files, complete=complete)
    return outcome


def _load(
    job: SyncJob, counts: RunCounts, failed_keys: dict[str, ErrorClass]
) -> DestinationError | None:
    journal = job.snapshot.open_journal(job.run_id)

    def record_failures(failures: list[RecordFailure]) -> None:
        failed_keys.update((f.key, f.error_class) for f in failures)
        job.record_failures(failures)

    loader = Loader(
        mapping=job.mapping,
        run_id=job.run_id,
        destination=job.destination,
        journal=journal,
        settings=job.load,
        counts=counts,
        on_failures=record_failures,
        redact=job.redact,
        on_progress=job.listener.advance,
        sent=job.sent_log,
        origin=job.origin,
        epoch=job.epoch,
    )
    try:
        if job.replay is not None and not job.replay.latest:
            reader = job.replay.reader(job.load.batch_size)
        else:
            reader = job.snapshot.outbound(_sent_ops(job), job.load.batch_size)
        asyncio.run(loader.run(reader))
    finally:
        journal.close()
        if job.sent_log is not None:
            job.sent_log.close()
    return loader.fatal


def _count_changes(counts: RunCounts, changes: ChangeCounts, sent: frozenset[Operation]) -> None:
    counts.added, counts.updated, counts.deleted = changes.added, changes.updated, changes.deleted
    counts.skipped = sum(changes.of(op) for op in Operation if op not in sent)


@contextmanager
def _timed(timings: PhaseTimings, attribute: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        setattr(timings, attribute, round(time.perf_counter() - started, 4))
