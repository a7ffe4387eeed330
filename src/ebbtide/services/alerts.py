"""Alerts after a run is committed: who is told what, once per incident (DESIGN inv. 10).

A mapping's incident opens with its first failing run and closes with its first success.
Within it, a run is news only when it brings an error group (class and message, as `runs
show` groups failures) or a run-level error the incident has not announced yet; the same
errors recurring, whatever the status, wait for a reminder after `alerts.remind_every`. The
first success closes the incident as `recovered`. A channel that fails is retried within a
bounded time, then recorded as a failed delivery: alerts never change a run's outcome.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from pydantic import ValidationError

from ebbtide.alerts.email import EmailNotifier
from ebbtide.alerts.http import SlackNotifier, WebhookNotifier
from ebbtide.alerts.message import AlertMessage, AlertTimeout, Notifier
from ebbtide.config.alerts import (
    DEFAULT_STATUSES,
    AlertStatus,
    Channel,
    SlackTarget,
    SubscriptionSpec,
)
from ebbtide.config.schedule import duration
from ebbtide.config.workspace import Workspace
from ebbtide.errors import ErrorClass, UsageError
from ebbtide.services.advice import recommended_action
from ebbtide.state.alerts import AlertState, Delivery
from ebbtide.state.store import SqlStateStore, utcnow
from ebbtide.values import FailureGroup, RunRecord, RunStatus, Trigger

if TYPE_CHECKING:
    from ebbtide.services.views import SubscriptionView

log = logging.getLogger(__name__)

ATTEMPTS = 3
RUN_LEVEL = "run"  # the error class a run-level error is grouped under


@dataclass(frozen=True)
class _Route:
    channel: Channel
    subscription: SubscriptionSpec


@dataclass(frozen=True)
class _Errors:
    """What went wrong in a run, by fingerprint, with the text a person reads."""

    by_fingerprint: dict[str, str]  # "" for the run-level error: the alert shows it already

    @classmethod
    def of(cls, run: RunRecord, groups: list[FailureGroup]) -> _Errors:
        named = {
            fingerprint(g.error_class, g.message): f"{g.error_class} · {g.message}" for g in groups
        }
        if run.error or (not named and run.status is RunStatus.FAILED):
            named[fingerprint(RUN_LEVEL, run.error or "failed")] = ""
        return cls(named)

    def new(self, announced: frozenset[str]) -> dict[str, str]:
        return {f: text for f, text in self.by_fingerprint.items() if f not in announced}


def fingerprint(error_class: str, message: str) -> str:
    """A short, stable name for an error group, kept in the alert state."""
    return hashlib.sha256(f"{error_class}\n{message}".encode()).hexdigest()[:16]


@dataclass(frozen=True)
class _Event:
    status: AlertStatus
    reminder: bool = False
    new_errors: tuple[str, ...] = ()


class AlertService:
    """Decides whether a run is news, and tells every subscriber through their channels."""

    def __init__(
        self,
        workspace: Workspace,
        state: SqlStateStore,
        retry_delay_s: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.workspace, self.state = workspace, state
        self.book = state.alerts
        self.retry_delay_s, self.sleep, self.clock = retry_delay_s, sleep, clock

    # -- after a run ---------------------------------------------------------------------

    def after_run(self, run: RunRecord) -> list[Delivery]:
        """Send what the run calls for; never raises (a failing channel is only recorded)."""
        try:
            if run.trigger == Trigger.RESET:
                return []
            groups = self.state.failure_groups(run.id, samples=0) if run.failed else []
            event = self._event(run, _Errors.of(run, groups))
            if event is None:
                return []
            return self._dispatch(self._message(run, event, groups))
        except Exception:  # noqa: BLE001 - alerts must never break a sync
            log.exception("alerts for run %s could not be sent", run.id)
            return []

    def _event(self, run: RunRecord, errors: _Errors) -> _Event | None:
        """The alert this run calls for, updating the mapping's incident."""
        now = self.clock()
        state = self.book.state(run.mapping)
        incident = state if state is not None and state.failing else None
        if run.status is RunStatus.SUCCESS:
            if incident is None:
                return None
            self.book.set_state(run.mapping, AlertState(False, now, now))
            return _Event(AlertStatus.RECOVERED)
        if not self._failing(run):
            return None  # cancelled, interrupted, or a partial success under the threshold
        status = AlertStatus(run.status.value)
        announced = incident.announced if incident else frozenset()
        new = errors.new(announced)
        since = incident.since if incident else now
        if new or incident is None:
            told = AlertState(True, since, now, status, announced | new.keys())
            self.book.set_state(run.mapping, told)
            listed = tuple(text for text in new.values() if text) if incident else ()
            return _Event(status, new_errors=listed)
        if not self._reminder_due(incident, now):
            return None
        self.book.set_state(run.mapping, AlertState(True, since, now, status, announced))
        return _Event(status, reminder=True)

    def _reminder_due(self, incident: AlertState, now: datetime) -> bool:
        remind = duration(self.workspace.spec.alerts.remind_every)
        return incident.last_alert_at is None or now - incident.last_alert_at >= remind

    def _failing(self, run: RunRecord) -> bool:
        """A failed run is failing; a partial success only past the mapping's threshold."""
        if run.status is RunStatus.FAILED:
            return True
        if run.status is not RunStatus.PARTIAL_SUCCESS:
            return False
        spec = self.workspace.spec.mappings.get(run.mapping)
        threshold = spec.alert_min_failed_pct if spec else 0.0
        sent = run.loaded_new + run.loaded_updated + run.loaded_deleted + run.failed
        share = 100.0 * run.failed / sent if sent else 0.0
        return share >= threshold

    def _message(self, run: RunRecord, event: _Event, groups: list[FailureGroup]) -> AlertMessage:
        top_error = action = None
        if groups and event.status is not AlertStatus.RECOVERED:
            top = groups[0]
            top_error = f"{top.error_class} · {top.count:,} record(s) · {top.message}"
            action = recommended_action(
                self.workspace, run.mapping, ErrorClass(top.error_class), top.message
            )
        base = self.workspace.spec.alerts.base_url
        redact = self.workspace.redact
        return AlertMessage(
            event=str(event.status),
            mapping=run.mapping,
            run_id=run.id,
            status=str(run.status),
            counts={
                "extracted": run.extracted,
                "added": run.added,
                "updated": run.updated,
                "deleted": run.deleted,
                "loaded": run.loaded_new + run.loaded_updated + run.loaded_deleted,
                "failed": run.failed,
            },
            error=redact(run.error) if run.error else None,
            top_error=redact(top_error) if top_error else None,
            action=redact(action) if action else None,  # advice may quote a destination's text
            url=f"{base.rstrip('/')}/runs/{run.id}" if base else None,
            reminder=event.reminder,
            new_errors=tuple(redact(e) for e in event.new_errors),
        )

    # -- delivering ----------------------------------------------------------------------

    def subscriptions(self) -> list[SubscriptionSpec]:
        """Declared in the workspace, then kept in the state store."""
        stored = [s.spec for s in self.book.subscriptions()]
        return [*self.workspace.spec.alerts.subscriptions, *stored]

    def _routes(self, event: str, mapping: str) -> list[_Route]:
        return [
            _Route(channel, sub)
            for sub in self.subscriptions()
            if (event == "test" or event in sub.statuses)
            and (event == "test" or sub.mappings is None or mapping in sub.mappings)
            for channel in sub.delivered_by
        ]

    def _dispatch(self, message: AlertMessage, channel: Channel | None = None) -> list[Delivery]:
        deliveries = []
        for route in self._routes(message.event, message.mapping):
            if channel is not None and route.channel is not channel:
                continue
            if route.channel is Channel.IN_APP:
                deliveries += self._in_app(message, route.subscription)
            else:
                deliveries.append(self._deliver(message, route))
        return deliveries

    def _in_app(self, message: AlertMessage, sub: SubscriptionSpec) -> list[Delivery]:
        now = utcnow()
        deliveries = []
        for email in sub.email or []:
            self.book.notify(
                email,
                message.run_id,
                message.mapping,
                message.event,
                message.title,
                message.text(),
                now,
            )
            deliveries.append(self._log(message, Channel.IN_APP, email, None, 1))
        return deliveries

    def _deliver(self, message: AlertMessage, route: _Route) -> Delivery:
        """Up to ATTEMPTS tries, each and all of them bounded in time (`alerts.timeout_s`,
        `alerts.give_up_after_s`), so a channel that hangs cannot hold the sync."""
        try:
            notifier = self._notifier(route)
        except UsageError as exc:  # a set-up problem: trying again changes nothing
            return self._failed(message, route, str(exc), 1)
        limits = self.workspace.spec.alerts
        give_up_at = time.monotonic() + limits.give_up_after_s
        for attempt in range(1, ATTEMPTS + 1):
            left = max(give_up_at - time.monotonic(), 0.01)  # a late wake-up still tries
            try:
                notifier.send(message, min(limits.timeout_s, left))
                return self._log(message, route.channel, _target(route), None, attempt)
            except Exception as exc:  # noqa: BLE001 - SMTP, HTTP, DNS: all recorded alike
                error = self._masked(_describe(exc, notifier), route)
            wait = self.retry_delay_s * 2 ** (attempt - 1)
            if attempt == ATTEMPTS or time.monotonic() + wait >= give_up_at:
                break
            self.sleep(wait)
        return self._failed(message, route, error, attempt)

    def _failed(self, message: AlertMessage, route: _Route, error: str, attempts: int) -> Delivery:
        log.warning("alert to %s by %s failed: %s", _target(route), route.channel, error)
        return self._log(message, route.channel, _target(route), error, attempts)

    def _masked(self, text: str, route: _Route) -> str:
        """Secrets out of an error: `${VAR}` values, and the path of a Slack or webhook URL
        (it holds the token, and servers repeat it in their errors)."""
        sub = route.subscription
        url = sub.slack.webhook_url if sub.slack else sub.webhook.url if sub.webhook else None
        path = urlsplit(url).path if url else ""
        return self.workspace.redact.with_values([path] if len(path) > 1 else [])(text)

    def _notifier(self, route: _Route) -> Notifier:
        sub = route.subscription
        if route.channel is Channel.SLACK:
            assert sub.slack is not None
            return SlackNotifier(sub.slack)
        if route.channel is Channel.WEBHOOK:
            assert sub.webhook is not None
            return WebhookNotifier(sub.webhook)
        smtp = self.workspace.spec.alerts.email
        if smtp is None:
            raise UsageError("email alerts need the SMTP server: add alerts.email")
        return EmailNotifier(smtp, list(sub.email or []))

    def _log(
        self, message: AlertMessage, channel: Channel, target: str, error: str | None, attempts: int
    ) -> Delivery:
        delivery = Delivery(
            run_id=message.run_id,
            mapping=message.mapping,
            event=message.event,
            channel=str(channel),
            target=target,
            delivered=error is None,
            attempts=attempts,
            error=error,
            created_at=utcnow(),
        )
        self.book.record_delivery(delivery)
        return delivery

    # -- for the CLI ---------------------------------------------------------------------

    def test(self, channel: Channel) -> list[Delivery]:
        """A sample alert through every subscription of `channel`, to check the set-up."""
        sample = AlertMessage(
            event="test",
            mapping="(test)",
            run_id=None,
            status="test",
            counts={"extracted": 1000, "added": 10, "loaded": 9, "failed": 1},
            top_error="validation · 1 record(s) · email: not a valid address",
            action="This is a test alert from `ebbtide alerts test`; nothing failed.",
        )
        deliveries = self._dispatch(sample, channel)
        if not deliveries:
            raise UsageError(f"no subscription delivers by {channel}: nothing to test")
        return deliveries

    def subscribe(
        self,
        email: str,
        statuses: list[AlertStatus] | None = None,
        channels: list[Channel] | None = None,
        mappings: list[str] | None = None,
        owner: str | None = None,
    ) -> tuple[int, SubscriptionSpec]:
        """Sign a person up for alerts, kept in the state store: (its number, what it is)."""
        spec = self.email_spec(email, statuses, channels, mappings)
        return self.book.subscribe(spec, self.clock(), owner), spec

    def email_spec(
        self,
        email: str,
        statuses: list[AlertStatus] | None = None,
        channels: list[Channel] | None = None,
        mappings: list[str] | None = None,
    ) -> SubscriptionSpec:
        """An email or in-app subscription, checked (UsageError says what is wrong)."""
        for name in mappings or []:
            self.workspace.mapping(name)
        spec = _checked(
            lambda: SubscriptionSpec(
                email=[email],
                statuses=statuses or list(DEFAULT_STATUSES),
                mappings=mappings or None,
                channels=channels or [Channel.EMAIL],
            )
        )
        if Channel.EMAIL in spec.delivered_by and self.workspace.spec.alerts.email is None:
            raise UsageError("email alerts need the SMTP server: add alerts.email to ebbtide.yml")
        return spec

    def slack_spec(
        self,
        webhook_url: str,
        channel: str,
        statuses: list[AlertStatus] | None = None,
        mappings: list[str] | None = None,
    ) -> SubscriptionSpec:
        """A Slack subscription, checked (UsageError says what is wrong)."""
        for name in mappings or []:
            self.workspace.mapping(name)
        problem = webhook_url_problem(webhook_url)
        if problem:
            raise UsageError(problem)
        if not channel.strip():
            raise UsageError("name the Slack channel the alerts go to, such as #data-alerts")
        return _checked(
            lambda: SubscriptionSpec(
                slack=SlackTarget(webhook_url=webhook_url.strip(), channel=channel.strip()),
                statuses=statuses or list(DEFAULT_STATUSES),
                mappings=mappings or None,
            )
        )

    def listed(self) -> list[SubscriptionView]:
        """Every subscription: those in ebbtide.yml, then those in the state store."""
        from ebbtide.services.views import SubscriptionView  # pydantic views: only when shown

        rows = [("ebbtide.yml", s) for s in self.workspace.spec.alerts.subscriptions]
        rows += [(str(s.id), s.spec) for s in self.book.subscriptions()]
        return [
            SubscriptionView(
                id=where,
                to=subscriber(spec),
                statuses=[str(s) for s in spec.statuses],
                mappings=spec.mappings,
                channels=[str(c) for c in spec.delivered_by],
            )
            for where, spec in rows
        ]

    def emails(self) -> list[str]:
        """Every address currently signed up to receive notifications by email."""
        return sorted(
            {
                a
                for s in self.subscriptions()
                if Channel.EMAIL in s.delivered_by
                for a in s.email or []
            }
        )


