"""Schedules: `manual`, an interval such as `15m`, or a cron expression (in a time zone),
and when each comes due."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator

# croniter (and dateutil behind it) is imported where a cron expression is read: the config
# models import this module, and most commands read no schedule.

_INTERVAL = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_interval(text: str) -> timedelta | None:
    """`15m` -> 15 minutes; None when `text` is not an interval."""
    match = _INTERVAL.match(text.strip())
    if not match:
        return None
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def duration(text: str) -> timedelta:
    """The length of a setting already checked as a `Duration`."""
    interval = parse_interval(text)
    if interval is None:
        raise ValueError(f"{text!r} is not a duration: use e.g. 30s, 15m, 6h, 7d")
    return interval


def _check_duration(text: str) -> str:
    duration(text)
    return text


# A setting such as `remind_every: 6h`: checked when the workspace loads, kept as written.
Duration = Annotated[str, AfterValidator(_check_duration)]


def check_schedule(text: str) -> str:
    """Returns the schedule unchanged, or raises ValueError saying what is accepted."""
    interval = parse_interval(text)
    if interval is not None and not interval:
        raise ValueError(f"{text!r} is not a schedule: an interval must be longer than 0")
    if text == "manual" or interval is not None:
        return text
    from croniter import croniter

    if len(text.split()) in (5, 6) and croniter.is_valid(text):
        return text
    raise ValueError(
        f"{text!r} is not a schedule: use manual, an interval such as 15m, 1h or 1d,"
        ' or a cron expression such as "0 * * * *"'
    )


def check_timezone(text: str) -> str:
    """Returns an IANA time zone name unchanged, or raises ValueError naming what is accepted."""
    try:
        ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"{text!r} is not a time zone: use an IANA name such as UTC, Europe/Paris or"
            " America/New_York"
        ) from None
    return text


def first_due(schedule: str, now: datetime, timezone: str = "UTC") -> datetime | None:
    """When a schedule first comes due: an interval at once, a cron expression at its next
    slot after `now`; None for `manual`."""
    if schedule == "manual":
        return None
    if parse_interval(schedule) is not None:
        return now
    return _next_cron_slot(schedule, now, ZoneInfo(timezone))


def next_due(
    schedule: str,
    due_at: datetime,
    now: datetime,
    timezone: str = "UTC",
    spread_by: str | None = None,
) -> datetime | None:
    """The slot after `due_at` that is later than `now`: however many slots were missed, the
    next one is in the future, so a schedule missed while nothing ran runs once, not once per
    slot. An interval counts from its last due time (no drift); a cron expression is read in
    `timezone`, on the wall clock of that zone across DST changes. None for `manual`.

    With `spread_by` (the mapping's name), an interval's slots sit at a fixed offset within
    the interval drawn from that name, the same for every scheduler: mappings on one interval
    come due spread over it rather than all at once (the first run still comes at once)."""
    if schedule == "manual":
        return None
    interval = parse_interval(schedule)
    if interval is not None and spread_by is not None:
        return _spread_slot(interval, max(now, due_at), spread_by)
    if interval is not None:
        if due_at > now:
            return due_at + interval
        return due_at + interval * ((now - due_at) // interval + 1)
    return _next_cron_slot(schedule, max(now, due_at), ZoneInfo(timezone))


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _spread_slot(interval: timedelta, after: datetime, name: str) -> datetime:
    """The first slot strictly after `after` on the grid `epoch + offset(name) + k·interval`."""
    step_ms = max(1, int(interval.total_seconds() * 1000))
    digest = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big")
    # To the millisecond: whole seconds would bunch several mappings into the same instant.
    offset = timedelta(milliseconds=digest % step_ms)
    base = _EPOCH + offset
    return base + interval * ((after - base) // interval + 1)


# Wall-clock slots to look past before giving up: a slot before `after` comes up only when the
# clock went back (the repeated hour of a DST change), so a handful suffices.
_CRON_LOOKAHEAD = 1000


def _next_cron_slot(expression: str, after: datetime, zone: ZoneInfo) -> datetime:
    """The first slot of `expression` on `zone`'s wall clock strictly after `after` (UTC).

    croniter walks naive wall-clock times, so each slot happens once per day as people read
    it: a time in the hour skipped when clocks go forward runs just after the change (its
    offset is the one before it), a time in the hour repeated when they go back runs at its
    first occurrence only.
    """
    local = after.astimezone(zone).replace(tzinfo=None)
    from croniter import croniter

    slots = croniter(expression, local)
    for _ in range(_CRON_LOOKAHEAD):
        wall: datetime = slots.get_next(datetime)
        slot = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
        if slot > after:
            return slot
    raise ValueError(f"{expression!r} has no slot after {after:%Y-%m-%d %H:%M} UTC")
