"""The Python API: everything the CLI and `ebbtide serve` do, a function call away.

    import ebbtide

    with ebbtide.Workspace.load("path/to/workspace") as workspace:
        run = workspace.sync("users_to_crm")
        print(run.status, run.loaded_new, run.failed)

Methods return the typed views the CLI's `--json` and the REST API return
(`ebbtide.services.views`). A sync that fails is a run with status `failed` (its `error` says
why), not an exception; exceptions are for what stops a run from starting or being recorded:
`ConfigError`/`ConfigErrors`/`UsageError` (bad workspace, unknown mapping or run),
`MappingBusyError` (another run holds the mapping), `StorageError`/`SnapshotDamagedError`
(ebbtide's own state store or files failed; the run is recorded as failed).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from types import TracebackType
from typing import TypeVar

from ebbtide.config.workspace import Workspace as LoadedWorkspace
from ebbtide.errors import EbbtideError, UsageError
from ebbtide.services.history import DEFAULT_STATUSES
from ebbtide.services.scheduler import SyncRequestOutcome
from ebbtide.services.sync import SyncPlan
from ebbtide.services.views import (
    FailedRecordView,
    MappingView,
    RecordFailureView,
    RunDetailsView,
    RunView,
)
from ebbtide.services.workspace_services import WorkspaceServices, check_mappings, default_actor
from ebbtide.values import FailureStatus, RunFilter, RunStatus, Trigger

T = TypeVar("T")


@dataclass(frozen=True)
class SyncAllResult:
    """The runs of `sync_all`, and the mappings that could not start, with why."""

    runs: list[RunView] = field(default_factory=list)
    refused: dict[str, EbbtideError] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Every mapping ran and every run succeeded."""
        return not self.refused and all(r.status is RunStatus.SUCCESS for r in self.runs)


