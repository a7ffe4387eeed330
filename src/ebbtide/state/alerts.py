"""Alerts in the state store: subscriptions, in-app notifications, deliveries, alert state."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from ebbtide.config.alerts import AlertStatus, Channel, SlackTarget, SubscriptionSpec
from ebbtide.state.schema import alert_deliveries, alert_states, notifications, subscriptions


@dataclass(frozen=True)
class StoredSubscription:
    """A subscription kept in the state store (`ebbtide alerts subscribe`, the web UI)."""

    id: int
    spec: SubscriptionSpec
    created_at: datetime
    owner: str | None = None  # who made it in the web UI

    @property
    def owned_by(self) -> str | None:
        """Who may remove it besides an admin: its maker, else the person it is for."""
        if self.owner is not None:
            return self.owner
        return self.spec.email[0] if self.spec.email else None


@dataclass(frozen=True)
class Notification:
    """An in-app notification of one person."""

    id: int
    email: str
    run_id: int | None
    mapping: str
    event: str
    title: str
    body: str
    created_at: datetime
    read_at: datetime | None


@dataclass(frozen=True)
class Delivery:
    """One alert sent (or not) through one channel, as `ebbtide alerts log` shows it."""

    run_id: int | None
    mapping: str
    event: str
    channel: str
    target: str
    delivered: bool
    attempts: int
    error: str | None
    created_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "mapping": self.mapping,
            "event": self.event,
            "channel": self.channel,
            "target": self.target,
            "delivered": self.delivered,
            "attempts": self.attempts,
            "error": self.error,
            "created_at": self.created_at.isoformat(),
        }


@dataclass(frozen=True)
class AlertState:
    """A mapping's open incident (or its absence): whether it is failing, since when, when
    people were last told, and the fingerprints of the errors they were told about."""

    failing: bool
    since: datetime
    last_alert_at: datetime | None
    status: str | None = None  # failed or partial_success, as last told
    announced: frozenset[str] = frozenset()


class AlertBook:
    """Reads and writes the alert tables."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    # -- subscriptions -------------------------------------------------------------------

    def subscribe(self, spec: SubscriptionSpec, now: datetime, owner: str | None = None) -> int:
        assert spec.webhook is None, "generic webhooks are declared in ebbtide.yml"
        assert spec.slack or (spec.email and len(spec.email) == 1), "one address or alias"
        with self.engine.begin() as conn:
            inserted = conn.execute(
                subscriptions.insert().values(
                    email=spec.email[0] if spec.email else None,
                    statuses=[str(s) for s in spec.statuses],
                    mappings=spec.mappings,
                    channels=[str(c) for c in spec.delivered_by],
                    created_at=now,
                    slack_webhook_url=spec.slack.webhook_url if spec.slack else None,
                    slack_channel=spec.slack.channel if spec.slack else None,
                    owner=owner,
                )
            )
        return int(inserted.inserted_primary_key[0])  # type: ignore[index]

    def unsubscribe(self, *, subscription_id: int | None = None, email: str | None = None) -> int:
        """Remove one subscription, or every subscription of a person; returns how many."""
        query = subscriptions.delete()
        if subscription_id is not None:
            query = query.where(subscriptions.c.id == subscription_id)
        if email is not None:
            query = query.where(subscriptions.c.email == email)
        with self.engine.begin() as conn:
            return int(conn.execute(query).rowcount)

    def subscriptions(self) -> list[StoredSubscription]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(subscriptions).order_by(subscriptions.c.id)).all()
        return [StoredSubscription(row.id, _spec(row), row.created_at, row.owner) for row in rows]

    def subscription(self, subscription_id: int) -> StoredSubscription | None:
        query = sa.select(subscriptions).where(subscriptions.c.id == subscription_id)
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return (
            None
            if row is None
            else StoredSubscription(row.id, _spec(row), row.created_at, row.owner)
        )

    def update(self, subscription_id: int, spec: SubscriptionSpec) -> None:
        """Change what a stored subscription hears about and where it goes (its maker stays)."""
        with self.engine.begin() as conn:
            conn.execute(
                subscriptions.update()
                .where(subscriptions.c.id == subscription_id)
                .values(
                    email=spec.email[0] if spec.email else None,
                    statuses=[str(s) for s in spec.statuses],
                    mappings=spec.mappings,
                    channels=[str(c) for c in spec.delivered_by],
                    slack_webhook_url=spec.slack.webhook_url if spec.slack else None,
                    slack_channel=spec.slack.channel if spec.slack else None,
                )
            )

    # -- in-app notifications ------------------------------------------------------------

    def notify(
        self,
        email: str,
        run_id: int | None,
        mapping: str,
        event: str,
        title: str,
        body: str,
        now: datetime,
    ) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                notifications.insert().values(
                    email=email,
                    run_id=run_id,
                    mapping=mapping,
                    event=event,
                    title=title,
                    body=body,
                    created_at=now,
                )
            )

    def notifications(self, email: str, *, unread_only: bool = False) -> list[Notification]:
        query = sa.select(notifications).where(notifications.c.email == email)
        if unread_only:
            query = query.where(notifications.c.read_at.is_(None))
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(notifications.c.id.desc())).all()
        return [Notification(**dict(row._mapping)) for row in rows]

    def mark_read(self, email: str, now: datetime) -> int:
        with self.engine.begin() as conn:
            return int(
                conn.execute(
                    notifications.update()
                    .where(notifications.c.email == email, notifications.c.read_at.is_(None))
                    .values(read_at=now)
                ).rowcount
            )

    # -- deliveries ----------------------------------------------------------------------

    def record_delivery(self, delivery: Delivery) -> None:
        with self.engine.begin() as conn:
            conn.execute(alert_deliveries.insert().values(**delivery.__dict__))

    def deliveries(self, limit: int = 50) -> list[Delivery]:
        query = sa.select(alert_deliveries).order_by(alert_deliveries.c.id.desc()).limit(limit)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [Delivery(**{k: v for k, v in row._mapping.items() if k != "id"}) for row in rows]

    # -- state per mapping ---------------------------------------------------------------

    def state(self, mapping: str) -> AlertState | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(alert_states).where(alert_states.c.mapping == mapping)
            ).first()
        if row is None:
            return None
        announced = frozenset(row.announced or ())
        return AlertState(row.failing, row.since, row.last_alert_at, row.status, announced)

    def set_state(self, mapping: str, state: AlertState) -> None:
        values = {
            "failing": state.failing,
            "since": state.since,
            "last_alert_at": state.last_alert_at,
            "status": state.status,
            "announced": sorted(state.announced),
        }
        with self.engine.begin() as conn:
            updated = conn.execute(
                alert_states.update().where(alert_states.c.mapping == mapping).values(**values)
            ).rowcount
            if not updated:
                conn.execute(alert_states.insert().values(mapping=mapping, **values))


def _spec(row: sa.Row[Any]) -> SubscriptionSpec:
    statuses = [AlertStatus(s) for s in row.statuses]
    if row.slack_webhook_url:
        slack = SlackTarget(webhook_url=row.slack_webhook_url, channel=row.slack_channel or "")
        return SubscriptionSpec(slack=slack, statuses=statuses, mappings=row.mappings)
    return SubscriptionSpec(
        email=[row.email],
        statuses=statuses,
        mappings=row.mappings,
        channels=[Channel(c) for c in row.channels],
    )
