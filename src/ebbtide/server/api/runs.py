"""`/api/v1/runs`: the sync history, in the shapes `runs list/show/failed --json` print."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query

from ebbtide.server.api.context import HistoryDep
from ebbtide.services.views import RecordFailureView, RunDetailsView, RunView
from ebbtide.values import RunFilter, RunStatus, Trigger

router = APIRouter(prefix="/runs", tags=["runs"])


@router.get("")
def list_runs(
    history: HistoryDep,
    mapping: str | None = None,
    status: RunStatus | None = None,
    trigger: Trigger | None = None,
    since: Annotated[datetime | None, Query(description="started at or after")] = None,
    until: Annotated[datetime | None, Query(description="started before")] = None,
    before: Annotated[
        int | None, Query(description="the next page: runs older than this run id")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
) -> list[RunView]:
    """Runs newest first, filtered in the state store; page with `before` = the last id."""
    where = RunFilter(
        status=status,
        trigger=trigger.value if trigger else None,
        since=_aware(since),
        until=_aware(until),
        before=before,
    )
    return history.runs(mapping, limit, where)


def _aware(moment: datetime | None) -> datetime | None:
    """A time without an offset is read as UTC, as the history records every time."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


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
