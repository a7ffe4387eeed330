"""Settings → User preferences → Activity notifications → Reverse ETL (the alerts people sign
up for, as in Segment's flow), and the in-app notifications behind the bell.

A Slack webhook URL is a secret (its path is the token): pages show its host only, it is
never logged, and editing a Slack alert keeps it unless a new one is typed.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Form, Request
from starlette.responses import RedirectResponse, Response

from ebbtide.config.alerts import AlertStatus, Channel, SubscriptionSpec
from ebbtide.errors import UsageError
from ebbtide.server.ui.render import flash, page, templates
from ebbtide.server.ui.session import Editor, Forbidden, Person, Viewer, services
from ebbtide.services.alerts import masked_url, webhook_url_problem
from ebbtide.services.views import SubscriptionView
from ebbtide.state.alerts import StoredSubscription

router = APIRouter()

# One address (a person or an alias): something, @, a domain with a dot.
EMAIL = re.compile(r"[^@\s,;]+@[^@\s,;]+\.[^@\s,;]+")

SETTINGS = "/settings/notifications"
# The statuses the form offers, in Segment's words.
STATUS_CHOICES = [
    (AlertStatus.FAILED.value, "Sync failed"),
    (AlertStatus.PARTIAL_SUCCESS.value, "Sync partial success"),
]
CHANNEL_CHOICES = [
    (Channel.EMAIL.value, "Enable email notifications"),
    (Channel.SLACK.value, "Enable Slack notifications"),
    (Channel.IN_APP.value, "Enable in-app notifications"),
]


@dataclass
class AlertForm:
    """What the person typed and ticked, and what is wrong with it, by field. The webhook URL
    is never kept: a page sent back with an error must not carry the secret."""

    statuses: list[str] = field(default_factory=list)
    channels: list[str] = field(default_factory=list)
    email: str = ""
    slack_channel: str = ""
    mapping: str = ""
    errors: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Listed:
    """A subscription as the settings page lists it."""

    view: SubscriptionView
    stored: StoredSubscription | None  # None: declared in ebbtide.yml
    removable: bool
    slack_url: str | None  # masked


@router.get(SETTINGS)
def settings(request: Request, person: Viewer) -> Response:
    return _settings_page(request, person, AlertForm(email=person.email))


@router.get(f"{SETTINGS}/emails")
def active_emails(request: Request, person: Viewer) -> Response:
    """View active email addresses: a fragment for htmx, the whole page without it."""
    addresses = services(request).alerts().emails()
    if request.headers.get("hx-request"):
        return templates.TemplateResponse(request, "settings_emails.html", {"addresses": addresses})
    return _settings_page(request, person, AlertForm(email=person.email), addresses=addresses)


@router.post(SETTINGS)
def create_alert(
    request: Request,
    person: Editor,
    statuses: Annotated[list[str], Form()] = [],  # noqa: B006 - FastAPI copies defaults
    channels: Annotated[list[str], Form()] = [],  # noqa: B006
    email: Annotated[str, Form()] = "",
    slack_webhook_url: Annotated[str, Form()] = "",
    slack_channel: Annotated[str, Form()] = "",
    mapping: Annotated[str, Form()] = "",
) -> Response:
    form = AlertForm(statuses, channels, email.strip(), slack_channel.strip(), mapping)
    specs = _specs(request, person, form, slack_webhook_url)
    if form.errors:
        return _settings_page(request, person, form, status_code=422)
    alerts, now = services(request).alerts(), datetime.now(UTC)
    actions = services(request).schedules().actions
    for spec in specs:
        number = alerts.book.subscribe(spec, alerts.clock(), owner=person.email)
        actions.record(now, person.actor, "subscribe", detail=f"{number}: {_described(spec)}")
    flash(request, f"Alert created: {', '.join(_described(s) for s in specs)}.", "info")
    return RedirectResponse(SETTINGS, status_code=303)


@router.post(SETTINGS + "/{number}/delete")
def remove_alert(request: Request, number: int, person: Editor) -> Response:
    alerts = services(request).alerts()
    stored = alerts.book.subscription(number)
    if stored is None:
        raise UsageError(f"no alert {number} (alerts in ebbtide.yml are removed there)")
    if not _may_change(person, stored):
        raise Forbidden(f"Alert {number} is {stored.owned_by}'s: only they or an admin remove it.")
    alerts.book.unsubscribe(subscription_id=number)
    detail = f"{number}: {_described(stored.spec)}"
    services(request).schedules().actions.record(
        datetime.now(UTC), person.actor, "unsubscribe", detail=detail
    )
    flash(request, f"Alert removed: {_described(stored.spec)}.", "info")
    return RedirectResponse(SETTINGS, status_code=303)


@router.get(SETTINGS + "/{number}/edit")
def edit_form(request: Request, number: int, person: Editor) -> Response:
    stored = _changeable(request, number, person)
    spec = stored.spec
    form = AlertForm(
        statuses=[str(s) for s in spec.statuses],
        email=(spec.email or [""])[0],
        slack_channel=spec.slack.channel if spec.slack else "",
        mapping=(spec.mappings or [""])[0],
    )
    return _edit_page(request, person, stored, form)


@router.post(SETTINGS + "/{number}")
def edit_alert(
    request: Request,
    number: int,
    person: Editor,
    statuses: Annotated[list[str], Form()] = [],  # noqa: B006
    email: Annotated[str, Form()] = "",
    slack_webhook_url: Annotated[str, Form()] = "",
    slack_channel: Annotated[str, Form()] = "",
    mapping: Annotated[str, Form()] = "",
) -> Response:
    stored = _changeable(request, number, person)
    form = AlertForm(statuses, [], email.strip(), slack_channel.strip(), mapping)
    old = stored.spec
    chosen = _chosen_statuses(form)
    mappings = _chosen_mappings(request, form)
    alerts = services(request).alerts()
    spec: SubscriptionSpec | None = None
    if old.slack:
        # The secret stays unless a new one is typed.
        url = slack_webhook_url.strip() or old.slack.webhook_url
        spec = _try(form, "slack_webhook_url", alerts.slack_spec, url, form.slack_channel, chosen)
    else:
        channels = list(old.delivered_by)
        # In-app notifications are the person's own: only an email-only alert changes address.
        address = form.email if _address_editable(old) else (old.email or [""])[0]
        spec = _try(form, "email", alerts.email_spec, address, chosen, channels)
    if form.errors or spec is None:
        return _edit_page(request, person, stored, form, status_code=422)
    spec = spec.model_copy(update={"mappings": mappings})
    alerts.book.update(number, spec)
    services(request).schedules().actions.record(
        datetime.now(UTC), person.actor, "subscribe", detail=f"{number} changed: {_described(spec)}"
    )
    flash(request, f"Alert changed: {_described(spec)}.", "info")
    return RedirectResponse(SETTINGS, status_code=303)


# -- in-app notifications ------------------------------------------------------------------


@router.get("/notifications")
def notifications(request: Request, person: Viewer) -> Response:
    found = services(request).alerts().book.notifications(person.email)
    return page(request, "notifications.html", person, notifications=found)


@router.post("/notifications/read")
def mark_all_read(request: Request, person: Viewer) -> Response:
    """Mark all as read: a person's own notifications, so a viewer may too."""
    marked = services(request).alerts().book.mark_read(person.email, datetime.now(UTC))
    flash(request, f"{marked} notification(s) marked as read.", "info")
    return RedirectResponse("/notifications", status_code=303)


