"""`GET /metrics`: Prometheus's text format (no token, as scrapers expect; names only)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from ebbtide.server.api.context import Services
from ebbtide.server.metrics import CONTENT_TYPE

router = APIRouter(tags=["health"])


@router.get("/metrics", response_class=Response)
def metrics(found: Services) -> Response:
    """Runs by mapping and status, records loaded and failed by destination and class, run
    durations, syncs waiting, and seconds since each mapping's last success."""
    return Response(found.metrics().render(), media_type=CONTENT_TYPE)
