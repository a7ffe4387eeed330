"""The sync history as SVG drawn on the server: records per sync as stacked bars, and the
duration of each sync as a line. Pure functions of the runs: no JavaScript, no state.

Each chart is an image for assistive technology (`role="img"` named by its <title> and
<desc>), and each bar or point carries a <title> that browsers show as a tooltip; the page
also prints `summary()` as text, since a chart alone says nothing to a screen reader user.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from markupsafe import Markup

from ebbtide.services.views import RunView

WIDTH = 720
# Narrower, so that beside the records chart its text is as legible.
DURATION_WIDTH = 440
LEFT = 56  # room for the axis labels
RIGHT = 8
TOP = 28  # room for the legend
BOTTOM = 20
RECORDS_HEIGHT = 220
DURATION_HEIGHT = 180
# The widest a bar gets, so that three syncs do not look like three walls.
MAX_BAR = 48


@dataclass(frozen=True)
class Series:
    label: str
    colour: str  # each keeps a 3:1 contrast against white (WCAG non-text contrast)


LOADED_NEW = Series("Loaded new", "#1d6b34")
LOADED_UPDATED = Series("Loaded updated", "#0b5cad")
LOADED_DELETED = Series("Loaded deleted", "#6b4c9a")
FAILED = Series("Failed", "#a3151a")
STACK = (LOADED_NEW, LOADED_UPDATED, LOADED_DELETED, FAILED)
DURATION = Series("Duration", "#0b5cad")


@dataclass(frozen=True)
class Segment:
    series: Series
    count: int
    y: float
    height: float


@dataclass(frozen=True)
class Bar:
    run: RunView
    x: float
    width: float
    segments: list[Segment]  # bottom up; a series with no records has no segment

    @property
    def total(self) -> int:
        return sum(s.count for s in self.segments)


def counts(run: RunView) -> list[tuple[Series, int]]:
    return [
        (LOADED_NEW, run.loaded_new),
        (LOADED_UPDATED, run.loaded_updated),
        (LOADED_DELETED, run.loaded_deleted),
        (FAILED, run.failed),
    ]


def oldest_first(runs: Sequence[RunView]) -> list[RunView]:
    """The history lists newest first; a chart reads left to right, oldest first."""
    return sorted(runs, key=lambda r: r.id)


def _slots(n: int, width: int = WIDTH) -> tuple[float, float]:
    """Each sync's slot width and its bar's width."""
    slot = (width - LEFT - RIGHT) / max(n, 1)
    return slot, min(slot * 0.7, MAX_BAR)


def stack_layout(runs: Sequence[RunView], height: int = RECORDS_HEIGHT) -> list[Bar]:
    """One bar per sync, oldest left; a segment's height is proportional to its count, the
    largest sync's total filling the plot."""
    ordered = oldest_first(runs)
    plot = height - TOP - BOTTOM
    biggest = max((sum(c for _, c in counts(r)) for r in ordered), default=0)
    scale = plot / biggest if biggest else 0.0
    slot, width = _slots(len(ordered))
    bars = []
    for i, run in enumerate(ordered):
        base = float(height - BOTTOM)
        segments = []
        for series, count in counts(run):
            if count <= 0:
                continue
            tall = count * scale
            base -= tall
            segments.append(Segment(series, count, base, tall))
        bars.append(Bar(run, LEFT + i * slot + (slot - width) / 2, width, segments))
    return bars


def _number(value: float) -> str:
    return f"{value:,.0f}"


def _seconds(value: float) -> str:
    return f"{value:,.1f} s" if value < 600 else f"{value / 60:,.1f} min"


def _bar_title(run: RunView) -> str:
    parts = ", ".join(f"{s.label.lower()} {c:,}" for s, c in counts(run))
    return f"Sync #{run.id} ({run.status.value}) at {run.started_at:%Y-%m-%d %H:%M} UTC: {parts}"


def _frame(chart_id: str, height: int, title: str, desc: str, width: int = WIDTH) -> list[str]:
    return [
        f'<svg class="chart" role="img" aria-labelledby="{chart_id}-title {chart_id}-desc"'
        f' viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">',
        f'<title id="{chart_id}-title">{escape(title)}</title>',
        f'<desc id="{chart_id}-desc">{escape(desc)}</desc>',
    ]


def _axis(height: int, top_value: str, width: int = WIDTH) -> list[str]:
    bottom = height - BOTTOM
    return [
        f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{bottom}" stroke="#5b6674"/>',
        f'<line x1="{LEFT}" y1="{bottom}" x2="{width - RIGHT}" y2="{bottom}" stroke="#5b6674"/>',
        f'<text x="{LEFT - 6}" y="{TOP + 4}" text-anchor="end" font-size="12"'
        f' fill="#1b2430">{escape(top_value)}</text>',
        f'<text x="{LEFT - 6}" y="{bottom}" text-anchor="end" font-size="12"'
        ' fill="#1b2430">0</text>',
    ]