def _checked(make: Callable[[], SubscriptionSpec]) -> SubscriptionSpec:
    try:
        return make()
    except ValidationError as exc:
        reason = str(exc.errors()[0]["msg"]).removeprefix("Value error, ")
        raise UsageError(reason) from None


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def webhook_url_problem(url: str) -> str | None:
    """Why a Slack webhook URL will not do, or None. Only https leaves the machine: the URL is
    a secret, and plain http would show it to every hop (http is kept for a loopback test)."""
    parts = urlsplit(url.strip())
    if not parts.scheme or not parts.hostname:
        return "enter the full webhook URL, such as https://hooks.slack.com/services/…"
    if parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS):
        return None
    return "the webhook URL must start with https:// (http:// only for 127.0.0.1 or localhost)"


def masked_url(url: str) -> str:
    """A secret URL as pages show it: its scheme and host only."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}/…"


def _describe(exc: Exception, notifier: Notifier) -> str:
    """What failed, for the delivery log: the channel first, and never an empty text."""
    if isinstance(exc, AlertTimeout):
        return f"{notifier.label}: {exc}"
    detail = str(exc) or f"no details, talking to {notifier.endpoint}"
    return f"{notifier.label}: {type(exc).__name__}: {detail}"


def _target(route: _Route) -> str:
    """Who a route reaches, as the log shows it: never a URL, which may hold a token."""
    sub = route.subscription
    if sub.slack:
        return sub.slack.channel
    if sub.webhook:
        return "webhook"
    return ", ".join(sub.email or [])


def subscriber(spec: SubscriptionSpec) -> str:
    """Who a subscription reaches, as lists show it: never a URL, which may hold a token."""
    if spec.slack:
        return f"slack {spec.slack.channel}"
    if spec.webhook:
        return "webhook"
    return ", ".join(spec.email or [])
