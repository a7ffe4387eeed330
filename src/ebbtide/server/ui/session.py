"""Who is logged in, what their role lets them do, and the CSRF token every form carries.

The session is a signed, HttpOnly, SameSite cookie (Starlette's SessionMiddleware) holding the
user's id, the user's `session_epoch` when they logged in, and the CSRF token. Each request
reads the user again: a disabled user, or one whose role or password changed since, is logged
out at their next click.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import quote, urlsplit

from fastapi import Depends, Request

from ebbtide.server.api.context import ApiServices
from ebbtide.state.users import Role, User, UserBook

CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
# A login lasts this long without a new login (the cookie's max age, in seconds).
SESSION_MAX_AGE_S = 12 * 3600


class LoginRequired(Exception):
    """No valid session: go to the login page, then back to `next_url`."""

    def __init__(self, next_url: str) -> None:
        super().__init__(next_url)
        self.next_url = next_url


class Forbidden(Exception):
    """The session is valid, but the request is not allowed (role, or a missing CSRF token)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Person:
    """The logged-in user, as pages and actions need them."""

    user: User
    csrf: str

    @property
    def email(self) -> str:
        return self.user.email

    @property
    def role(self) -> Role:
        return self.user.role

    def may(self, needed: Role | str) -> bool:
        return self.user.role.may(Role(needed))

    @property
    def actor(self) -> str:
        """Who did it, as the history records an action."""
        return self.user.email


def services(request: Request) -> ApiServices:
    found: ApiServices = request.app.state.services
    return found


def user_book(request: Request) -> UserBook:
    book: UserBook = request.app.state.users
    return book


def csrf_token(request: Request) -> str:
    """The session's CSRF token, made when the session starts (the login form has one too)."""
    token = request.session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        request.session["csrf"] = token
    return token


def start_session(request: Request, user: User) -> None:
    """A fresh session for `user`: a new CSRF token, so one seen before login is useless."""
    request.session.clear()
    request.session.update(uid=user.id, epoch=user.session_epoch, csrf=secrets.token_urlsafe(32))


def current_person(request: Request) -> Person | None:
    uid, epoch = request.session.get("uid"), request.session.get("epoch")
    if not isinstance(uid, int):
        return None
    user = user_book(request).get(uid)
    if user is None or user.disabled or user.session_epoch != epoch:
        request.session.clear()
        return None
    return Person(user, csrf_token(request))


def _next_url(request: Request) -> str:
    # An htmx request's own URL is a fragment: come back to the page it was made from.
    page = request.headers.get("hx-current-url")
    if page:
        parts = urlsplit(page)
        return f"{parts.path}?{parts.query}" if parts.query else parts.path
    query = f"?{request.url.query}" if request.url.query else ""
    return f"{request.url.path}{query}"


async def _checked_csrf(request: Request) -> None:
    """Every request that changes something carries the session's token, in the form or in
    the header htmx sends."""
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return
    given = request.headers.get(CSRF_HEADER)
    if given is None:
        form = await request.form()
        field = form.get(CSRF_FIELD)
        given = field if isinstance(field, str) else None
    expected = request.session.get("csrf")
    if not given or not isinstance(expected, str) or not secrets.compare_digest(given, expected):
        raise Forbidden(
            "This form has expired or did not come from this page (its security token is"
            " missing or wrong). Reload the page and try again."
        )


def require(role: Role) -> object:
    """A dependency: the logged-in person, who has at least `role`, and whose request (when it
    changes something) carries the CSRF token."""

    async def dependency(request: Request) -> Person:
        person = current_person(request)
        if person is None:
            raise LoginRequired(_next_url(request))
        await _checked_csrf(request)
        if not person.may(role):
            raise Forbidden(
                f"You are logged in as {person.email} ({person.role.value}); this needs the"
                f" {role.value} role. Ask an admin (`ebbtide users set-role`)."
            )
        return person

    return Depends(dependency)


Viewer = Annotated[Person, require(Role.VIEWER)]
Editor = Annotated[Person, require(Role.EDITOR)]
Admin = Annotated[Person, require(Role.ADMIN)]


def login_url(next_url: str) -> str:
    return f"/login?next={quote(next_url, safe='/')}"


def safe_next(next_url: str | None) -> str:
    """Only a path of this site: never a redirect to another host after login."""
    if not next_url or not next_url.startswith("/") or next_url.startswith("//"):
        return "/"
    if "\\" in next_url:
        return "/"
    return next_url
