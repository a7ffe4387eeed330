"""`create_ui`: the web UI, a FastAPI app mounted at `/` beside the REST API.

Its own app, so that its errors are pages (the API's are JSON) and the session cookie exists
only where people log in.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.staticfiles import StaticFiles
from starlette.middleware.sessions import SessionMiddleware
from starlette.responses import RedirectResponse, Response

from ebbtide.errors import ConflictError, EbbtideError, MappingBusyError, StorageError, UsageError
from ebbtide.server.api.context import ApiServices
from ebbtide.server.ui import alerts, login, mapping, mappings, runs, timeline
from ebbtide.server.ui import users as user_pages
from ebbtide.server.ui.render import HERE, page
from ebbtide.server.ui.session import (
    SESSION_MAX_AGE_S,
    Forbidden,
    LoginRequired,
    current_person,
    login_url,
)
from ebbtide.state.users import UserBook


def create_ui(services: ApiServices, users: UserBook, session_key: str) -> FastAPI:
    ui = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    ui.state.services = services
    ui.state.users = users
    ui.add_middleware(
        SessionMiddleware,
        secret_key=session_key,
        session_cookie="ebbtide_session",
        max_age=SESSION_MAX_AGE_S,
        same_site="lax",
    )
    ui.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    for pages in (login, mappings, mapping, runs, timeline, alerts, user_pages):
        ui.include_router(pages.router)
    ui.add_exception_handler(LoginRequired, _login_required)
    ui.add_exception_handler(Forbidden, _forbidden)
    ui.add_exception_handler(ConflictError, _conflict)
    ui.add_exception_handler(MappingBusyError, _conflict)
    ui.add_exception_handler(UsageError, _not_found)
    ui.add_exception_handler(EbbtideError, _failed)
    return ui


async def _login_required(request: Request, error: Exception) -> Response:
    assert isinstance(error, LoginRequired)
    target = login_url(error.next_url)
    if request.headers.get("hx-request"):
        # htmx would swap the login page into a fragment: have it load the page instead.
        return Response(status_code=204, headers={"HX-Redirect": target})
    return RedirectResponse(target, status_code=303)


def _error_page(request: Request, status: int, title: str, message: str) -> Response:
    return page(
        request,
        "error.html",
        current_person(request),
        status_code=status,
        title=title,
        message=message,
    )


async def _forbidden(request: Request, error: Exception) -> Response:
    assert isinstance(error, Forbidden)
    return _error_page(request, 403, "Not allowed", error.message)


async def _conflict(request: Request, error: Exception) -> Response:
    return _error_page(request, 409, "Not now", str(error))


async def _not_found(request: Request, error: Exception) -> Response:
    return _error_page(request, 404, "Not found", str(error))


async def _failed(request: Request, error: Exception) -> Response:
    status = 503 if isinstance(error, StorageError) else 500
    return _error_page(request, status, "Something went wrong", str(error))
