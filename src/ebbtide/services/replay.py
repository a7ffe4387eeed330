"""Replay: resend the records of a past run, as they were sent or with the model's latest data."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from ebbtide.engine.run import Replay, RunListener
from ebbtide.errors import ConflictError
from ebbtide.ports import OUTCOME_COLUMN
from ebbtide.services.sync import SyncService, sent_as
from ebbtide.snapshots.sent_journal import (
    journal_path,
    journal_state,
    prune,
    read_sent,
    sent_identity,
)
from ebbtide.values import RunRecord, Trigger


@dataclass(frozen=True)
class ReplayPlan:
    """What a replay would resend, for the person who confirms it."""

    run: RunRecord
    records: pa.Table  # the journal rows to resend
    latest: bool
    only_failed: bool

    @property
    def count(self) -> int:
        return self.records.num_rows

    @property
    def failed(self) -> int:
        """How many of the records failed in the run: what replaying only those would send."""
        return self.records.num_rows - self.records.column(OUTCOME_COLUMN).null_count

    def explain(self) -> str:
        which = "the records that failed" if self.only_failed else "every record"
        how = (
            "with the model's current data for those keys (keys no longer in the model are skipped)"
            if self.latest
            else "exactly as they were sent"
        )
        return (
            f"Replay run {self.run.id} of mapping {self.run.mapping!r}: resend {which} of that"
            f" run ({self.count:,}) {how}. The replay is a run of its own in the history."
        )


class ReplayService:
    """Plans and performs replays of one workspace's past runs."""

    def __init__(self, sync: SyncService) -> None:
        self.sync = sync

    def plan(self, run_id: int, *, latest: bool = False, only_failed: bool = False) -> ReplayPlan:
        """The records a replay would resend; refuses with a plain reason when it cannot."""
        run = self.sync.state.get_run(run_id)
        self.sync.workspace.mapping(run.mapping)  # the mapping must still exist
        self._fetch_sent(run)
        state = journal_state(self.sync.workspace.state_dir, run.mapping, run.id)
        if not state.exists:
            raise ConflictError(self._why_no_journal(run, partial=state.partial))
        self._check_sent_as(run, sent_identity(state.path))
        records = read_sent(state.path, only_failed=only_failed)
        if only_failed and not records.num_rows:
            raise ConflictError(f"run {run.id} has no failed records to replay")
        return ReplayPlan(run, records, latest, only_failed)

    def replay(
        self, plan: ReplayPlan, *, actor: str | None = None, listener: RunListener | None = None
    ) -> RunRecord:
        """Resend the plan's records as a run of their own (trigger `replay`)."""
        records = plan.records.drop_columns([OUTCOME_COLUMN])
        return self.sync.run(
            plan.run.mapping,
            Trigger.REPLAY,
            listener,
            actor=actor,
            replay=(plan.run.id, Replay(records, plan.latest)),
        )

    def _check_sent_as(self, run: RunRecord, sent: dict[str, str]) -> None:
        """Records sent under another key, model or destination cannot be replayed."""
        now = sent_as(self.sync.compile(run.mapping))
        changed = [k for k in now if sent.get(k, now[k]) != now[k]]
        if changed:
            what = ", ".join(f"{k.replace('_', ' ')} {sent[k]!r} (now {now[k]!r})" for k in changed)
            raise ConflictError(
                f"run {run.id} sent its records with {what}: they cannot be replayed to the"
                f" mapping as it is now. `ebbtide reset {run.mapping}` resends the whole model."
            )

    def _fetch_sent(self, run: RunRecord) -> None:
        """A run of another machine: its sent journal comes from the shared store."""
        shared = self.sync.shared_snapshots(run.mapping)
        path = journal_path(self.sync.workspace.state_dir, run.mapping, run.id)
        if shared is not None and not path.exists():
            shared.get_sent(run.id, path)

    def prune(self, keep_days: float) -> tuple[int, int]:
        """Delete journals older than `keep_days`; returns (files, bytes) removed (the bytes
        of this machine's files; those in a shared store, `snapshots:`, are counted as files)."""
        files, removed = prune(self.sync.workspace.state_dir, keep_days)
        for name in self.sync.workspace.spec.mappings:
            shared = self.sync.shared_snapshots(name)
            if shared is not None:
                files += shared.prune_sent(keep_days)
        return files, removed

    def _why_no_journal(self, run: RunRecord, *, partial: bool) -> str:
        if run.trigger == Trigger.RESET:
            return f"run {run.id} is a reset: it sent nothing, so there is nothing to replay"
        if partial:
            return (
                f"the journal of run {run.id} is incomplete: the run stopped before it finished"
                " writing it, so its records cannot be replayed exactly. Use a normal sync,"
                f" or `ebbtide reset {run.mapping}` to resend the whole model."
            )
        if not (run.loaded_new + run.loaded_updated + run.loaded_deleted + run.failed):
            return f"run {run.id} sent no records: there is nothing to replay"
        keep = self.sync.workspace.spec.journals.keep_days
        return (
            f"the journal of run {run.id} was pruned (journals are kept {keep:g} days, setting"
            " `journals.keep_days`), so its records can no longer be replayed. `ebbtide reset"
            f" {run.mapping}` resends the whole model instead."
        )
