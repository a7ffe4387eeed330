"""Reset: forget what a mapping's destination has, so its next sync sends the whole model."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from ebbtide.errors import (
    MappingBusyError,
    SnapshotDamagedError,
    SnapshotMismatchError,
    StorageError,
)
from ebbtide.services.sync import SyncService
from ebbtide.services.views import ResetPlanView
from ebbtide.snapshots.duckdb import drop_snapshot, journal_dir
from ebbtide.snapshots.journal import acknowledged
from ebbtide.snapshots.warehouse import drop_warehouse_snapshot
from ebbtide.state.store import utcnow
from ebbtide.values import FailureStatus, RunRecord, RunResult, RunStatus, Trigger


@dataclass(frozen=True)
class ResetPlan:
    """What a reset changes, for the person who confirms it."""

    mapping: str
    model: str
    destination: str
    model_rows: int  # what the next sync sends
    snapshot_records: int | None  # what ebbtide believes the destination has (None: damaged)
    pending_failures: int

    def explain(self) -> str:
        return (
            f"Reset mapping {self.mapping!r}: its next sync sends all {self.model_rows:,}"
            f" record(s) of model {self.model!r} to {self.destination!r}, as if it had never"
            f" synced. ebbtide forgets {self._believed()} {self.destination!r} has:"
            " a record removed from the model before the next sync"
            " can no longer be detected as deleted, so it stays in the destination."
            f" {self.pending_failures:,} failed record(s) pending retry are closed as `reset`"
            " (the next sync sends them with the rest)."
        )

    def _believed(self) -> str:
        if self.snapshot_records is None:
            return "what its damaged snapshot held of what"
        return f"the {self.snapshot_records:,} record(s) it believes"

    def view(self) -> ResetPlanView:
        return ResetPlanView(
            mapping=self.mapping,
            model=self.model,
            destination=self.destination,
            model_rows=self.model_rows,
            snapshot_records=self.snapshot_records,
            pending_failures=self.pending_failures,
            explanation=self.explain(),
        )


class ResetService:
    """Plans and performs resets of one workspace's mappings."""

    def __init__(self, sync: SyncService) -> None:
        self.sync = sync

    def plan(self, name: str) -> ResetPlan:
        """Counts for the confirmation; reads the model's row count, changes nothing."""
        mapping = self.sync.compile(name)
        held: int | None = None
        # What a reset is there to mend: a damaged snapshot, or one of the other diff.
        with contextlib.suppress(SnapshotDamagedError, SnapshotMismatchError):
            snapshot = self.sync.open_store(
                mapping, read_only=True, shared=self.sync.shared_snapshots(name)
            )
            try:
                held = snapshot.snapshot_size()
            finally:
                snapshot.close()
        return ResetPlan(
            mapping=name,
            model=mapping.model,
            destination=mapping.destination,
            model_rows=self.sync.count_model(mapping.model),
            snapshot_records=held,
            pending_failures=len(self.sync.state.pending_failures.pending(name)),
        )

    def _drop_warehouse_snapshot(self, name: str) -> None:
        modes = self.sync.snapshot_modes
        spec = self.sync.workspace.mapping(name)
        if "warehouse" in (modes.get(name), spec.diff):
            session = self.sync.pushdown(spec.model)
            try:
                drop_warehouse_snapshot(session, name)
            finally:
                session.close()
        modes.clear(name)

    def reset(self, name: str, actor: str | None = None) -> RunRecord:
        """Empty the snapshot and close pending failures; recorded as a run of its own.

        Refused while a sync of the mapping runs: the reset takes the mapping's lease like a
        run, so the two can never overlap.
        """
        self.sync.compile(name)
        state = self.sync.state
        try:
            _, lease = state.start_run(
                name, Trigger.RESET.value, self.sync.lease_ttl_s, actor=actor
            )
        except MappingBusyError as busy:
            raise MappingBusyError(
                f"cannot reset while the mapping is syncing ({busy}); nothing was changed."
                " Reset once the sync has finished."
            ) from None
        state_dir = self.sync.workspace.state_dir
        shared = self.sync.shared_snapshots(name)
        try:
            if shared is not None:  # dead runs' acknowledgements, published on any machine
                shared.fetch(snapshot=False)
            # A dead run's journal is dropped with the snapshot: credit it with what it
            # delivered (a damaged one tells nothing, and is dropped all the same).
            with contextlib.suppress(SnapshotDamagedError):
                state.ledger.record_acknowledged(acknowledged(journal_dir(state_dir, name)))
            drop_snapshot(state_dir, name)
            self._drop_warehouse_snapshot(name)
            if shared is not None:  # every machine now fetches an empty snapshot
                shared.clear(lease)
        except StorageError as error:
            failed = RunResult(status=RunStatus.FAILED, error=str(error))
            state.finish_run(lease, RunStatus.FAILED, failed)
            raise
        state.pending_failures.close_all(name, FailureStatus.RESET, utcnow())
        return state.finish_run(lease, RunStatus.SUCCESS, RunResult(status=RunStatus.SUCCESS))
