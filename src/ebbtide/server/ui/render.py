"""Pages from the templates: every page gets the person, their CSRF token, the bell's unread
count, the workspace error (if serve refused the last edit) and the messages of the last
action; times, durations and counts are written the same way on every page."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import Request
from fastapi.templating import Jinja2Templates
from starlette.responses import Response

from ebbtide.server.ui.session import Person, services

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")


def page(
    request: Request,
    template: str,
    person: Person | None,
    status_code: int = 200,
    **context: Any,
) -> Response:
    """`template` rendered for `person` (None: the login page)."""
    found = services(request)
    unread = 0
    if person is not None:
        unread = len(found.alerts().book.notifications(person.email, unread_only=True))
    return templates.TemplateResponse(
        request,
        template,
        {
            "person": person,
            "csrf": person.csrf if person else None,
            "unread": unread,
            "workspace_error": found.not_ready(),
            "flashes": request.session.pop("flash", []),
            **context,
        },
        status_code=status_code,
    )


def flash(request: Request, message: str, kind: str = "info") -> None:
    """A message shown once, on the next page (after the redirect that follows an action)."""
    request.session.setdefault("flash", [])
    request.session["flash"] = [*request.session["flash"], {"kind": kind, "text": message}]


def when(moment: datetime | str | None) -> str:
    """A time as the history records it (UTC), to the second."""
    if moment is None:
        return "—"
    found = datetime.fromisoformat(moment) if isinstance(moment, str) else moment
    return found.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {rest:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def number(value: int | float | None) -> str:
    if value is None:
        return "—"
    return f"{value:,}"


def status_label(status: object) -> str:
    """`partial_success` → `Partial success`: the words of the history, for people."""
    text = str(getattr(status, "value", status)).replace("_", " ")
    return text[:1].upper() + text[1:]


def query(request: Request, **changes: object) -> str:
    """The current URL's query with `changes` (None removes a key): filters stay in the URL."""
    params = {k: v for k, v in request.query_params.items()}
    for key, value in changes.items():
        if value is None or value == "":
            params.pop(key, None)
        else:
            params[key] = str(value)
    return "?" + urlencode(params) if params else request.url.path


def pretty_json(text: str | None) -> str:
    """A payload as stored (JSON text, masked), indented for reading."""
    if text is None:
        return ""
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except ValueError:
        return text


templates.env.filters.update(
    when=when, duration=duration, number=number, status_label=status_label, pretty=pretty_json
)
templates.env.globals.update(query=query)
