"""Reading the sync history: runs, why records failed, how each mapping is doing.

The one way the CLI and the API read the state store; both print what this returns.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from ebbtide.config.workspace import Workspace
from ebbtide.destinations import DESTINATIONS
from ebbtide.errors import ErrorClass, SnapshotDamagedError
from ebbtide.mapping.compiler import CompiledMapping, compile_mapping
from ebbtide.ports import Operation, StateStore
from ebbtide.services.advice import recommended_action
from ebbtide.services.views import (
    ErrorGroupView,
    FailedRecordView,
    Health,
    KeyHistoryView,
    KeyRunView,
    MappingView,
    ProgressView,
    RecordFailureView,
    RunDetailsView,
    RunView,
)
from ebbtide.snapshots import open_snapshot_store, shared_snapshots
from ebbtide.snapshots.key_history import sent_records
from ebbtide.snapshots.remote import SharedSnapshots
from ebbtide.snapshots.sent_journal import JOURNALS_DIR
from ebbtide.state.snapshot_versions import SnapshotVersions
from ebbtide.values import (
    FailedRecord,
    FailureStatus,
    RecordFailure,
    RunFilter,
    RunRecord,
    RunStatus,
)

# How many runs back a mapping's health looks for one that finished (the newest may be running).
_HEALTH_LOOKBACK = 20
DEFAULT_STATUSES = (FailureStatus.PENDING, FailureStatus.EXPIRED)


class History:
    """Read models of one workspace's runs and failed records."""

    def __init__(self, workspace: Workspace, state: StateStore) -> None:
        self.workspace = workspace
        self.state = state

    def runs(
        self, mapping: str | None = None, limit: int = 20, where: RunFilter | None = None
    ) -> list[RunView]:
        """Runs newest first, of one mapping or all, that pass `where` (status, trigger,
        time range; `before` a run id for the next page)."""
        if mapping is not None:
            self.workspace.mapping(mapping)  # an unknown name is a usage error, not no runs
        return [RunView.of(r) for r in self.state.list_runs(mapping, limit, where=where)]

    def run(self, run_id: int) -> RunView:
        return RunView.of(self.state.get_run(run_id))

    def run_details(self, run_id: int, failures: int = 100) -> RunDetailsView:
        """One run, its failures grouped by error, and its first failed records."""
        run = self.run(run_id)
        return RunDetailsView(
            **dict(run),
            failure_groups=self.error_groups(run_id),
            failures=self.run_failures(run_id, failures),
        )

    def error_groups(self, run_id: int) -> list[ErrorGroupView]:
        """A run's failed records grouped by error class and message, largest first."""
        mapping = self.state.get_run(run_id).mapping
        return [
            ErrorGroupView.of(g, self._advice(mapping, g.error_class, g.message))
            for g in self.state.failure_groups(run_id)
        ]

    def run_failures(
        self,
        run_id: int,
        limit: int = 1000,
        error_class: ErrorClass | None = None,
        key_contains: str | None = None,
    ) -> list[RecordFailureView]:
        """The records that failed in one run, each with its recommended action; of one
        error class, or whose key contains a text, when asked."""
        mapping = self.state.get_run(run_id).mapping
        found = self.state.failures(
            run_id,
            limit=limit,
            error_class=error_class.value if error_class else None,
            key_contains=key_contains,
        )
        return [
            RecordFailureView.of(f, self._advice(mapping, f.error_class, f.message)) for f in found
        ]

    def failed_records(
        self,
        mapping: str,
        statuses: Sequence[FailureStatus] = DEFAULT_STATUSES,
        limit: int = 1000,
        error_class: ErrorClass | None = None,
        key_contains: str | None = None,
    ) -> list[FailedRecordView]:
        """A mapping's records pending retry or given up, oldest failure first."""
        self.workspace.mapping(mapping)
        found = self.state.pending_failures.listed(
            mapping,
            list(statuses),
            limit,
            error_class=error_class.value if error_class else None,
            key_contains=key_contains,
        )
        return [
            FailedRecordView.of(r, self._advice(mapping, r.error_class, r.message)) for r in found
        ]

    def key_history(self, mapping: str, key: str) -> KeyHistoryView:
        """Every run that sent the record with this key (as written: `42`, `u1`, or JSON
        such as `["eu", 42]` for a composite key), newest first, with what became of it."""
        self.workspace.mapping(mapping)
        texts = key_texts(key)
        self._fetch_shared_journals(mapping)
        sent = sent_records(self.workspace.state_dir, mapping, texts)
        failed = self.state.key_failures(mapping, sorted(texts))
        runs = {r: self.state.get_run(r) for r in {s.run_id for s in sent} | set(failed)}
        entries = [
            _key_run(runs[s.run_id], s.operation, failed.get(s.run_id), s.outcome) for s in sent
        ]
        for run_id in sorted(set(failed) - {s.run_id for s in sent}, reverse=True):
            # Its journal was pruned, but the failure is still in the history.
            entries.append(_key_run(runs[run_id], failed[run_id].operation.value, failed[run_id]))
        entries.sort(key=lambda e: e.run_id, reverse=True)
        pending = self.state.pending_failures.listed(
            mapping, list(DEFAULT_STATUSES), 1, keys=sorted(texts)
        )
        return KeyHistoryView(
            mapping=mapping,
            key=json.loads(pending[0].key) if pending else _key_value(key),
            runs=entries,
            pending=FailedRecordView.of(
                pending[0], self._advice(mapping, pending[0].error_class, pending[0].message)
            )
            if pending
            else None,
            journals_kept_days=self.workspace.spec.journals.keep_days,
            in_destination=self._in_destination(mapping, key, texts, entries, pending),
        )

    def _in_destination(
        self,
        mapping: str,
        key: str,
        texts: set[str],
        entries: list[KeyRunView],
        pending: list[FailedRecord],
    ) -> bool | None:
        """Whether the destination holds the record now, from the snapshot: it holds what the
        destination accepted and was not deleted since. None when the snapshot cannot say."""
        if pending and pending[0].status is FailureStatus.EXPIRED:
            return None  # given up: the snapshot moved on without the destination
        from ebbtide.snapshots.duckdb import SnapshotBusyError  # DuckDB loads on first use

        compiled = self._compiled(mapping)
        wanted = texts | composite_key_texts(key, compiled.key_columns)
        try:
            store = open_snapshot_store(
                self.workspace.state_dir, compiled, read_only=True, shared=self._shared(mapping)
            )
        except (SnapshotDamagedError, SnapshotBusyError):
            return None
        try:
            held = store.holds(sorted(wanted))
        finally:
            store.close()
        if held is None:
            return None  # never synced, or reset since: the destination may hold anything
        if held:
            return True
        if Operation.DELETED in compiled.operations_sent:
            return False
        # This mode never deletes: a record the model dropped stays in the destination.
        loaded = any(e.outcome == "loaded" and e.operation != Operation.DELETED for e in entries)
        return True if loaded else None

    def _compiled(self, mapping: str) -> CompiledMapping:
        spec = self.workspace.mapping(mapping)
        destination = self.workspace.destinations[spec.destination]
        action = DESTINATIONS.get(destination.type).action(destination, spec.action)
        return compile_mapping(mapping, spec, self.workspace.model(spec.model), action)

    def _fetch_shared_journals(self, mapping: str) -> None:
        """With `snapshots:` set, runs of other machines sent records too: their journals
        come from the shared store."""
        shared = self._shared(mapping)
        if shared is not None:
            # A machine that never ran the mapping has no journals folder to fetch into yet.
            local = self.workspace.state_dir / JOURNALS_DIR / mapping
            local.mkdir(parents=True, exist_ok=True)
            shared.fetch_all_sent(local)

    def _shared(self, mapping: str) -> SharedSnapshots | None:
        spec = self.workspace.spec.snapshots
        engine = getattr(self.state, "engine", None)
        if spec is None or engine is None:
            return None
        return shared_snapshots(
            spec, self.workspace.root, self.workspace.state_dir, mapping, SnapshotVersions(engine)
        )

    def last_successes(self) -> dict[str, datetime | None]:
        """Per mapping, when its newest successful run finished (None: never)."""
        found: dict[str, datetime | None] = {}
        success = RunFilter(status=RunStatus.SUCCESS)
        for name in self.workspace.spec.mappings:
            runs = self.state.list_runs(name, 1, where=success)
            found[name] = runs[0].finished_at if runs else None
        return found

    def progress(self, run_id: int) -> ProgressView:
        """How far a run has got; a run that ended says so, with nothing more to come."""
        run = self.state.get_run(run_id)
        found = self.state.progress.get(run_id) if run.status is RunStatus.RUNNING else None
        return ProgressView(
            run_id=run.id,
            mapping=run.mapping,
            status=run.status,
            phase=found.phase if found else None,
            done=found.done if found else 0,
            total=found.total if found else None,
            updated_at=found.updated_at if found else None,
            cancel_requested_by=found.cancel_requested_by if found else None,
        )

    def mappings(self) -> list[MappingView]:
        """Every mapping of the workspace, with its last run and health."""
        return [self.mapping(name) for name in self.workspace.spec.mappings]

    def mapping(self, name: str) -> MappingView:
        spec = self.workspace.mapping(name)
        recent = self.state.list_runs(name, _HEALTH_LOOKBACK)
        slot = self.state.schedules.slot(name)
        paused = slot is not None and slot.paused
        scheduled = spec.enabled and not paused and slot is not None and slot.schedule != ""
        return MappingView(
            name=name,
            model=spec.model,
            destination=spec.destination,
            action=spec.action,
            mode=str(spec.mode),
            schedule=spec.schedule,
            enabled=spec.enabled,
            last_run=RunView.of(recent[0]) if recent else None,
            health=health_of(recent),
            paused=paused,
            next_due_at=slot.due_at if scheduled and slot is not None else None,
        )

    def _advice(self, mapping: str, error_class: str | ErrorClass, message: str) -> str:
        return recommended_action(self.workspace, mapping, ErrorClass(error_class), message)


