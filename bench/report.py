"""The results as one Rich table, and optionally as JSON."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

import duckdb
from rich.console import Console
from rich.table import Table

from bench.measure import Measurement
from bench.targets import BARE, verdict

PHASES = ("extract", "diff", "load", "commit")
WIDTH = 180


def machine() -> str:
    return (
        f"{os.cpu_count()} CPUs, Python {platform.python_version()},"
        f" DuckDB {duckdb.__version__}, {platform.machine()}"
    )


def load_note(before: float, after: float) -> str:
    """Other work on the machine skews every number: say how busy it was."""
    note = f"Load average (1 min) {before:.2f} before, {after:.2f} after."
    if before > 0.5 * (os.cpu_count() or 1):
        note += " The machine was busy before the bench began: the numbers are pessimistic."
    return note


def receiver_note(records: int | None, requests: int | None, sent: int) -> str:
    """Cross-check: what the receiver counted against what the runs say they sent."""
    if records is None or requests is None:
        return "The receiver did not report its count."
    return f"The receiver counted {records:,} records in {requests:,} requests (sent: {sent:,})."


def bare_of(results: list[Measurement]) -> Measurement | None:
    return next((m for m in results if m.scenario == BARE), None)


def table(results: list[Measurement], note: str) -> Table:
    """One row per measurement, with its verdict against the targets."""
    grid = Table(
        title="ebbtide sync benchmark: users model, mirror mode → webhook (batch 500, conc. 4)",
        caption=f"{machine()}. {note}",
    )
    for name in ("scenario", "rows", "records sent", "wall (s)", "records/s", "peak MB"):
        grid.add_column(name, justify="left" if name == "scenario" else "right", no_wrap=True)
    grid.add_column("run (s)", justify="right", no_wrap=True)
    grid.add_column("extract/diff/load/commit (s)", justify="right", no_wrap=True)
    grid.add_column("target")
    grid.add_column("result")
    bare = bare_of(results)
    for m in results:
        v = verdict(m, bare)
        result = "—" if v.passed is None else "[green]pass" if v.passed else f"[red]FAIL {v.why}"
        phases = "/".join(f"{m.phases[p]:.2f}" for p in PHASES) if m.phases else "—"
        grid.add_row(
            m.scenario,
            f"{m.rows:,}",
            f"{m.sent:,}",
            f"{m.wall_s:.2f}",
            f"{m.rate:,.0f}" if m.sent else "—",
            f"{m.max_rss_mb:,.0f}",
            f"{m.phases['run']:.2f}" if "run" in m.phases else "—",
            phases,
            v.target,
            result,
        )
    return grid


def write_json(path: Path, results: list[Measurement], note: str) -> None:
    bare = bare_of(results)
    rows: list[dict[str, Any]] = []
    for m in results:
        v = verdict(m, bare)
        rows.append({**m.to_json(), "target": v.target, "passed": v.passed, "missed": v.why})
    document = {"machine": machine(), "note": note, "results": rows}
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


def journal_note(results: list[Measurement]) -> str:
    """How large the sent-record journals (kept for replays) of the full syncs are."""
    sizes = [f"{m.rows:,} records: {m.journal_mb:,.1f} MB" for m in results if m.journal_mb]
    return f"Sent-record journals (Parquet, zstd): {'; '.join(sizes)}." if sizes else ""


def show(console: Console, results: list[Measurement], note: str) -> None:
    console.print(table(results, note))
    journals = journal_note(results)
    if journals:
        console.print(journals)
    for m in results:
        if m.error:
            console.print(f"[red]{m.scenario} of {m.rows:,} rows: {m.status}[/]")
            console.print(m.error[-2000:], markup=False, highlight=False)
