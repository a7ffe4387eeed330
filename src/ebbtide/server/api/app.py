"""`create_app`: the REST API over one workspace's services, versioned under /api/v1."""

from __future__ import annotations

from fastapi import APIRouter, Depends, FastAPI

from ebbtide.server.api import health, mappings, runs
from ebbtide.server.api.auth import caller
from ebbtide.server.api.context import ApiServices
from ebbtide.server.api.errors import install_handlers

PREFIX = "/api/v1"


def create_app(services: ApiServices) -> FastAPI:
    """The API; every /api/v1 route needs a bearer token, /healthz none."""
    app = FastAPI(
        title="ebbtide",
        summary="Reverse ETL: mappings, syncs and their history.",
        version="1",
        openapi_url=f"{PREFIX}/openapi.json",
        docs_url=f"{PREFIX}/docs",
        redoc_url=None,
    )
    app.state.services = services
    install_handlers(app)
    app.include_router(health.router)
    v1 = APIRouter(prefix=PREFIX, dependencies=[Depends(caller)])
    v1.include_router(mappings.router)
    v1.include_router(runs.router)
    app.include_router(v1)
    return app
