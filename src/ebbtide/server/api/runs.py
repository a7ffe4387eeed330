"""`/api/v1/runs`: the sync history, in the shapes `runs list/show/failed --json` print, and
what can be done with a run (cancel it, replay it, follow its progress)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse
from fastapi.sse import EventSourceResponse, ServerSentEvent
from pydantic import BaseModel

from ebbtide.errors import ErrorClass
from ebbtide.server.api.auth import Writer
from ebbtide.server.api.context import Before, HistoryDep, RunId, SchedulesDep
from ebbtide.server.api.export import ExportFormat, export
from ebbtide.services.scheduler import ScheduleService
from ebbtide.services.views import (
    ProgressView,
    RecordFailureView,
    ReplayPreviewView,
    RunDetailsView,
    RunView,
)
from ebbtide.values import RunFilter, RunStatus, Trigger

router = APIRouter(prefix="/runs", tags=["runs"])

# How often the event stream looks at a run's progress (the run writes it twice a second).
PROGRESS_POLL_S = 0.25


class ReplayBody(BaseModel):
    latest: bool = False  # send those keys with the model's current data, not as sent
    only_failed: bool = False  # only the records that failed in the run


class ReplayRequestView(BaseModel):
    """A replay queued for `ebbtide serve`; it shows in the history as a run of its own."""

    mapping: str
    replay_of: int
    latest: bool
    only_failed: bool
    records: int  # how many it resends
    request: str  # queued
    requested_at: str
    requested_by: str | None


@router.get("")
def list_runs(
    history: HistoryDep,
    mapping: str | None = None,
    status: RunStatus | None = None,
    trigger: Trigger | None = None,
    since: Annotated[datetime | None, Query(description="started at or after")] = None,
    until: Annotated[datetime | None, Query(description="started before")] = None,
    before: Before = None,
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
def get_run(run_id: RunId, history: HistoryDep) -> RunDetailsView:
    """One run: phases, counts, failures grouped by error with recommended actions."""
    return history.run_details(run_id)


@router.get("/{run_id}/failed-records")
def failed_records(
    run_id: RunId,
    history: HistoryDep,
    error_class: ErrorClass | None = None,
    key: Annotated[str | None, Query(description="keys containing this text")] = None,
    limit: Annotated[int, Query(ge=1, le=10000)] = 1000,
) -> list[RecordFailureView]:
    """Every record that failed in the run: key, operation, error, payload (masked)."""
    return history.run_failures(run_id, limit, error_class, key)


@router.get("/{run_id}/failed-records/export")
def export_failed_records(
    run_id: RunId,
    history: HistoryDep,
    format: ExportFormat = ExportFormat.CSV,
    error_class: ErrorClass | None = None,
    key: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1_000_000)] = 1_000_000,
) -> StreamingResponse:
    """The run's failed records as a CSV or JSON Lines download."""
    rows = history.run_failures(run_id, limit, error_class, key)
    return export(rows, format, f"run-{run_id}-failed-records")


@router.get("/{run_id}/progress")
def progress(run_id: RunId, history: HistoryDep) -> ProgressView:
    """How far a running run has got: its phase and records done of total."""
    return history.progress(run_id)


def _known_run(run_id: RunId, history: HistoryDep) -> RunView:
    """404 before a stream starts, not an error inside it."""
    return history.run(run_id)


@router.get("/{run_id}/events", response_class=EventSourceResponse)
async def events(
    run_id: RunId, history: HistoryDep, _: Annotated[RunView, Depends(_known_run)]
) -> AsyncIterator[ServerSentEvent]:
    """The run's progress as Server-Sent Events (`progress`), then one `finished` event with
    the run as the history records it; the stream then ends."""
    last: ProgressView | None = None
    while True:
        now = await asyncio.to_thread(history.progress, run_id)
        if now.status is not RunStatus.RUNNING:
            run = await asyncio.to_thread(history.run, run_id)
            yield ServerSentEvent(event="finished", data=run.model_dump(mode="json"))
            return
        if now != last:
            yield ServerSentEvent(event="progress", data=now.model_dump(mode="json"))
            last = now
        await asyncio.sleep(PROGRESS_POLL_S)


@router.post("/{run_id}/cancel", status_code=202)
def cancel(run_id: RunId, holder: Writer, schedules: SchedulesDep) -> RunView:
    """Ask a running sync to stop at its next batch, wherever it runs; it is recorded as
    cancelled, and the next sync sends what it did not deliver. 409 if it is not running."""
    return RunView.of(schedules.cancel(run_id, actor=f"api: {holder.label}"))


@router.get("/{run_id}/replay")
def replay_preview(run_id: RunId, schedules: SchedulesDep) -> ReplayPreviewView:
    """How many records each kind of replay of the run would resend; nothing is queued.
    409 when the run cannot be replayed (a reset, a pruned journal)."""
    return preview_of(schedules, run_id)


def preview_of(schedules: ScheduleService, run_id: int) -> ReplayPreviewView:
    plan = schedules.replay_preview(run_id)
    return ReplayPreviewView(
        run_id=plan.run.id,
        mapping=plan.run.mapping,
        as_sent=plan.count,
        latest=plan.count,
        only_failed=plan.failed,
    )


@router.post("/{run_id}/replay", status_code=202)
def replay(
    run_id: RunId, holder: Writer, schedules: SchedulesDep, body: ReplayBody | None = None
) -> ReplayRequestView:
    """Resend the run's records (all, or `only_failed`), as sent or with the `latest` data,
    as a run of its own started by `ebbtide serve`. 409 when the run cannot be replayed."""
    asked = body or ReplayBody()
    request, records = schedules.request_replay(
        run_id, latest=asked.latest, only_failed=asked.only_failed, actor=f"api: {holder.label}"
    )
    return ReplayRequestView(
        mapping=request.mapping,
        replay_of=request.run_id,
        latest=request.latest,
        only_failed=request.only_failed,
        records=records,
        request="queued",
        requested_at=request.requested_at.isoformat(),
        requested_by=request.requested_by,
    )
