"""`/healthz` (the process answers) and `/readyz` (it can do its work); no token needed."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from ebbtide.server.api.context import Services

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "not ready, and why"}})
def readyz(found: Services) -> JSONResponse:
    """Ready when the state store answers and the workspace as last edited is valid."""
    problem = found.not_ready()
    if problem is not None:
        return JSONResponse({"status": "not ready", "error": problem}, 503)
    return JSONResponse({"status": "ready"})
