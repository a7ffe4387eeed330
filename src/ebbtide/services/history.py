"""Reading the sync history: runs, why records failed, how each mapping is doing.

The one way the CLI and the API read the state store; both print what this returns.
"""

from __future__ import annotations

from collections.abc import Sequence

from ebbtide.config.workspace import Workspace
from ebbtide.errors import ErrorClass
from ebbtide.ports import StateStore
from ebbtide.services.advice import recommended_action
from ebbtide.services.views import (
    ErrorGroupView,
    FailedRecordView,
    Health,
    MappingView,
    RecordFailureView,
    RunDetailsView,
    RunView,
)
from ebbtide.values import FailureStatus, RunFilter, RunRecord, RunStatus

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

    def run_failures(self, run_id: int, limit: int = 1000) -> list[RecordFailureView]:
        """The records that failed in one run, each with its recommended action."""
        mapping = self.state.get_run(run_id).mapping
        return [
            RecordFailureView.of(f, self._advice(mapping, f.error_class, f.message))
            for f in self.state.failures(run_id, limit=limit)
        ]

    def failed_records(
        self,
        mapping: str,
        statuses: Sequence[FailureStatus] = DEFAULT_STATUSES,
        limit: int = 1000,
    ) -> list[FailedRecordView]:
        """A mapping's records pending retry or given up, oldest failure first."""
        self.workspace.mapping(mapping)
        return [
            FailedRecordView.of(r, self._advice(mapping, r.error_class, r.message))
            for r in self.state.pending_failures.listed(mapping, list(statuses), limit)
        ]

    def mappings(self) -> list[MappingView]:
        """Every mapping of the workspace, with its last run and health."""
        return [self.mapping(name) for name in self.workspace.spec.mappings]

    def mapping(self, name: str) -> MappingView:
        spec = self.workspace.mapping(name)
        recent = self.state.list_runs(name, _HEALTH_LOOKBACK)
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
        )

    def _advice(self, mapping: str, error_class: str | ErrorClass, message: str) -> str:
        return recommended_action(self.workspace, mapping, ErrorClass(error_class), message)


def health_of(runs: Sequence[RunRecord]) -> Health:
    """From the newest finished run: a run still going says nothing yet."""
    finished = next((r for r in runs if r.status is not RunStatus.RUNNING), None)
    if finished is None:
        return Health.NEVER_RUN
    return Health.HEALTHY if finished.status is RunStatus.SUCCESS else Health.FAILING