def _legend(series: Sequence[Series]) -> list[str]:
    out, x = [], LEFT
    for s in series:
        out.append(f'<rect x="{x}" y="6" width="12" height="12" fill="{s.colour}"/>')
        out.append(
            f'<text x="{x + 16}" y="16" font-size="12" fill="#1b2430">{escape(s.label)}</text>'
        )
        x += 24 + 7 * len(s.label)
    return out


def _empty(chart_id: str, height: int, title: str, width: int = WIDTH) -> Markup:
    lines = _frame(chart_id, height, title, "No syncs to show.", width)
    lines.append(
        f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" font-size="14"'
        ' fill="#4a5565">No syncs to show</text></svg>'
    )
    return Markup("\n".join(lines))


def records_chart(runs: Sequence[RunView], mapping: str, chart_id: str = "records") -> Markup:
    """Records per sync: loaded new, updated and deleted, and failed, stacked; oldest left."""
    title = f"Records per sync of {mapping}"
    if not runs:
        return _empty(chart_id, RECORDS_HEIGHT, title)
    bars = stack_layout(runs)
    biggest = max(b.total for b in bars)
    lines = _frame(chart_id, RECORDS_HEIGHT, title, summary(runs))
    lines += _axis(RECORDS_HEIGHT, _number(biggest))
    lines += _legend(STACK)
    for bar in bars:
        lines.append(f'<g class="bar" data-run="{bar.run.id}">')
        lines.append(f"<title>{escape(_bar_title(bar.run))}</title>")
        # A sync that loaded nothing still gets a sliver, so that it shows it happened.
        if not bar.segments:
            lines.append(
                f'<rect x="{bar.x:.1f}" y="{RECORDS_HEIGHT - BOTTOM - 1}" width="{bar.width:.1f}"'
                ' height="1" fill="#5b6674"/>'
            )
        for seg in bar.segments:
            lines.append(
                f'<rect x="{bar.x:.1f}" y="{seg.y:.2f}" width="{bar.width:.1f}"'
                f' height="{seg.height:.2f}" fill="{seg.series.colour}"'
                f' data-series="{escape(seg.series.label)}" data-count="{seg.count}"/>'
            )
        lines.append("</g>")
    lines.append("</svg>")
    return Markup("\n".join(lines))


def duration_points(
    runs: Sequence[RunView], height: int = DURATION_HEIGHT
) -> list[tuple[RunView, float, float]]:
    """(run, x, y) for each sync that has a duration, oldest left; y proportional to it."""
    ordered = oldest_first(runs)
    plot = height - TOP - BOTTOM
    longest = max((r.duration_s or 0.0 for r in ordered), default=0.0)
    slot, _ = _slots(len(ordered), DURATION_WIDTH)
    points = []
    for i, run in enumerate(ordered):
        if run.duration_s is None:
            continue
        tall = run.duration_s / longest * plot if longest else 0.0
        points.append((run, LEFT + i * slot + slot / 2, height - BOTTOM - tall))
    return points


def duration_chart(runs: Sequence[RunView], mapping: str, chart_id: str = "durations") -> Markup:
    """How long each sync took, as a line; a sync still running has no point yet."""
    title = f"Duration per sync of {mapping}"
    points = duration_points(runs)
    if not points:
        return _empty(chart_id, DURATION_HEIGHT, title, DURATION_WIDTH)
    longest = max(r.duration_s or 0.0 for r, _, _ in points)
    shortest = min(r.duration_s or 0.0 for r, _, _ in points)
    desc = (
        f"{len(points)} finished sync(s): the shortest took {_seconds(shortest)},"
        f" the longest {_seconds(longest)}."
    )
    lines = _frame(chart_id, DURATION_HEIGHT, title, desc, DURATION_WIDTH)
    lines += _axis(DURATION_HEIGHT, _seconds(longest), DURATION_WIDTH)
    lines += _legend([DURATION])
    path = " ".join(f"{x:.1f},{y:.2f}" for _, x, y in points)
    lines.append(
        f'<polyline points="{path}" fill="none" stroke="{DURATION.colour}" stroke-width="2"/>'
    )
    for run, x, y in points:
        label = f"Sync #{run.id} took {_seconds(run.duration_s or 0.0)}"
        lines.append(
            f'<circle cx="{x:.1f}" cy="{y:.2f}" r="4" fill="{DURATION.colour}"'
            f' data-run="{run.id}"><title>{escape(label)}</title></circle>'
        )
    lines.append("</svg>")
    return Markup("\n".join(lines))


def summary(runs: Sequence[RunView]) -> str:
    """The charts in words, for people who cannot see them."""
    if not runs:
        return "No syncs to show."
    ordered = oldest_first(runs)
    totals = {s: sum(c for r in ordered for t, c in counts(r) if t == s) for s in STACK}
    worst = max(ordered, key=lambda r: r.failed)
    words = ", ".join(f"{totals[s]:,} {s.label.lower()}" for s in STACK)
    text = (
        f"{len(ordered)} sync(s) from #{ordered[0].id} to #{ordered[-1].id}, oldest first: {words}."
    )
    if worst.failed:
        text += f" Most failed records: sync #{worst.id} ({worst.failed:,})."
    return text
