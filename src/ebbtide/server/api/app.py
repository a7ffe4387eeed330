"""`create_app`: the REST API over one workspace's services, versioned under /api/v1."""

from __future__ import annotations

from fastapi import APIRouter, Depends, FastAPI

from ebbtide.server.api import actions, alerts, catalog, health, mappings, metrics, runs
from ebbtide.server.api.auth import caller
from ebbtide.server.api.context import ApiServices
from ebbtide.server.api.errors import install_handlers
from ebbtide.server.ui.app import create_ui

PREFIX = "/api/v1"


def create_app(services: ApiServices) -> FastAPI:
    """The API; every /api/v1 route needs a bearer token; /healthz, /readyz and /metrics
    none. With users to log in, the web UI answers every other path."""
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
    app.include_router(metrics.router)
    v1 = APIRouter(prefix=PREFIX, dependencies=[Depends(caller)])
    for resource in (mappings, runs, catalog, alerts, actions):
        v1.include_router(resource.router)
    app.include_router(v1)
    if services.users is not None and services.session_key is not None:
        # Last: every path the API does not answer is the web UI's.
        app.mount("/", create_ui(services, services.users, services.session_key()))
    return app
