"""Failed records across syncs: who is retried, who is given up, who no longer needs it.

A failed record stays out of the snapshot, so every later diff finds it again with the row's
latest data. This module only keeps the books (DESIGN invariant 6).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from ebbtide.errors import ErrorClass
from ebbtide.ports import PendingFate
from ebbtide.values import PendingFailure, RetryOutcome


@dataclass(frozen=True)
class RetryPolicy:
    """`retry: {max_days: 14, max_syncs: 25}`."""

    max_days: float = 14.0
    max_syncs: int = 25

    def expires(self, first_failed_at: datetime, failed_syncs: int, now: datetime) -> bool:
        too_old = now - first_failed_at >= timedelta(days=self.max_days)
        return failed_syncs >= self.max_syncs or too_old


def settle(
    pending: dict[str, PendingFailure],
    fates: dict[str, PendingFate],
    failed_now: dict[str, ErrorClass],
    policy: RetryPolicy,
    now: datetime,
) -> RetryOutcome:
    """Decide the next status of each pending record and of each record that failed now.

    Only a failure of the record itself (validation, conflict, …) moves it towards expiry: an
    outage of the destination (auth, rate limits, 5xx, timeouts, network) is no fault of the
    record, and expiring it then would silently drop it.
    """
    outcome = RetryOutcome(retried=sum(1 for fate in fates.values() if fate.sent))
    for key, fate in fates.items():
        if key in failed_now:
            continue
        if fate.accepted or (not fate.sent and fate.in_model):
            outcome.resolved.append(key)  # loaded, or the destination already has this value
        elif not fate.sent and not fate.in_model:
            outcome.obsolete.append(key)  # deleted meanwhile: nothing left to deliver
        # sent but neither accepted nor failed: the run stopped before it; still pending
    for key, error_class in failed_now.items():
        if error_class.fatal or error_class.retriable:
            continue
        earlier = pending.get(key)
        first = earlier.first_failed_at if earlier else now
        syncs = earlier.failed_syncs + 1 if earlier else 1
        if policy.expires(first, syncs, now):
            outcome.expired.append(key)
    return outcome
