"""Alerts after a run is committed: who is told what, once per state change (DESIGN inv. 10).

A mapping that starts failing (or partly failing) is announced once; while it keeps failing,
a reminder goes out at most every `alerts.remind_every`; its first success after that is
announced as `recovered`. A channel that fails is retried a few times, then recorded as a
failed delivery: alerts never change a run's outcome.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from ebbtide.alerts.email import EmailNotifier
from ebbtide.alerts.http import SlackNotifier, WebhookNotifier
from ebbtide.alerts.message import AlertMessage, Notifier
from ebbtide.config.alerts import AlertStatus, Channel, SubscriptionSpec
from ebbtide.config.schedule import duration
from ebbtide.config.workspace import Workspace
from ebbtide.engine.outcome import RunStatus, Trigger
from ebbtide.errors import ErrorClass, UsageError
from ebbtide.services.advice import recommended_action
from ebbtide.state.alerts import AlertState, Delivery
from ebbtide.state.records import RunRecord
from ebbtide.state.store import SqlStateStore, utcnow

log = logging.getLogger(__name__)

ATTEMPTS = 3


@dataclass(frozen=True)
class _Route:
    channel: Channel
    subscription: SubscriptionSpec


class AlertService:
    """Decides whether a run is news, and tells every subscriber through their channels."""

    def __init__(
        self,
        workspace: Workspace,
        state: SqlStateStore,
        retry_delay_s: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.workspace, self.state = workspace, state
        self.book = state.alerts
        self.retry_delay_s, self.sleep = retry_delay_s, sleep

    # -- after a run ---------------------------------------------------------------------

    def after_run(self, run: RunRecord) -> list[Delivery]:
        """Send what the run calls for; never raises (a failing channel is only recorded)."""
        try:
            event = self._event(run)
            if event is None:
                return []
            return self._dispatch(self._message(run, *event))
        except Exception:  # noqa: BLE001 - alerts must never break a sync
            log.exception("alerts for run %s could not be sent", run.id)
            return []

    def _event(self, run: RunRecord) -> tuple[AlertStatus, bool] | None:
        """The alert this run calls for (and whether it is a reminder), updating the state."""
        if run.trigger == Trigger.RESET:
            return None
        now = utcnow()
        state = self.book.state(run.mapping)
        was_failing = state is not None and state.failing
        if run.status in (RunStatus.SUCCESS, RunStatus.PARTIAL_SUCCESS) and not self._failing(run):
            if was_failing:
                self.book.set_state(run.mapping, AlertState(False, now, now))
                return AlertStatus.RECOVERED, False
            return None
        if run.status not in (RunStatus.FAILED, RunStatus.PARTIAL_SUCCESS):
            return None  # cancelled, interrupted: not news
        event = AlertStatus(run.status.value)
        if state is None or not state.failing:
            self.book.set_state(run.mapping, AlertState(True, now, now, event))
            return event, False
        if state.status != event:
            # From partly failing to failing (or back): news for whoever follows the new status.
            self.book.set_state(run.mapping, AlertState(True, state.since, now, event))
            return event, False
        remind = duration(self.workspace.spec.alerts.remind_every)
        if state.last_alert_at is None or now - state.last_alert_at >= remind:
            self.book.set_state(run.mapping, AlertState(True, state.since, now, event))
            return event, True
        return None

    def _failing(self, run: RunRecord) -> bool:
        """A partial success counts as failing only past the mapping's threshold."""
        if run.status is not RunStatus.PARTIAL_SUCCESS:
            return False
        spec = self.workspace.spec.mappings.get(run.mapping)
        threshold = spec.alert_min_failed_pct if spec else 0.0
        sent = run.loaded_new + run.loaded_updated + run.loaded_deleted + run.failed
        share = 100.0 * run.failed / sent if sent else 0.0
        return share >= threshold

    def _message(self, run: RunRecord, event: AlertStatus, reminder: bool) -> AlertMessage:
        top_error = action = None
        groups = self.state.failure_groups(run.id, samples=0) if run.failed else []
        if groups and event is not AlertStatus.RECOVERED:
            top = groups[0]
            top_error = f"{top.error_class} · {top.count:,} record(s) · {top.message}"
            action = recommended_action(
                self.workspace, run.mapping, ErrorClass(top.error_class), top.message
            )
        base = self.workspace.spec.alerts.base_url
        redact = self.workspace.redact
        return AlertMessage(
            event=str(event),
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
            reminder=reminder,
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
        target = _target(route)
        error: str | None = None
        for attempt in range(1, ATTEMPTS + 1):
            try:
                self._notifier(route).send(message)
                return self._log(message, route.channel, target, None, attempt)
            except Exception as exc:  # noqa: BLE001 - SMTP, HTTP, DNS: all recorded alike
                error = self._masked(f"{type(exc).__name__}: {exc}", route)
                if isinstance(exc, UsageError):
                    break  # a set-up problem: trying again changes nothing
                if attempt < ATTEMPTS:
                    self.sleep(self.retry_delay_s * 2 ** (attempt - 1))
        log.warning("alert to %s by %s failed: %s", target, route.channel, error)
        return self._log(message, route.channel, target, error, attempt)

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


def _target(route: _Route) -> str:
    """Who a route reaches, as the log shows it: never a URL, which may hold a token."""
    sub = route.subscription
    if sub.slack:
        return sub.slack.channel
    if sub.webhook:
        return "webhook"
    return ", ".join(sub.email or [])
