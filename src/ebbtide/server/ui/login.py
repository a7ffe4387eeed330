"""Log in and log out."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Form, Request
from starlette.responses import RedirectResponse, Response

from ebbtide.server.ui.render import page, when
from ebbtide.server.ui.session import (
    CSRF_FIELD,
    Viewer,
    csrf_token,
    current_person,
    safe_next,
    start_session,
    user_book,
)

router = APIRouter()


@router.get("/login")
def login_form(request: Request, next: str = "/") -> Response:
    if current_person(request) is not None:
        return RedirectResponse(safe_next(next), status_code=303)
    return page(request, "login.html", None, next=safe_next(next), login_csrf=csrf_token(request))


@router.post("/login")
def log_in(
    request: Request,
    email: Annotated[str, Form()],
    password: Annotated[str, Form()],
    csrf_token_field: Annotated[str, Form(alias=CSRF_FIELD)] = "",
    next: Annotated[str, Form()] = "/",
) -> Response:
    expected = request.session.get("csrf")
    if not isinstance(expected, str) or not secrets.compare_digest(csrf_token_field, expected):
        return _again(request, next, email, "The login form expired. Please log in again.", 403)
    outcome = user_book(request).log_in(email, password, datetime.now(UTC))
    if outcome.user is None:
        if outcome.locked_until is not None:
            message = (
                "Too many failed logins: this account is locked until"
                f" {when(outcome.locked_until)}. An admin can unlock it with"
                " `ebbtide users set-password`."
            )
        else:
            message = "Wrong email or password."
        return _again(request, next, email, message, 401)
    start_session(request, outcome.user)
    return RedirectResponse(safe_next(next), status_code=303)


def _again(request: Request, next: str, email: str, message: str, status: int) -> Response:
    return page(
        request,
        "login.html",
        None,
        status_code=status,
        next=safe_next(next),
        email=email,
        error=message,
        login_csrf=csrf_token(request),
    )


@router.post("/logout")
def log_out(request: Request, person: Viewer) -> Response:
    request.session.clear()
    return RedirectResponse("/login", status_code=303)
