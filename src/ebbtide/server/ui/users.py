"""Settings → Users (admins only): who may log in, with which role.

An admin changes everyone but themselves: so at least one admin always remains, and nobody
locks themselves out by a slip. Every change ends the person's sessions (their next click
asks for a login: the session epoch moves), and is recorded in the actions log.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Form, Request
from starlette.responses import RedirectResponse, Response

from ebbtide.errors import UsageError
from ebbtide.server.ui.render import flash, page
from ebbtide.server.ui.session import Admin, Forbidden, Person, services, user_book
from ebbtide.state.users import Role

router = APIRouter()

USERS = "/settings/users"


@router.get(USERS)
def users(request: Request, person: Admin) -> Response:
    return page(request, "users.html", person, users=user_book(request).listed(), roles=list(Role))


@router.post(USERS + "/role")
def change_role(
    request: Request,
    person: Admin,
    email: Annotated[str, Form()],
    role: Annotated[str, Form()],
) -> Response:
    _not_self(person, email)
    if role not in Role.__members__.values():
        raise UsageError(f"no role {role!r}: admin, editor or viewer")
    changed = user_book(request).set_role(email, Role(role))
    _record(request, person, "set_role", f"{changed.email}: {changed.role.value}")
    flash(request, f"{changed.email} is now {changed.role.value}.", "info")
    return RedirectResponse(USERS, status_code=303)


@router.post(USERS + "/disabled")
def disable_or_enable(
    request: Request,
    person: Admin,
    email: Annotated[str, Form()],
    disabled: Annotated[bool, Form()],
) -> Response:
    _not_self(person, email)
    changed = user_book(request).set_disabled(email, disabled)
    what = "disabled" if changed.disabled else "enabled"
    _record(request, person, "disable_user" if changed.disabled else "enable_user", changed.email)
    flash(request, f"{changed.email} is {what}.", "info")
    return RedirectResponse(USERS, status_code=303)


def _not_self(person: Person, email: str) -> None:
    if email.strip().lower() == person.email:
        raise Forbidden("You cannot change your own account here: ask another admin.")


def _record(request: Request, person: Person, action: str, detail: str) -> None:
    services(request).schedules().actions.record(
        datetime.now(UTC), person.actor, action, detail=detail
    )
