"""`/api/v1/alerts` and `/api/v1/notifications`: who hears about failed syncs, and the in-app
notifications people read."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field, field_validator, model_validator

from ebbtide.config.alerts import AlertStatus, Channel
from ebbtide.errors import UsageError
from ebbtide.server.api.auth import Writer
from ebbtide.server.api.context import AlertsDep, ItemId, SchedulesDep
from ebbtide.services.alerts import webhook_url_problem
from ebbtide.services.views import NotificationView, SubscriptionView

router = APIRouter(tags=["alerts"])


class SlackBody(BaseModel):
    webhook_url: str = Field(description="The incoming webhook (https); never given back.")
    channel: str = Field(description="The channel it posts to, such as #data-alerts.")

    @field_validator("webhook_url")
    @classmethod
    def _https(cls, url: str) -> str:
        problem = webhook_url_problem(url)
        if problem:
            raise ValueError(problem)
        return url


class SubscriptionBody(BaseModel):
    email: str | None = Field(default=None, description="A person or alias, by email address.")
    slack: SlackBody | None = Field(default=None, description="Or a Slack channel instead.")
    statuses: list[AlertStatus] | None = Field(
        default=None, description="failed, partial_success, recovered (default: the first two)"
    )
    channels: list[Channel] | None = Field(default=None, description="email and/or in_app")
    mappings: list[str] | None = Field(default=None, description="only these (default: all)")

    @model_validator(mode="after")
    def _one_target(self) -> SubscriptionBody:
        if (self.email is None) == (self.slack is None):
            raise ValueError("give either email (a person or alias) or slack")
        if self.slack is not None and self.channels:
            raise ValueError("a Slack subscription is delivered by Slack: leave out channels")
        return self


class ReadBody(BaseModel):
    email: str


class MarkedView(BaseModel):
    email: str
    marked_read: int


@router.get("/alerts/subscriptions")
def subscriptions(alerts: AlertsDep) -> list[SubscriptionView]:
    """Every subscription: those in ebbtide.yml, then those kept in the state store."""
    return alerts.listed()


@router.post("/alerts/subscriptions", status_code=201)
def subscribe(
    body: SubscriptionBody, holder: Writer, alerts: AlertsDep, schedules: SchedulesDep
) -> SubscriptionView:
    if body.slack is not None:
        spec = alerts.slack_spec(
            body.slack.webhook_url, body.slack.channel, body.statuses, body.mappings
        )
        number = alerts.book.subscribe(spec, alerts.clock())
        detail = f"slack {body.slack.channel}"
    else:
        assert body.email is not None
        number, _ = alerts.subscribe(body.email, body.statuses, body.channels, body.mappings)
        detail = body.email
    schedules.actions.record(datetime.now(UTC), f"api: {holder.label}", "subscribe", detail=detail)
    return next(s for s in alerts.listed() if s.id == str(number))


@router.delete("/alerts/subscriptions/{number}")
def unsubscribe(
    number: ItemId, holder: Writer, alerts: AlertsDep, schedules: SchedulesDep
) -> dict[str, int]:
    """Remove a subscription kept in the state store (those in ebbtide.yml live in Git)."""
    if not alerts.book.unsubscribe(subscription_id=number):
        raise UsageError(f"no subscription {number} in the state store")
    schedules.actions.record(
        datetime.now(UTC), f"api: {holder.label}", "unsubscribe", detail=str(number)
    )
    return {"removed": number}


@router.get("/alerts/emails")
def emails(alerts: AlertsDep) -> list[str]:
    """The email addresses currently signed up to receive notifications."""
    return alerts.emails()


@router.get("/notifications")
def notifications(
    alerts: AlertsDep,
    email: Annotated[str, Query(description="whose notifications")],
    unread: bool = False,
) -> list[NotificationView]:
    """A person's in-app notifications, newest first."""
    found = alerts.book.notifications(email, unread_only=unread)
    return [NotificationView.of(n) for n in found]


@router.post("/notifications/read")
def mark_read(body: ReadBody, holder: Writer, alerts: AlertsDep) -> MarkedView:
    """Mark every notification of the person read."""
    return MarkedView(
        email=body.email, marked_read=alerts.book.mark_read(body.email, datetime.now(UTC))
    )
