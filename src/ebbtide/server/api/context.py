"""What the routers are given: the services they call, and how a token is checked.

The API imports services and errors only; whoever serves it (`ebbtide serve`, a test) builds
these over one workspace and state store.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Protocol

from fastapi import Depends, Request

from ebbtide.services.history import History
from ebbtide.services.scheduler import ScheduleService


class TokenHolder(Protocol):
    """The caller a valid token stands for."""

    @property
    def scope(self) -> str:
        """`read` or `write`."""
        ...

    @property
    def label(self) -> str:
        """Who calls, as the history records it."""
        ...


@dataclass(frozen=True)
class ApiServices:
    history: Callable[[], History]  # over the workspace as last reloaded
    schedules: Callable[[], ScheduleService]
    verify_token: Callable[[str], TokenHolder | None]


def services(request: Request) -> ApiServices:
    found: ApiServices = request.app.state.services
    return found


Services = Annotated[ApiServices, Depends(services)]


def history(found: Services) -> History:
    return found.history()


def schedules(found: Services) -> ScheduleService:
    return found.schedules()


HistoryDep = Annotated[History, Depends(history)]
SchedulesDep = Annotated[ScheduleService, Depends(schedules)]
