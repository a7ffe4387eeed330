"""`/api/v1/runs`: the sync history, in the shapes `runs list/show/failed --json` print."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from ebbtide.server.api.context import HistoryDep
from ebbtide.services.views import RecordFailureView, RunDetailsView, RunView
from ebbtide.values import RunStatus

router = APIRouter(prefix="/runs", tags=["runs"])

# A status filter looks this far back for runs that match.
STATUS_WINDOW = 1000


@router.get("")
def list_runs(
    history: HistoryDep,
    mapping: str | None = None,
    status: RunStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
) -> list[RunView]:
    """Runs newest first, of one mapping or all, optionally of one status."""
    if status is None:
        return history.runs(mapping, limit)
    runs = history.runs(mapping, STATUS_WINDOW)
    return [run for run in runs if run.status is status][:limit]


@router.get("/{run_id}")
def get_run(run_id: int, history: HistoryDep) -> RunDetailsView:
    """One run: phases, counts, failures grouped by error with recommended actions."""
    return history.run_details(run_id)


@router.get("/{run_id}/failed-records")
def failed_records(
    run_id: int,
    history: HistoryDep,
    limit: Annotated[int, Query(ge=1, le=10000)] = 1000,
) -> list[RecordFailureView]:
    """Every record that failed in the run: key, operation, error, payload (masked)."""
    return history.run_failures(run_id, limit)
