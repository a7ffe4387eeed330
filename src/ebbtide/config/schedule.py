"""Schedules: `manual`, an interval such as `15m`, or a cron expression."""

from __future__ import annotations

import re
from datetime import timedelta

from croniter import croniter

_INTERVAL = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_interval(text: str) -> timedelta | None:
    """`15m` -> 15 minutes; None when `text` is not an interval."""
    match = _INTERVAL.match(text.strip())
    if not match:
        return None
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def check_schedule(text: str) -> str:
    """Returns the schedule unchanged, or raises ValueError saying what is accepted."""
    if text == "manual" or parse_interval(text) is not None:
        return text
    if len(text.split()) in (5, 6) and croniter.is_valid(text):
        return text
    raise ValueError(
        f"{text!r} is not a schedule: use manual, an interval such as 15m, 1h or 1d,"
        ' or a cron expression such as "0 * * * *"'
    )