# -- helpers -------------------------------------------------------------------------------


def _specs(
    request: Request, person: Person, form: AlertForm, webhook_url: str
) -> list[SubscriptionSpec]:
    """The subscriptions the form asks for (email to the address typed, in-app to the person
    logged in, Slack to the webhook), with an error per field in `form.errors`."""
    chosen = _chosen_statuses(form)
    mappings = _chosen_mappings(request, form)
    wanted = {Channel(c) for c in form.channels if c in Channel.__members__.values()}
    if not wanted:
        form.errors["channels"] = "Choose at least one: email, Slack or in-app."
    alerts = services(request).alerts()
    specs: list[SubscriptionSpec | None] = []
    if Channel.EMAIL in wanted:
        if not form.email:
            form.errors["email"] = "Enter the email address or alias that should receive alerts."
        elif not EMAIL.fullmatch(form.email):
            form.errors["email"] = f"{form.email!r} is not an email address (name@example.com)."
        else:
            # One subscription when the address is the person's own: both by email and in-app.
            both = Channel.IN_APP in wanted and form.email.lower() == person.email
            channels = [Channel.EMAIL, Channel.IN_APP] if both else [Channel.EMAIL]
            specs.append(_try(form, "email", alerts.email_spec, form.email, chosen, channels))
            if both:
                wanted.discard(Channel.IN_APP)
    if Channel.IN_APP in wanted:
        specs.append(
            _try(form, "channels", alerts.email_spec, person.email, chosen, [Channel.IN_APP])
        )
    if Channel.SLACK in wanted:
        if not webhook_url.strip():
            form.errors["slack_webhook_url"] = "Enter the Slack webhook URL."
        elif problem := webhook_url_problem(webhook_url):
            form.errors["slack_webhook_url"] = _sentence(problem)
        if not form.slack_channel:
            form.errors["slack_channel"] = "Enter the Slack channel name, such as #data-alerts."
        if "slack_webhook_url" not in form.errors and "slack_channel" not in form.errors:
            specs.append(
                _try(
                    form,
                    "slack_webhook_url",
                    alerts.slack_spec,
                    webhook_url,
                    form.slack_channel,
                    chosen,
                )
            )
    return [s.model_copy(update={"mappings": mappings}) for s in specs if s is not None]


