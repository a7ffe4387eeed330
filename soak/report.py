"""The soak's table: trials by kill kind and point, resends, recovery waits, violations."""

from __future__ import annotations

import statistics

from rich.console import Console
from rich.table import Table

from soak.trial import Trial

WIDTH = 150  # a pipe or a file gets the whole table, not 80 squeezed columns
COLUMNS = (
    "kill",
    "point",
    "trials",
    "landed",
    "missed",
    "resent (total)",
    "resent (max)",
    "refused as busy",
    "lock waits",
    "recovery wait max (s)",
    "median (s)",
    "violations",
)


def table(trials: list[Trial], total_s: float) -> Table:
    result = Table(title="ebbtide crash soak", caption=_caption(total_s))
    for column in COLUMNS:
        result.add_column(column, justify="left" if column in ("kill", "point") else "right")
    groups = sorted({(t.plan.kind, t.plan.point) for t in trials})
    for kind, point in groups:
        chosen = [t for t in trials if (t.plan.kind, t.plan.point) == (kind, point)]
        result.add_row(kind, point, *_figures(chosen))
    result.add_section()
    result.add_row("all", "", *_figures(trials), style="bold")
    return result


def _figures(trials: list[Trial]) -> list[str]:
    waits = [t.recovery.wait_s for t in trials if t.recovery and t.landed]
    refused = sum(t.recovery.refused for t in trials if t.recovery)
    lock_waits = sum(t.recovery.lock_waits for t in trials if t.recovery)
    return [
        str(len(trials)),
        str(sum(t.landed for t in trials)),
        str(sum(not t.landed for t in trials)),
        str(sum(t.resent for t in trials)),
        str(max((t.resent for t in trials), default=0)),
        str(refused),
        str(lock_waits),
        _seconds(max(waits, default=None)),
        _seconds(statistics.median(waits) if waits else None),
        str(sum(len(t.violations) for t in trials)),
    ]


def _seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def _caption(total_s: float) -> str:
    return (
        f"landed: the signal reached a running sync (missed: the sync had finished first)."
        f" Recovery wait: from the signal to the start of the sync that ran. Lock waits:"
        f" a sync stopped inside a state store write kept SQLite's lock; the next gave up"
        f" naming it, and it was resumed."
        f" Total time {total_s:.0f} s."
    )


def show(console: Console, trials: list[Trial], total_s: float) -> None:
    console.print(table(trials, total_s))