def health_of(runs: Sequence[RunRecord]) -> Health:
    """From the newest finished run: a run still going says nothing yet."""
    finished = next((r for r in runs if r.status is not RunStatus.RUNNING), None)
    if finished is None:
        return Health.NEVER_RUN
    return Health.HEALTHY if finished.status is RunStatus.SUCCESS else Health.FAILING


def key_texts(key: str) -> set[str]:
    """The texts the history may hold a key as: the value written as given, a string of it,
    and a composite key written as JSON."""
    texts = {json.dumps(key, ensure_ascii=False)}
    try:
        value = json.loads(key)
    except ValueError:
        return texts
    texts.add(json.dumps(value, ensure_ascii=False, separators=(",", ":")))
    texts.add(json.dumps(value, ensure_ascii=False))
    return texts


def composite_key_texts(key: str, columns: Sequence[str]) -> set[str]:
    """A composite key written as a JSON list (`["eu", 42]`) as the snapshot writes it: an
    object of the key's columns in their declared order."""
    try:
        value = json.loads(key)
    except ValueError:
        return set()
    if not isinstance(value, list) or len(value) != len(columns) or len(columns) < 2:
        return set()
    named = dict(zip(columns, value, strict=True))
    return {json.dumps(named, ensure_ascii=False, separators=(",", ":"))}


def _key_value(key: str) -> Any:
    try:
        return json.loads(key)
    except ValueError:
        return key


def _key_run(
    run: RunRecord, operation: str, failure: RecordFailure | None, outcome: str | None = None
) -> KeyRunView:
    failed_as = failure.error_class.value if failure else outcome
    return KeyRunView(
        run_id=run.id,
        started_at=run.started_at,
        trigger=run.trigger,
        run_status=run.status,
        operation=operation,
        outcome="failed" if failed_as else "loaded",
        error_class=failed_as,
        code=failure.code if failure else None,
        message=failure.message if failure else None,
        payload=failure.payload if failure else None,
    )
