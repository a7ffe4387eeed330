"""Destinations, a destination's Reverse ETL mappings, and the mappings list: the first steps of
the Segment flow (Destinations → Reverse ETL → a mapping)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from ebbtide.errors import UsageError
from ebbtide.server.ui.render import page
from ebbtide.server.ui.session import Viewer, services
from ebbtide.services.views import MappingView

router = APIRouter()

# What the status filter offers: the latest sync's status, or a state of the mapping itself.
STATUS_FILTERS = ["success", "partial_success", "failed", "running", "never_run", "paused"]


@router.get("/")
def home() -> Response:
    return RedirectResponse("/mappings", status_code=303)


@router.get("/destinations")
def destinations(request: Request, person: Viewer) -> Response:
    found = services(request).catalog().destinations()
    return page(request, "destinations.html", person, destinations=found)


@router.get("/destinations/{name}")
def destination(request: Request, name: str, person: Viewer) -> Response:
    """A destination's Reverse ETL tab: the mappings that load into it."""
    found = services(request)
    known = {d.name: d for d in found.catalog().destinations()}
    if name not in known:
        raise UsageError(f"no destination {name!r} in the workspace")
    rows = [m for m in found.history().mappings() if m.destination == name]
    return page(
        request,
        "mappings.html",
        person,
        destination=known[name],
        mappings=rows,
        sources=_sources(request),
        filters={},
        statuses=STATUS_FILTERS,
        destinations=[],
        models=[],
    )


@router.get("/mappings")
def mappings(
    request: Request,
    person: Viewer,
    status: str | None = None,
    destination: str | None = None,
    model: str | None = None,
) -> Response:
    everything = services(request).history().mappings()
    shown = [
        m
        for m in everything
        if (not status or _status_of(m) == status)
        and (not destination or m.destination == destination)
        and (not model or m.model == model)
    ]
    return page(
        request,
        "mappings.html",
        person,
        destination=None,
        mappings=shown,
        sources=_sources(request),
        filters={"status": status, "destination": destination, "model": model},
        statuses=STATUS_FILTERS,
        destinations=sorted({m.destination for m in everything}),
        models=sorted({m.model for m in everything}),
    )


def _status_of(mapping: MappingView) -> str:
    if mapping.paused:
        return "paused"
    if mapping.last_run is None:
        return "never_run"
    return mapping.last_run.status.value


def _sources(request: Request) -> dict[str, str]:
    """Each model's source, for the mappings table."""
    return {m.name: m.source for m in services(request).catalog().models()}
