"""A mapping's page: Sync now, Reset sync, Pause; its sync history as charts and a table
(filtered by status and date, paginated); its fields as configured; its pending failed records
with their retry status; what people did to it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Form, Request
from starlette.responses import RedirectResponse, Response

from ebbtide.errors import ConflictError, MappingBusyError
from ebbtide.server.ui import charts
from ebbtide.server.ui.render import flash, page, templates, when
from ebbtide.server.ui.session import Editor, Viewer, services
from ebbtide.services.views import FailedRecordView
from ebbtide.values import FailureStatus, RunFilter, RunStatus

router = APIRouter()

PAGE_SIZE = 20
FAILED_SHOWN = 50  # pending failed records listed; the sync page and the API have them all
ACTIONS_SHOWN = 10


@router.get("/mappings/{name}")
def mapping_page(
    request: Request,
    name: str,
    person: Viewer,
    status: str | None = None,
    since: str | None = None,
    until: str | None = None,
    before: str | None = None,
) -> Response:
    found = services(request)
    mapping = found.history().mapping(name)  # an unknown name: the 404 page
    spec = found.catalog().workspace.mapping(name)
    failed = found.history().failed_records(
        name, [FailureStatus.PENDING, FailureStatus.EXPIRED], FAILED_SHOWN
    )
    return page(
        request,
        "mapping.html",
        person,
        mapping=mapping,
        source=_source_of(request, mapping.model),
        **_sync_history(request, name, HistoryFilter.of(status, since, until, before)),
        fields=found.catalog().mapping_fields(name),
        failed=[RetryStatus.of(r, spec.retry.max_days, spec.retry.max_syncs) for r in failed],
        failed_limit=FAILED_SHOWN,
        max_syncs=spec.retry.max_syncs,
        max_days=spec.retry.max_days,
        actions=found.schedules().actions_taken(name, ACTIONS_SHOWN, None),
    )


@dataclass(frozen=True)
class HistoryFilter:
    """The sync history's filters as the URL gives them; a value the page does not know (an
    edited URL) is left out rather than refused."""

    status: RunStatus | None
    since: date | None
    until: date | None  # inclusive: the whole day
    before: int | None  # the page after this run id

    @classmethod
    def of(
        cls, status: str | None, since: str | None, until: str | None, before: str | None
    ) -> HistoryFilter:
        return cls(_status(status), _day(since), _day(until), _int(before))

    def where(self) -> RunFilter:
        end = self.until + timedelta(days=1) if self.until else None
        return RunFilter(
            status=self.status,
            since=_midnight(self.since),
            until=_midnight(end),
            before=self.before,
        )

    def form(self) -> dict[str, str]:
        """The values the filter form shows."""
        return {
            "status": self.status.value if self.status else "",
            "since": self.since.isoformat() if self.since else "",
            "until": self.until.isoformat() if self.until else "",
        }


def _sync_history(request: Request, name: str, chosen: HistoryFilter) -> dict[str, Any]:
    """One page of the history, newest first, its charts, and where the next page starts."""
    runs = services(request).history().runs(name, PAGE_SIZE + 1, chosen.where())
    older = runs[PAGE_SIZE - 1].id if len(runs) > PAGE_SIZE else None
    runs = runs[:PAGE_SIZE]
    return {
        "runs": runs,
        "older": older,
        "paged": chosen.before is not None,
        "filters": chosen.form(),
        "statuses": list(RunStatus),
        "records_chart": charts.records_chart(runs, name),
        "duration_chart": charts.duration_chart(runs, name),
        "chart_summary": charts.summary(runs),
    }


@router.post("/mappings/{name}/sync")
def sync_now(request: Request, name: str, person: Editor) -> Response:
    outcome = services(request).schedules().request_sync(name, actor=person.actor)
    if outcome.queued:
        flash(request, "Sync requested: it starts as soon as a worker of ebbtide serve is free.")
    else:
        by = f" by {outcome.requested_by}" if outcome.requested_by else ""
        flash(
            request,
            f"A sync was already requested{by} at {when(outcome.requested_at)}:"
            " this request was merged into it.",
        )
    return _back(name)


@router.post("/mappings/{name}/pause")
def pause(request: Request, name: str, person: Editor) -> Response:
    services(request).schedules().pause(name, actor=person.actor)
    flash(request, f"{name} is paused: its schedule starts no sync until it is resumed.")
    return _back(name)


@router.post("/mappings/{name}/resume")
def resume(request: Request, name: str, person: Editor) -> Response:
    services(request).schedules().resume(name, actor=person.actor)
    flash(request, f"{name} is resumed: its schedule starts syncs again.")
    return _back(name)


@router.get("/mappings/{name}/reset")
def reset_dialog(request: Request, name: str, person: Editor) -> Response:
    """The Reset sync dialog: htmx swaps it into the mapping page; without JavaScript the
    menu's link opens it as a page of its own."""
    plan = services(request).schedules().reset_plan(name).view()
    if request.headers.get("hx-request"):
        # Only the dialog: a whole page would also take the messages meant for the next one.
        return templates.TemplateResponse(
            request, "mapping_reset_dialog.html", {"plan": plan, "csrf": person.csrf}
        )
    return page(request, "mapping_reset.html", person, plan=plan)


@router.post("/mappings/{name}/reset")
def reset(
    request: Request,
    name: str,
    person: Editor,
    confirm: Annotated[str | None, Form()] = None,
) -> Response:
    schedules = services(request).schedules()
    if confirm != "on":
        schedules.reset_plan(name)  # an unknown mapping is still a 404
        return page(
            request,
            "error.html",
            person,
            status_code=422,
            title="Nothing was changed",
            message=(
                "A reset needs the box “I understand what happens when a sync is reset”"
                " ticked. The sync was not reset."
            ),
        )
    try:
        record = schedules.reset(name, actor=person.actor)
    except (ConflictError, MappingBusyError) as refused:
        flash(request, f"The sync was not reset: {refused}", "error")
        return _back(name)
    flash(
        request,
        f"Sync reset (#{record.id}): the next sync of {name} sends the whole model again.",
    )
    return _back(name)


def _back(name: str) -> Response:
    return RedirectResponse(f"/mappings/{quote(name, safe='')}", status_code=303)


def _source_of(request: Request, model: str) -> str:
    return next((m.source for m in services(request).catalog().models() if m.name == model), "?")


def _status(given: str | None) -> RunStatus | None:
    """A filter the page does not know (an edited URL) shows every status, not an error."""
    try:
        return RunStatus(given) if given else None
    except ValueError:
        return None


def _day(given: str | None) -> date | None:
    try:
        return date.fromisoformat(given) if given else None
    except ValueError:
        return None


def _midnight(day: date | None) -> datetime | None:
    return datetime.combine(day, time(), UTC) if day else None


def _int(given: str | None) -> int | None:
    return int(given) if given and given.isdigit() else None


@dataclass(frozen=True)
class RetryStatus:
    """A pending failed record with how long it is retried still."""

    record: FailedRecordView
    expires_at: datetime  # its first failure plus the mapping's retry window
    syncs: str  # "3 of 25": syncs it failed in, of the most it is retried for

    @classmethod
    def of(cls, record: FailedRecordView, max_days: float, max_syncs: int) -> RetryStatus:
        return cls(
            record,
            record.first_failed_at + timedelta(days=max_days),
            f"{record.failed_syncs} of {max_syncs}",
        )
