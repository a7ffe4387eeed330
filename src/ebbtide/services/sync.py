"""Running and planning syncs: leases, adapters and history around the engine."""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pyarrow as pa

from ebbtide.config.models import DestinationConfig, ModelSpec
from ebbtide.config.redact import basic_credentials
from ebbtide.config.workspace import Workspace
from ebbtide.destinations import DESTINATIONS
from ebbtide.engine.guards import Guards
from ebbtide.engine.load import LoadSettings
from ebbtide.engine.masking import masked_record
from ebbtide.engine.rate_limit import limiter_for
from ebbtide.engine.retries import RetryPolicy
from ebbtide.engine.run import Replay, RunListener, SyncJob, execute
from ebbtide.errors import (
    ConfigError,
    EbbtideError,
    LeaseLostError,
    MappingError,
    ModelError,
    SnapshotDamagedError,
    SnapshotMismatchError,
    SourceError,
    StorageError,
)
from ebbtide.mapping.binding import BoundMapping, bind
from ebbtide.mapping.compiler import CompiledMapping, compile_mapping
from ebbtide.ports import (
    AdapterContext,
    Destination,
    Operation,
    SentLog,
    SnapshotStore,
    Source,
    StateStore,
    WarehouseSession,
)
from ebbtide.services.alerts import AlertService
from ebbtide.services.lease import LeaseKeeper
from ebbtide.services.progress import CancelRequested, ProgressReporter
from ebbtide.snapshots import open_snapshot_store, shared_snapshots
from ebbtide.snapshots.failures import storage_failure, was_interrupted
from ebbtide.snapshots.journal import acknowledged
from ebbtide.snapshots.remote import SharedSnapshots
from ebbtide.snapshots.sent_journal import SentJournal, journal_path, prune
from ebbtide.sources import SOURCES
from ebbtide.state.snapshot_modes import SnapshotModes
from ebbtide.state.snapshot_versions import SnapshotVersions
from ebbtide.state.store import SqlStateStore, utcnow
from ebbtide.values import (
    Lease,
    RecordFailure,
    RetryOutcome,
    RunFilter,
    RunRecord,
    RunResult,
    RunStatus,
    Trigger,
)

if TYPE_CHECKING:
    from ebbtide.services.views import SyncPlanView

log = logging.getLogger(__name__)

# How long a run's claim on its mapping lasts without a heartbeat; a run that dies is taken over
# after this. EBBTIDE_LEASE_TTL_S shortens it for tests of crashes.
LEASE_TTL_S = float(os.environ.get("EBBTIDE_LEASE_TTL_S", "60"))


@dataclass(frozen=True)
class SyncPlan:
    """What the next sync of a mapping would send; nothing sent, nothing committed."""

    mapping: str
    mode: str
    extracted: int
    added: int
    updated: int
    deleted: int
    operations_sent: list[str]
    samples: list[dict[str, object]] = field(default_factory=list)
    guard: str | None = None  # the guard the sync would trip, if any

    def view(self) -> SyncPlanView:
        from ebbtide.services.views import SyncPlanView  # pydantic views: only when shown

        return SyncPlanView(
            mapping=self.mapping,
            mode=self.mode,
            extracted=self.extracted,
            added=self.added,
            updated=self.updated,
            deleted=self.deleted,
            would_send=self.would_send,
            operations_sent=self.operations_sent,
            samples=self.samples,
            guard_tripped=self.guard,
        )

    @property
    def would_send(self) -> int:
        sent = set(self.operations_sent)
        return sum(
            n
            for op, n in (
                ("added", self.added),
                ("updated", self.updated),
                ("deleted", self.deleted),
            )
            if op in sent
        )


def sent_as(mapping: CompiledMapping) -> dict[str, str]:
    """What a run's records are sent as; a replay of them needs the same."""
    return {
        "primary_key": ",".join(mapping.key_columns),
        "model": mapping.model,
        "destination": mapping.destination,
    }


@dataclass(frozen=True)
class RunOptions:
    listener: RunListener
    force: bool = False  # send even when a guard trips
    replay: Replay | None = None


