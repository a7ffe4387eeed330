"""`/api/v1/mappings`: the workspace's mappings, sync now, pause and resume."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel

from ebbtide.server.api.auth import Writer
from ebbtide.server.api.context import HistoryDep, SchedulesDep
from ebbtide.services.views import MappingView

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


@router.get("")
def list_mappings(history: HistoryDep) -> list[MappingView]:
    """Every mapping of the workspace, with its last run and health."""
    return history.mappings()


@router.get("/{name}")
def get_mapping(name: str, history: HistoryDep) -> MappingView:
    return history.mapping(name)


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
    schedules.pause(name)
    return PauseView(mapping=name, paused=True)


@router.post("/{name}/resume")
def resume(name: str, holder: Writer, schedules: SchedulesDep) -> PauseView:
    schedules.resume(name)
    return PauseView(mapping=name, paused=False)
