"""One sync: what it did, phase by phase; its live progress while it runs; its failed records
grouped by reason, searched by key and downloaded; and what can be done with it (replay it,
cancel it)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from enum import StrEnum
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Form, Request
from starlette.responses import RedirectResponse, Response, StreamingResponse

from ebbtide.errors import ConflictError, UsageError
from ebbtide.server.api.context import RunId
from ebbtide.server.api.export import ExportFormat, export
from ebbtide.server.api.runs import PROGRESS_POLL_S, preview_of
from ebbtide.server.ui.render import flash, page, templates
from ebbtide.server.ui.session import Editor, Viewer, services
from ebbtide.services.views import ProgressView, ReplayPreviewView
from ebbtide.values import RunStatus, Trigger

router = APIRouter()

# Failed records listed on the page; the downloads hold every one.
FAILURES_SHOWN = 100
EXPORT_LIMIT = 1_000_000


class ReplayMode(StrEnum):
    AS_SENT = "as_sent"
    LATEST = "latest"
    ONLY_FAILED = "only_failed"


def _is_htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


def _fragment(request: Request, template: str, **context: object) -> Response:
    return templates.TemplateResponse(request, template, context)


def _body_context(request: Request, run_id: int, key: str | None) -> dict[str, Any]:
    history = services(request).history()
    run = history.run_details(run_id, failures=FAILURES_SHOWN)
    failures = history.run_failures(run_id, FAILURES_SHOWN, key_contains=key) if key else None
    running = run.status is RunStatus.RUNNING
    return {
        "run": run,
        "failures": run.failures if failures is None else failures,
        "key": key or "",
        "progress": history.progress(run_id) if running else None,
        "replayable": not running and run.trigger != Trigger.RESET.value,
    }


@router.get("/runs/{run_id}")
def run_page(request: Request, run_id: RunId, person: Viewer, key: str | None = None) -> Response:
    return page(request, "run.html", person, **_body_context(request, run_id, key))


@router.get("/runs/{run_id}/body")
def run_body(request: Request, run_id: RunId, person: Viewer) -> Response:
    """The page below its breadcrumb: swapped in when a sync being watched ends."""
    context = _body_context(request, run_id, None)
    return _fragment(request, "run_body.html", person=person, csrf=person.csrf, **context)


# -- live progress -----------------------------------------------------------------------------


def _event(kind: str, html: str) -> str:
    """One Server-Sent Event; every line of a multi-line fragment is a `data:` line."""
    lines = "".join(f"data: {line}\n" for line in html.splitlines() or [""])
    return f"event: {kind}\n{lines}\n"


@router.get("/runs/{run_id}/progress/stream")
async def progress_stream(request: Request, run_id: RunId, person: Viewer) -> Response:
    """The progress bar as HTML fragments (`progress`) while the run runs, then one
    `finished` event whose fragment loads the final page; the stream then ends, as it does
    when the browser goes away."""
    history = services(request).history()
    history.run(run_id)  # an unknown run is a 404 page, not an empty stream
    progress_bar = templates.env.get_template("run_progress.html")
    finished = templates.env.get_template("run_finished.html")

    async def events() -> AsyncIterator[str]:
        last: ProgressView | None = None
        while not await request.is_disconnected():
            now = await asyncio.to_thread(history.progress, run_id)
            if now.status is not RunStatus.RUNNING:
                yield _event("finished", finished.render(progress=now))
                return
            if now != last:
                yield _event("progress", progress_bar.render(progress=now))
                last = now
            await asyncio.sleep(PROGRESS_POLL_S)

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


# -- failed records ----------------------------------------------------------------------------


@router.get("/runs/{run_id}/groups/{index}")
def failure_group(request: Request, run_id: RunId, index: int, person: Viewer) -> Response:
    """One reason records failed for: the error, sample payloads (masked as stored) and the
    recommended action."""
    history = services(request).history()
    groups = history.error_groups(run_id)
    if not 0 <= index < len(groups):
        raise UsageError(f"sync #{run_id} has no failure group {index}")
    context: dict[str, Any] = {"run_id": run_id, "group": groups[index], "index": index}
    if _is_htmx(request):
        return _fragment(request, "run_group.html", **context)
    return page(request, "run_group_page.html", person, run=history.run(run_id), **context)


@router.get("/runs/{run_id}/failed-records")
def failed_records(
    request: Request, run_id: RunId, person: Viewer, key: str | None = None
) -> Response:
    """The failed-records table, of keys containing `key`: htmx swaps it in as one types;
    without JavaScript the search is the page's own `?key=`."""
    if not _is_htmx(request):
        query = f"?{urlencode({'key': key})}" if key else ""
        return RedirectResponse(f"/runs/{run_id}{query}", status_code=303)
    history = services(request).history()
    run = history.run(run_id)
    failures = history.run_failures(run_id, FAILURES_SHOWN, key_contains=key or None)
    return _fragment(request, "run_failures.html", run=run, failures=failures, key=key or "")


@router.get("/runs/{run_id}/failed-records.{fmt}")
def download_failed_records(
    request: Request, run_id: RunId, fmt: ExportFormat, person: Viewer, key: str | None = None
) -> Response:
    """Every failed record of the run (of keys containing `key`) as CSV or JSON Lines."""
    rows = services(request).history().run_failures(run_id, EXPORT_LIMIT, key_contains=key)
    return export(rows, fmt, f"sync-{run_id}-failed-records")


# -- replay and cancel -------------------------------------------------------------------------


def _preview(request: Request, run_id: int) -> tuple[ReplayPreviewView | None, str | None]:
    try:
        return preview_of(services(request).schedules(), run_id), None
    except ConflictError as refused:
        return None, str(refused)


@router.get("/runs/{run_id}/replay")
def replay_dialog(request: Request, run_id: RunId, person: Editor) -> Response:
    """The Replay dialog: the three ways to replay, with how many records each sends."""
    preview, refused = _preview(request, run_id)
    run = services(request).history().run(run_id)
    context: dict[str, Any] = {"run": run, "preview": preview, "refused": refused}
    if _is_htmx(request):
        return _fragment(request, "replay.html", csrf=person.csrf, **context)
    return page(request, "replay_page.html", person, **context)


@router.post("/runs/{run_id}/replay")
def replay(
    request: Request,
    run_id: RunId,
    person: Editor,
    mode: Annotated[ReplayMode, Form()] = ReplayMode.AS_SENT,
) -> Response:
    schedules = services(request).schedules()
    try:
        queued, records = schedules.request_replay(
            run_id,
            latest=mode is ReplayMode.LATEST,
            only_failed=mode is ReplayMode.ONLY_FAILED,
            actor=person.actor,
        )
    except ConflictError as refused:
        flash(request, f"Sync #{run_id} cannot be replayed: {refused}", "error")
        return RedirectResponse(f"/runs/{run_id}", status_code=303)
    flash(request, f"Replay of sync #{run_id} queued: {records:,} records")
    return RedirectResponse(f"/mappings/{quote(queued.mapping)}", status_code=303)


@router.post("/runs/{run_id}/cancel")
def cancel(request: Request, run_id: RunId, person: Editor) -> Response:
    try:
        services(request).schedules().cancel(run_id, actor=person.actor)
    except ConflictError as refused:
        flash(request, str(refused), "error")
    else:
        flash(request, f"Sync #{run_id} will stop at its next batch.")
    return RedirectResponse(f"/runs/{run_id}", status_code=303)