class SyncService:
    """Runs mappings of one workspace against its state store."""

    def __init__(self, workspace: Workspace, state: SqlStateStore | None = None) -> None:
        self.workspace = workspace
        store = state or SqlStateStore(workspace.spec.state, workspace.root)
        self.state: StateStore = store
        self.lease_ttl_s = LEASE_TTL_S
        # Which version of each mapping's snapshot is current, when `snapshots:` shares them.
        self.snapshot_versions = SnapshotVersions(store.engine)
        self.snapshot_modes = SnapshotModes(store.engine)
        self.alerts = AlertService(workspace, store)  # the alert book is SQL-only for now

    def compile(self, name: str) -> CompiledMapping:
        spec = self.workspace.mapping(name)
        destination = self.workspace.destinations[spec.destination]
        action = DESTINATIONS.get(destination.type).action(destination, spec.action)
        return compile_mapping(name, spec, self.workspace.model(spec.model), action)

    def run(
        self,
        name: str,
        trigger: Trigger = Trigger.MANUAL,
        listener: RunListener | None = None,
        *,
        force: bool = False,
        actor: str | None = None,
        replay: tuple[int, Replay] | None = None,
    ) -> RunRecord:
        """Sync one mapping now and return its run as recorded in the history.

        `replay` (a past run's id and its records) resends those records instead of a diff.
        People subscribed to alerts hear about it once the run is committed.
        """
        record, storage_error = self._run(
            name, trigger, listener, force=force, actor=actor, replay=replay
        )
        self.alerts.after_run(record)
        if storage_error is not None:
            # Recorded as a failed run like any other; the caller still hears that the
            # machine, not the sync, is at fault (its own exit code).
            raise storage_error
        return record

    def _run(
        self,
        name: str,
        trigger: Trigger,
        listener: RunListener | None,
        *,
        force: bool,
        actor: str | None,
        replay: tuple[int, Replay] | None,
    ) -> tuple[RunRecord, EbbtideError | None]:
        mapping = self.compile(name)
        prune(self.workspace.state_dir, self.workspace.spec.journals.keep_days)
        _, lease = self.state.start_run(
            name,
            trigger.value,
            self.lease_ttl_s,
            actor=actor,
            replay_of=replay[0] if replay else None,
            forced=force,
        )
        result = RunResult()
        reporter = ProgressReporter(
            self.state.progress, lease.run_id, name, listener or RunListener()
        )
        job = RunOptions(reporter, force, replay[1] if replay else None)
        storage_error: EbbtideError | None = None
        try:
            with LeaseKeeper(self.state, lease, self.lease_ttl_s) as keeper:
                self._execute(mapping, keeper, result, job)
            status = result.status
        except LeaseLostError as error:
            # Fenced: the run that took the lease over owns the mapping and its history now.
            log.warning("%s", error)
            return self.state.get_run(lease.run_id), None
        except (StorageError, SnapshotDamagedError) as error:
            storage_error = error
        except EbbtideError as error:
            result.error = self.workspace.redact(str(error))
            status = RunStatus.FAILED
        except CancelRequested:
            self._cancelled(lease, result, by=self.state.progress.cancelled_by(lease.run_id))
            raise
        except KeyboardInterrupt:
            self._cancelled(lease, result)
            raise
        except Exception as error:  # noqa: BLE001 - a bug must still end the run in the history
            if was_interrupted(error):  # a signal that reached DuckDB mid-query
                self._cancelled(lease, result)
                raise KeyboardInterrupt from error
            storage_error = storage_failure(error, self.workspace.state_dir, name)
            if storage_error is None:
                result.error = self.workspace.redact(
                    f"internal error: {type(error).__name__}: {error}"
                )
                self._finish(lease, RunStatus.FAILED, result)
                raise
        if storage_error is not None:
            result.error = self.workspace.redact(str(storage_error))
            return self._finish(lease, RunStatus.FAILED, result), storage_error
        return self._finish(lease, status, result), None

    def _cancelled(self, lease: Lease, result: RunResult, by: str | None = None) -> None:
        who = f" by {by}" if by else ""
        result.error = f"cancelled{who}; the next sync sends what this one did not deliver"
        self._finish(lease, RunStatus.CANCELLED, result)

    def _finish(self, lease: Lease, status: RunStatus, result: RunResult) -> RunRecord:
        try:
            self.state.check_lease(lease)
            outcome = result.retry or RetryOutcome()
            self.state.pending_failures.settle(lease.mapping, lease.run_id, outcome, utcnow())
            return self.state.finish_run(lease, status, result)
        except LeaseLostError as error:
            log.warning("%s", error)
            return self.state.get_run(lease.run_id)
        finally:
            self.state.progress.forget(lease.run_id)

    def _execute(
        self,
        mapping: CompiledMapping,
        keeper: LeaseKeeper,
        result: RunResult,
        options: RunOptions,
    ) -> None:
        lease = keeper.lease
        source = self._source(mapping.model)
        limit = self.workspace.destinations[mapping.destination].max_record_bytes
        shared = self.shared_snapshots(mapping.name)
        try:  # with `snapshots:` set, the current version is fetched here (under the lease)
            snapshot = self.open_store(mapping, max_record_bytes=limit, shared=shared, lease=lease)
        except BaseException:
            source.close()
            raise
        spec = self.workspace.mapping(mapping.name)
        guards = Guards.for_mapping(spec.guards, spec.mode)
        ledger = self.state.ledger
        try:
            # Credited before the journals are merged (which deletes them): what each dead
            # run delivered becomes its loaded counts in the history.
            ledger.record_acknowledged(acknowledged(snapshot.journal_dir))
            config = self.workspace.destinations[mapping.destination]
            job = SyncJob(
                run_id=lease.run_id,
                mapping=mapping,
                query=self.workspace.model_query(mapping.model),
                source=source,
                snapshot=snapshot,
                destination=self._destination(mapping.destination),
                load=_load_settings(
                    f"{self.workspace.root}#{mapping.destination}", config, keeper.may_send
                ),
                record_failures=lambda failures: self._record_failures(lease.run_id, failures),
                # The client turns a URL's password into a Basic header, which servers echo.
                redact=self.workspace.redact.with_values(
                    basic_credentials(str(getattr(config, "url", "")))
                ),
                listener=options.listener,
                pending=self.state.pending_failures.pending(mapping.name),
                retry_policy=RetryPolicy(spec.retry.max_days, spec.retry.max_syncs),
                fence=lambda: self.state.check_lease(lease),
                guards=guards,
                force=options.force,
                past_size=ledger.largest_recent(mapping.name, guards.delete_window, lease.run_id),
                record_size=lambda size: ledger.record_size(lease.run_id, size),
                record_loaded=lambda counts: ledger.record_loaded(lease.run_id, counts),
                replay=options.replay,
                origin=self.state.name,
                epoch=self._epoch(mapping.name, lease.run_id, options.replay is not None),
                sent_log=self._sent_log(mapping, lease.run_id, shared),
            )
            execute(job, result)
        finally:
            snapshot.close()
            source.close()

    def open_store(
        self,
        mapping: CompiledMapping,
        *,
        read_only: bool = False,
        max_record_bytes: int | None = None,
        shared: SharedSnapshots | None = None,
        lease: Lease | None = None,
    ) -> SnapshotStore:
        """The mapping's snapshot store, where its `diff:` says; refused when the snapshot
        belongs to the other diff (until a reset)."""
        diff = self.workspace.mapping(mapping.name).diff
        self._check_diff(mapping.name, diff, shared, record=not read_only)
        warehouse = self.pushdown(mapping.model) if diff == "warehouse" else None
        try:
            return open_snapshot_store(
                self.workspace.state_dir,
                mapping,
                read_only=read_only,
                max_record_bytes=max_record_bytes,
                shared=None if warehouse else shared,
                lease=lease,
                warehouse=warehouse,
            )
        except BaseException:
            if warehouse is not None:
                warehouse.close()
            raise

    def pushdown(self, model: str) -> WarehouseSession:
        """A session on the model's warehouse for the diff to run in (`diff: warehouse`)."""
        name = self.workspace.model(model).source
        config = self.workspace.sources[name]
        plugin = SOURCES.get(config.type)
        if plugin.pushdown is None:
            raise ConfigError(
                f"model {model!r} reads from source {name!r} ({config.type}), where the diff"
                " cannot run: `diff: warehouse` needs a postgres or mysql source. Use"
                " `diff: local` (the default) for this mapping."
            )
        return plugin.pushdown(config, AdapterContext(self.workspace.root))

    def _check_diff(
        self, name: str, diff: str, shared: SharedSnapshots | None, *, record: bool
    ) -> None:
        recorded = self.snapshot_modes.get(name)
        if recorded is None and diff == "warehouse" and self._has_local_snapshot(name, shared):
            recorded = "local"  # synced before ebbtide recorded the diff
        if recorded is not None and recorded != diff:
            raise SnapshotMismatchError(
                f"mapping {name!r} is now `diff: {diff}`, but its snapshot (what the"
                f" destination has) is kept by the {recorded} diff, which the {diff} diff"
                " cannot read. Nothing was sent. Switching needs a reset: run"
                f" `ebbtide reset {name}` (its next sync sends the whole model), or set"
                f" `diff: {recorded}` back."
            )
        if record:
            self.snapshot_modes.record(name, diff)

    def _has_local_snapshot(self, name: str, shared: SharedSnapshots | None) -> bool:
        if (self.workspace.state_dir / "snapshots" / f"{name}.duckdb").exists():
            return True
        return shared is not None and self.snapshot_versions.current(name).version is not None

    def _epoch(self, name: str, run_id: int, replay: bool) -> str:
        """What sets an intended resend apart from a crash's: a replay, or the last reset."""
        if replay:
            return f"replay-{run_id}"
        where = RunFilter(trigger=Trigger.RESET.value, before=run_id)
        resets = self.state.list_runs(name, 1, where=where)
        return f"reset-{resets[0].id}" if resets else ""

    def shared_snapshots(self, name: str) -> SharedSnapshots | None:
        """Where the mapping's snapshot and journals are shared between workers (the
        workspace's `snapshots:` setting); None: only in `.ebbtide/`, the default."""
        return shared_snapshots(
            self.workspace.spec.snapshots,
            self.workspace.root,
            self.workspace.state_dir,
            name,
            self.snapshot_versions,
            self.workspace.spec.journals.keep_days,
        )

    def _sent_log(
        self, mapping: CompiledMapping, run_id: int, shared: SharedSnapshots | None
    ) -> SentLog:
        path = journal_path(self.workspace.state_dir, mapping.name, run_id)
        sent = SentJournal(path, sent_as(mapping))
        if shared is None:
            return sent
        from ebbtide.snapshots.shared import MirroredSentLog

        return MirroredSentLog(sent, path, shared, run_id)

    def check(self, name: str) -> BoundMapping:
        """Compile a mapping and bind it to its model's columns, reading no rows: what
        `validate` catches before a sync would (paths, types, conversions)."""
        mapping = self.compile(name)
        source = self._source(mapping.model)  # an unreachable source is no workspace error
        query = self.workspace.model_query(mapping.model).strip().rstrip(";")
        schema: pa.Schema | None = None
        try:
            schema = source.read(f"SELECT * FROM (\n{query}\n) AS ebbtide_model LIMIT 0").schema
            bound = bind(mapping, schema)
            if self.workspace.mapping(name).diff == "warehouse":
                self._check_pushdown(name, mapping.model)
            return bound
        except MappingError as error:
            raise self.workspace.located(error, name) from None
        except (ModelError, SourceError) as error:
            # The model's SQL fails, or lacks the primary key: its definition is at fault.
            at = _model_key_at_fault(self.workspace.model(mapping.model), mapping, schema)
            raise self.workspace.located_model(str(error), mapping.model, at) from None
        finally:
            source.close()

    def _check_pushdown(self, name: str, model: str) -> None:
        """`diff: warehouse`: the source can run it, with the grants it needs."""
        from ebbtide.snapshots.warehouse import check_grants

        at = ("mappings", name, "diff")
        try:
            session = self.pushdown(model)
            try:
                check_grants(session)
            finally:
                session.close()
        except (ConfigError, SourceError) as error:
            message = error.message if isinstance(error, ConfigError) else str(error)
            raise ConfigError(
                message,
                file=str(self.workspace.file),
                line=self.workspace.line_of(at),
                path=".".join(at),
            ) from None

    def count_model(self, model: str) -> int:
        """How many rows the model has now (the source counts them)."""
        rows = self._read_over(model, "SELECT count(*) AS n FROM {model}").column("n").to_pylist()
        return int(rows[0] or 0) if rows else 0

    def _read_over(self, model: str, template: str) -> pa.Table:
        """`template` run on the source with `{model}` standing for the model's query."""
        query = self.workspace.model_query(model).strip().rstrip(";")
        source = self._source(model)
        try:
            return source.read(template.format(model=f"(\n{query}\n) AS ebbtide_model")).read_all()
        finally:
            source.close()

    def plan(self, name: str, samples: int = 3) -> SyncPlan:
        """Stage and diff without sending or committing anything."""
        mapping = self.compile(name)
        source = self._source(mapping.model)
        snapshot = self.open_store(mapping, read_only=True, shared=self.shared_snapshots(name))
        try:
            extracted = snapshot.extract(source, self.workspace.model_query(mapping.model))
            snapshot.check_keys()
            changes = snapshot.diff(dry_run=True)
            spec = self.workspace.mapping(name)
            guards = Guards.for_mapping(spec.guards, spec.mode)
            past = self.state.ledger.largest_recent(name, guards.delete_window)
            tripped = guards.tripped(
                changes, snapshot.snapshot_size(), mapping.operations_sent, past
            )
            sample = snapshot.sample_changes(frozenset(Operation), samples)
        finally:
            snapshot.close()
            source.close()
        return SyncPlan(
            mapping=name,
            mode=str(mapping.mode),
            extracted=extracted,
            added=changes.added,
            updated=changes.updated,
            deleted=changes.deleted,
            operations_sent=sorted(op.value for op in mapping.operations_sent),
            # Shown and printed: sensitive fields and secrets masked, like a failure's payload.
            samples=[masked_record(r, mapping.sensitive, self.workspace.redact) for r in sample],
            guard=tripped,
        )

    def _source(self, model: str) -> Source:
        name = self.workspace.model(model).source
        config = self.workspace.sources[name]
        plugin = SOURCES.get(config.type)
        source: Source = plugin.connect(config, AdapterContext(self.workspace.root))
        return source

    def _destination(self, name: str) -> Destination:
        config = self.workspace.destinations[name]
        plugin = DESTINATIONS.get(config.type)
        destination: Destination = plugin.build(config, AdapterContext(self.workspace.root))
        return destination

    def _record_failures(self, run_id: int, failures: list[RecordFailure]) -> None:
        self.state.add_failures(run_id, failures)


def _model_key_at_fault(spec: ModelSpec, mapping: CompiledMapping, schema: pa.Schema | None) -> str:
    """`primary_key` when the model's columns lack it, else where its query is written."""
    if schema is not None and not set(mapping.key_columns) <= set(schema.names):
        return "primary_key"
    return "sql" if spec.sql else "table" if spec.table else "file"


def _load_settings(
    name: str, config: DestinationConfig, may_send: Callable[[], Awaitable[bool]]
) -> LoadSettings:
    limit = config.rate_limit
    return LoadSettings(
        may_send=may_send,
        batch_size=config.batch_size,
        concurrency=config.concurrency,
        max_record_bytes=config.max_record_bytes,
        max_request_bytes=config.max_request_bytes,
        limiter=limiter_for(
            name, limit.requests if limit else None, limit.per_s if limit else None
        ),
    )
