"""A record's timeline: every sync that sent one key, what it sent and what became of it, and
whether the destination holds it now (none of the commercial tools shows this)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from ebbtide.server.ui.render import page
from ebbtide.server.ui.session import Viewer, services

router = APIRouter()


@router.get("/mappings/{name}/timeline")
def timeline(request: Request, name: str, person: Viewer, key: str | None = None) -> Response:
    """The form, and with `?key=` (a composite key as JSON: `["eu", 42]`) the key's syncs."""
    history = services(request).history()
    mapping = history.mapping(name)  # an unknown mapping is a 404 page, key or not
    wanted = (key or "").strip()
    found = history.key_history(name, wanted) if wanted else None
    return page(request, "timeline.html", person, mapping=mapping, key=wanted, history=found)
