"""The `alerts:` section of `ebbtide.yml`: where failed and partially successful syncs are told."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ebbtide.config.schedule import Duration

# In `ebbtide.enums`, so that the CLI offers them without pydantic; named here as before.
from ebbtide.enums import AlertStatus as AlertStatus
from ebbtide.enums import Channel as Channel


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class SmtpSpec(_Spec):
    """`email: {host, port, user, password, from, tls}`: the SMTP server alerts go through."""

    host: str
    port: int = Field(default=587, ge=1, le=65535)
    user: str | None = Field(default=None, repr=False)
    password: str | None = Field(default=None, repr=False)
    sender: str = Field(alias="from")
    tls: Literal["none", "starttls", "ssl"] = "starttls"
    # Tighter than `alerts.timeout_s` for this server alone; never looser.
    timeout_s: float | None = Field(default=None, gt=0)


class SlackTarget(_Spec):
    """An incoming webhook of a Slack workspace, and the channel it posts to."""

    webhook_url: str = Field(repr=False)
    channel: str


class WebhookTarget(_Spec):
    """A URL that gets each alert as a JSON body."""

    url: str = Field(repr=False)
    headers: dict[str, str] = Field(default_factory=dict, repr=False)


DEFAULT_STATUSES = [AlertStatus.FAILED, AlertStatus.PARTIAL_SUCCESS]


class SubscriptionSpec(_Spec):
    """Who hears about which statuses of which mappings, and how.

    Exactly one of `email` (one address or several, for a person or an alias), `slack` or
    `webhook`. An email subscription is delivered by `channels` (default: email; `in_app`
    keeps a notification for the person).
    """

    email: list[str] | None = None
    slack: SlackTarget | None = None
    webhook: WebhookTarget | None = None
    statuses: list[AlertStatus] = Field(default_factory=lambda: list(DEFAULT_STATUSES))
    mappings: list[str] | None = None  # None: every mapping
    channels: list[Channel] | None = None

    @field_validator("email", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _one_target(self) -> SubscriptionSpec:
        given = [k for k in ("email", "slack", "webhook") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError("a subscription names exactly one of email, slack or webhook")
        if self.channels and not self.email:
            raise ValueError("channels apply to email subscriptions (email, in_app)")
        if self.channels and not set(self.channels) <= {Channel.EMAIL, Channel.IN_APP}:
            raise ValueError("an email subscription is delivered by email or in_app")
        for address in self.email or []:
            if "@" not in address:
                raise ValueError(f"{address!r} is not an email address")
        return self

    @property
    def delivered_by(self) -> list[Channel]:
        if self.slack:
            return [Channel.SLACK]
        if self.webhook:
            return [Channel.WEBHOOK]
        return list(self.channels or [Channel.EMAIL])


class AlertsSpec(_Spec):
    """`alerts:` as a whole."""

    email: SmtpSpec | None = None
    base_url: str | None = None  # where `ebbtide serve` runs: alerts link to the run
    # A mapping that keeps failing is reminded about at most this often.
    remind_every: Duration = "6h"
    # A hanging channel must not hold a sync: each attempt (connect and send) ends within
    # `timeout_s`, and all attempts of one delivery, waits included, within `give_up_after_s`.
    timeout_s: float = Field(default=10.0, gt=0)
    give_up_after_s: float = Field(default=30.0, gt=0)
    subscriptions: list[SubscriptionSpec] = Field(default_factory=list)

    @model_validator(mode="after")
    def _smtp_for_email(self) -> AlertsSpec:
        wants_email = any(Channel.EMAIL in s.delivered_by for s in self.subscriptions)
        if wants_email and self.email is None:
            raise ValueError("email subscriptions need the SMTP server: add alerts.email")
        return self
