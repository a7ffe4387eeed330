"""Schedules: `manual`, an interval such as `15m`, or a cron expression."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated

from croniter import croniter
from pydantic import AfterValidator

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
    if text == "manual" or parse_interval(text) is not None:
        return text
    if len(text.split()) in (5, 6) and croniter.is_valid(text):
        return text
    raise ValueError(
        f"{text!r} is not a schedule: use manual, an interval such as 15m, 1h or 1d,"
        ' or a cron expression such as "0 * * * *"'
    )
