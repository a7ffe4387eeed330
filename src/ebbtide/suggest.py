"""The one "did you mean" of every message about a mistyped name."""

from __future__ import annotations

import difflib


def did_you_mean(name: str, known: list[str], listing: str = "known") -> str:
    """` (did you mean 'crm_hook'?)`, or ` (known: a, b)` when nothing is close."""
    close = difflib.get_close_matches(name, known, n=1)
    if close:
        return f" (did you mean {close[0]!r}?)"
    return f" ({listing}: {', '.join(known) if known else 'none defined'})"
