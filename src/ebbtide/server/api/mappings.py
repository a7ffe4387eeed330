"""`/api/v1/mappings`: the workspace's mappings and everything done to one of them."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from ebbtide.errors import ErrorClass
from ebbtide.server.api.auth import Writer
from ebbtide.server.api.context import Before, CatalogDep, HistoryDep, SchedulesDep
from ebbtide.server.api.errors import ApiError
from ebbtide.server.api.export import ExportFormat, export
from ebbtide.services.views import (
    ActionView,
    FailedRecordView,
    KeyHistoryView,
    MappingFieldView,
    MappingView,
    ResetPlanView,
    RunView,
    SyncPlanView,
)
from ebbtide.values import FailureStatus

router = APIRouter(prefix="/mappings", tags=["mappings"])


class SyncRequestView(BaseModel):
    """A "sync now": queued, or merged into the request already waiting."""

    mapping: str
    request: Literal["queued", "merged"]
    requested_at: str
    requested_by: str | None


class PauseView(BaseModel):
    mapping: str
    paused: bool


class ResetBody(BaseModel):
    confirm: bool = Field(
        default=False, description="true: I understand what happens when a sync is reset"
    )


Statuses = Annotated[
    list[FailureStatus] | None,
    Query(description="pending (being retried) and/or expired (given up); default both"),
]
Limit = Annotated[int, Query(ge=1, le=100_000)]


@router.get("")
def list_mappings(history: HistoryDep) -> list[MappingView]:
    """Every mapping of the workspace, with its schedule, next due time, last run and health."""
    return history.mappings()


@router.get("/{name}")
def get_mapping(name: str, history: HistoryDep) -> MappingView:
    return history.mapping(name)


@router.get("/{name}/fields")
def fields(name: str, catalog: CatalogDep) -> list[MappingFieldView]:
    """The mapping's fields as configured; an object's or an array's customized properties
    are its children."""
    return catalog.mapping_fields(name)


@router.post("/{name}/sync", status_code=202)
def sync_now(name: str, holder: Writer, schedules: SchedulesDep) -> SyncRequestView:
    """Ask `ebbtide serve` to sync the mapping now, whatever its schedule."""
    outcome = schedules.request_sync(name, actor=f"api: {holder.label}")
    return SyncRequestView(
        mapping=outcome.mapping,
        request="queued" if outcome.queued else "merged",
        requested_at=outcome.requested_at.isoformat(),
        requested_by=outcome.requested_by,
    )


@router.post("/{name}/pause")
def pause(name: str, holder: Writer, schedules: SchedulesDep) -> PauseView:
    """Its schedule starts no run until resumed ("sync now" still runs)."""
    schedules.pause(name, actor=f"api: {holder.label}")
    return PauseView(mapping=name, paused=True)


@router.post("/{name}/resume")
def resume(name: str, holder: Writer, schedules: SchedulesDep) -> PauseView:
    schedules.resume(name, actor=f"api: {holder.label}")
    return PauseView(mapping=name, paused=False)


@router.get("/{name}/reset")
def reset_plan(name: str, schedules: SchedulesDep) -> ResetPlanView:
    """What a reset of the mapping would do; changes nothing."""
    return schedules.reset_plan(name).view()


@router.post("/{name}/reset")
def reset(name: str, body: ResetBody, holder: Writer, schedules: SchedulesDep) -> RunView:
    """Forget what the destination has: the next sync sends the whole model. Refused
    without `{"confirm": true}`, and while the mapping syncs (409)."""
    if not body.confirm:
        plan = schedules.reset_plan(name)
        raise ApiError(
            422,
            f'confirm: a reset needs {{"confirm": true}}; nothing was changed. {plan.explain()}',
        )
    return RunView.of(schedules.reset(name, actor=f"api: {holder.label}"))


@router.get("/{name}/plan")
def plan(
    name: str, schedules: SchedulesDep, samples: Annotated[int, Query(ge=0, le=100)] = 3
) -> SyncPlanView:
    """What the next sync would send (`sync plan`): reads the model, sends nothing."""
    return schedules.plan(name, samples).view()


@router.get("/{name}/failed-records")
def failed_records(
    name: str,
    history: HistoryDep,
    status: Statuses = None,
    error_class: ErrorClass | None = None,
    key: Annotated[str | None, Query(description="keys containing this text")] = None,
    limit: Limit = 1000,
) -> list[FailedRecordView]:
    """The mapping's records being retried or given up, oldest failure first, each with its
    last error, payload (masked) and recommended action."""
    return history.failed_records(name, _statuses(status), limit, error_class, key)


@router.get("/{name}/failed-records/export")
def export_failed_records(
    name: str,
    history: HistoryDep,
    format: ExportFormat = ExportFormat.CSV,
    status: Statuses = None,
    error_class: ErrorClass | None = None,
    key: str | None = None,
    limit: Limit = 100_000,
) -> StreamingResponse:
    """The same records as a CSV or JSON Lines download."""
    rows = history.failed_records(name, _statuses(status), limit, error_class, key)
    return export(rows, format, f"{name}-failed-records")


@router.get("/{name}/records/{key}/history")
def key_history(name: str, key: str, history: HistoryDep) -> KeyHistoryView:
    """Every run that sent the record with this key, newest first: operation, outcome, error.
    A composite key is written as JSON (`["eu", 42]`)."""
    return history.key_history(name, key)


@router.get("/{name}/actions")
def actions(
    name: str,
    schedules: SchedulesDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    before: Before = None,
) -> list[ActionView]:
    """What people did to the mapping (sync now, pause, reset, replay, cancel) and who."""
    return schedules.actions_taken(name, limit, before)


def _statuses(given: list[FailureStatus] | None) -> list[FailureStatus]:
    return given or [FailureStatus.PENDING, FailureStatus.EXPIRED]