def _chosen_statuses(form: AlertForm) -> list[AlertStatus]:
    offered = {value for value, _ in STATUS_CHOICES}
    chosen = [AlertStatus(s) for s in form.statuses if s in offered]
    if not chosen:
        form.errors["statuses"] = "Choose at least one sync status to be alerted about."
    return chosen


def _chosen_mappings(request: Request, form: AlertForm) -> list[str] | None:
    if not form.mapping:
        return None
    names = {m.name for m in services(request).history().mappings()}
    if form.mapping not in names:
        form.errors["mapping"] = f"There is no mapping {form.mapping!r}."
        return None
    return [form.mapping]


def _try(
    form: AlertForm, where: str, make: Callable[..., SubscriptionSpec], *args: object
) -> SubscriptionSpec | None:
    """`make(*args)`, or None with its UsageError written next to the field `where`."""
    try:
        return make(*args)
    except UsageError as exc:
        form.errors.setdefault(where, _sentence(str(exc)))
        return None


def _sentence(text: str) -> str:
    text = text[:1].upper() + text[1:]
    return text if text.endswith(".") else f"{text}."


def _described(spec: SubscriptionSpec) -> str:
    """What an alert is, for the actions log and messages: never the webhook URL."""
    if spec.slack:
        to = f"Slack {spec.slack.channel}"
    else:
        by = " and ".join("in-app" if c is Channel.IN_APP else "email" for c in spec.delivered_by)
        to = f"{', '.join(spec.email or [])} by {by}"
    what = ", ".join(str(s) for s in spec.statuses)
    scope = ", ".join(spec.mappings) if spec.mappings else "every mapping"
    return f"{what} of {scope} to {to}"


def _address_editable(spec: SubscriptionSpec) -> bool:
    return spec.email is not None and spec.delivered_by == [Channel.EMAIL]


def _may_change(person: Person, stored: StoredSubscription) -> bool:
    return person.may("admin") or stored.owned_by == person.email


def _changeable(request: Request, number: int, person: Person) -> StoredSubscription:
    stored = services(request).alerts().book.subscription(number)
    if stored is None:
        raise UsageError(f"no alert {number} (alerts in ebbtide.yml are changed there)")
    if not _may_change(person, stored):
        raise Forbidden(f"Alert {number} is {stored.owned_by}'s: only they or an admin change it.")
    return stored


def _listed(request: Request, person: Person) -> list[Listed]:
    alerts = services(request).alerts()
    stored = {str(s.id): s for s in alerts.book.subscriptions()}
    rows = []
    for view in alerts.listed():
        found = stored.get(view.id)
        slack = found.spec.slack if found else None
        rows.append(
            Listed(
                view,
                found,
                found is not None and person.may("editor") and _may_change(person, found),
                masked_url(slack.webhook_url) if slack else None,
            )
        )
    return rows


def _settings_page(
    request: Request,
    person: Person,
    form: AlertForm,
    status_code: int = 200,
    addresses: list[str] | None = None,
) -> Response:
    return page(
        request,
        "settings_notifications.html",
        person,
        status_code=status_code,
        form=form,
        listed=_listed(request, person),
        addresses=addresses,
        mapping_names=sorted(m.name for m in services(request).history().mappings()),
        status_choices=STATUS_CHOICES,
        channel_choices=CHANNEL_CHOICES,
        smtp_ready=services(request).alerts().workspace.spec.alerts.email is not None,
    )


def _edit_page(
    request: Request,
    person: Person,
    stored: StoredSubscription,
    form: AlertForm,
    status_code: int = 200,
) -> Response:
    slack = stored.spec.slack
    return page(
        request,
        "settings_alert_edit.html",
        person,
        status_code=status_code,
        stored=stored,
        form=form,
        slack_url=masked_url(slack.webhook_url) if slack else None,
        address_editable=_address_editable(stored.spec),
        mapping_names=sorted(m.name for m in services(request).history().mappings()),
        status_choices=STATUS_CHOICES,
    )
