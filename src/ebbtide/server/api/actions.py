"""`/api/v1/actions`: what people did (sync now, pause, reset, replay, cancel), and who."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from ebbtide.server.api.context import Before, SchedulesDep
from ebbtide.services.views import ActionView

router = APIRouter(tags=["actions"])


@router.get("/actions")
def actions(
    schedules: SchedulesDep,
    mapping: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    before: Before = None,
) -> list[ActionView]:
    """Newest first."""
    return schedules.actions_taken(mapping, limit, before)
