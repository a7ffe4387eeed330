"""What the routers are given: the services they call, and how a token is checked.

The API imports services and errors only; whoever serves it (`ebbtide serve`, a test) builds
these over one workspace and state store.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Protocol

from fastapi import Depends, Path, Query, Request

from ebbtide.config.workspace import Workspace
from ebbtide.server.metrics import ServeMetrics
from ebbtide.services.alerts import AlertService
from ebbtide.services.catalog import Catalog
from ebbtide.services.history import History
from ebbtide.services.scheduler import ScheduleService
from ebbtide.state.store import SqlStateStore
from ebbtide.state.tokens import TokenBook
from ebbtide.state.users import UserBook, session_key


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
    catalog: Callable[[], Catalog]
    alerts: Callable[[], AlertService]
    metrics: Callable[[], ServeMetrics]
    # Why the server is not ready (state store unreachable, last edit of the workspace
    # invalid), or None when it is.
    not_ready: Callable[[], str | None] = lambda: None
    # The web UI's users; without them (an API-only test) no UI is served.
    users: UserBook | None = None
    session_key: Callable[[], str] | None = None  # signs the UI's session cookies


def services_over(
    workspace: Callable[[], Workspace],
    state: SqlStateStore,
    metrics: ServeMetrics | None = None,
    not_ready: Callable[[], str | None] = lambda: None,
) -> ApiServices:
    """The API's services over the workspace as `workspace()` gives it now (serve reloads
    it) and one state store."""
    tokens = TokenBook(state.engine)
    found = metrics or ServeMetrics(
        lambda: ScheduleService(workspace(), state).queue_depth(),
        lambda: History(workspace(), state).last_successes(),
    )
    return ApiServices(
        history=lambda: History(workspace(), state),
        schedules=lambda: ScheduleService(workspace(), state),
        verify_token=tokens.verify,
        catalog=lambda: Catalog(workspace()),
        alerts=lambda: AlertService(workspace(), state),
        metrics=lambda: found,
        not_ready=not_ready,
        users=UserBook(state.engine),
        session_key=lambda: session_key(state.engine),
    )


def services(request: Request) -> ApiServices:
    found: ApiServices = request.app.state.services
    return found


Services = Annotated[ApiServices, Depends(services)]


def history(found: Services) -> History:
    return found.history()


def schedules(found: Services) -> ScheduleService:
    return found.schedules()


def catalog(found: Services) -> Catalog:
    return found.catalog()


def alerts(found: Services) -> AlertService:
    return found.alerts()


HistoryDep = Annotated[History, Depends(history)]
SchedulesDep = Annotated[ScheduleService, Depends(schedules)]
CatalogDep = Annotated[Catalog, Depends(catalog)]
AlertsDep = Annotated[AlertService, Depends(alerts)]


# Ids are 64-bit in every state store: a larger number names nothing (404 would need a query
# the database refuses), so it is a bad request.
MAX_ID = 2**63 - 1
RunId = Annotated[int, Path(ge=1, le=MAX_ID, description="a run's id")]
ItemId = Annotated[int, Path(ge=1, le=MAX_ID)]
Before = Annotated[
    int | None, Query(ge=1, le=MAX_ID, description="the next page: older than this id")
]