class Workspace:
    """One workspace (its `ebbtide.yml`) and its state store, as the CLI would open them.

    Close it (or use `with`) to release the state store's connections.
    """

    def __init__(self, services: WorkspaceServices, *, actor: str | None = None) -> None:
        self._services = services
        self.actor = actor or default_actor()  # who the history says started runs

    @classmethod
    def load(
        cls, path: str | PathLike[str] | None = None, *, actor: str | None = None
    ) -> Workspace:
        """Open the workspace at `path`: a folder holding `ebbtide.yml`, or that file.

        Without a path: the current folder or its nearest parent with `ebbtide.yml`. A bad
        workspace raises `ConfigErrors` (each `ConfigError` naming file, line and key path).
        """
        return cls(WorkspaceServices.open(Path(path) if path is not None else None), actor=actor)

    @property
    def config(self) -> LoadedWorkspace:
        """The workspace as loaded: root, file, definitions (secrets substituted)."""
        return self._services.workspace

    @property
    def root(self) -> Path:
        return self._services.workspace.root

    def close(self) -> None:
        self._services.close()

    def __enter__(self) -> Workspace:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- definitions --------------------------------------------------------------------------

    def mappings(self) -> list[MappingView]:
        """Every mapping, with its model, destination, schedule, last run and health."""
        return self._services.history.mappings()

    def mapping(self, name: str) -> MappingView:
        return self._services.history.mapping(name)

    def validate(self, *, offline: bool = False) -> None:
        """`ebbtide validate`: raises ConfigErrors naming every mistake; sends nothing."""
        check_mappings(self._services.sync, offline=offline)

    # -- syncs --------------------------------------------------------------------------------

    def sync(self, name: str, *, full_resync: bool = False, force: bool = False) -> RunView:
        """Sync one mapping now and return its run (status `failed` rather than raised).

        `full_resync` resets the mapping first (a run of its own), so the whole model is sent;
        `force` sends even when a guard (max_deletes, …) trips, once.
        """
        if full_resync:
            self.reset(name, confirm=True)
        sync = self._services.sync
        return RunView.of(
            _off_the_loop(lambda: sync.run(name, Trigger.MANUAL, force=force, actor=self.actor))
        )

    async def sync_async(
        self, name: str, *, full_resync: bool = False, force: bool = False
    ) -> RunView:
        """`sync` on a worker thread, so the event loop awaiting it keeps running."""
        return await asyncio.to_thread(self.sync, name, full_resync=full_resync, force=force)

    def sync_all(self, *, force: bool = False) -> SyncAllResult:
        """Sync every enabled mapping, one after the other, as `ebbtide sync run --all`.

        A mapping that cannot start (busy, bad definition, …) is in `refused`; the rest run.
        """
        result = SyncAllResult()
        for name, spec in self.config.spec.mappings.items():
            if not spec.enabled:
                continue
            try:
                result.runs.append(self.sync(name, force=force))
            except EbbtideError as error:
                result.refused[name] = error
        return result

    def plan(self, name: str, *, samples: int = 3) -> SyncPlan:
        """What the next sync would send: counts and masked samples; nothing sent."""
        return self._services.sync.plan(name, samples=samples)

    def reset(self, name: str, *, confirm: bool = False) -> RunView:
        """Forget what the destination has: the next sync sends the whole model again.

        Refused (UsageError, saying what it would change) unless `confirm=True`, and while
        the mapping syncs (MappingBusyError). Returns the reset's own run.
        """
        resets = self._services.resets
        plan = resets.plan(name)
        if not confirm:
            raise UsageError(f"{plan.explain()} Pass confirm=True to reset. Nothing was changed.")
        return RunView.of(resets.reset(name, actor=self.actor))

    def replay(self, run_id: int, *, latest: bool = False, only_failed: bool = False) -> RunView:
        """Resend the records of a past run as a run of its own: as they were sent, or with
        the model's `latest` data for those keys; `only_failed` for the ones that failed."""
        replays = self._services.replays
        plan = replays.plan(run_id, latest=latest, only_failed=only_failed)
        return RunView.of(_off_the_loop(lambda: replays.replay(plan, actor=self.actor)))

    # -- history ------------------------------------------------------------------------------

    def runs(
        self,
        mapping: str | None = None,
        *,
        status: RunStatus | str | None = None,
        trigger: Trigger | str | None = None,
        before: int | None = None,
        limit: int = 20,
    ) -> list[RunView]:
        """Runs newest first, of one mapping or all; `before` a run id for the next page."""
        where = RunFilter(
            status=RunStatus(status) if status is not None else None,
            trigger=Trigger(trigger).value if trigger is not None else None,
            before=before,
        )
        return self._services.history.runs(mapping, limit, where)

    def run(self, run_id: int) -> RunDetailsView:
        """One run with its failed records grouped by error (`ebbtide runs show`)."""
        return self._services.history.run_details(run_id)

    def failed_records(self, run_id: int, *, limit: int = 1000) -> list[RecordFailureView]:
        """The records that failed in one run, each with its recommended action."""
        return self._services.history.run_failures(run_id, limit)

    def pending_failures(
        self,
        mapping: str,
        *,
        statuses: Sequence[FailureStatus | str] = DEFAULT_STATUSES,
        limit: int = 1000,
    ) -> list[FailedRecordView]:
        """A mapping's records pending retry or given up (`ebbtide records failed`)."""
        chosen = [FailureStatus(s) for s in statuses]
        return self._services.history.failed_records(mapping, chosen, limit)

    # -- a running `ebbtide serve` ------------------------------------------------------------

    def request_sync(self, name: str) -> SyncRequestOutcome:
        """Ask a running `ebbtide serve` to sync `name` now (`ebbtide sync now`)."""
        return self._services.schedules.request_sync(name, self.actor)

    def pause(self, name: str) -> None:
        """Stop the mapping's schedule from starting runs until `resume`."""
        self._services.schedules.pause(name)

    def resume(self, name: str) -> None:
        self._services.schedules.resume(name)


def _off_the_loop(call: Callable[[], T]) -> T:
    """`call()`, on a worker thread when this thread runs an event loop: a sync runs its own
    loop (asyncio.run), which cannot start inside a running one."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return call()
    with ThreadPoolExecutor(1, thread_name_prefix="ebbtide-sync") as pool:
        return pool.submit(call).result()
