"""Measurements: each taken in a fresh child process that reports itself as one JSON line."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

CHILD_TIMEOUT_S = 1800


@dataclass(frozen=True)
class Measurement:
    """One benchmarked scenario: what was sent, how long it took and the peak memory."""

    scenario: str
    rows: int
    sent: int
    expected: int  # records the scenario should send
    wall_s: float
    max_rss_mb: float
    phases: dict[str, float] = field(default_factory=dict)
    status: str = "success"
    error: str | None = None
    journal_mb: float = 0.0  # the run's sent-record journal, kept for replays

    @property
    def rate(self) -> float:
        """Records sent per second of wall time (0 when nothing was sent)."""
        return self.sent / self.wall_s if self.wall_s > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "records_per_s": round(self.rate)}


def run_child(repo: Path, module: str, *args: object) -> dict[str, Any]:
    """Run `python -m module args…` from the repository and parse the JSON it prints last."""
    completed = subprocess.run(
        [sys.executable, "-m", module, *map(str, args)],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_S,
        check=False,
    )
    lines = completed.stdout.strip().splitlines()
    if completed.returncode != 0 or not lines:
        raise RuntimeError(
            f"{module} exited with {completed.returncode}:\n{completed.stderr[-3000:]}"
        )
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def measure_sync(
    repo: Path, root: Path, mapping: str, scenario: str, rows: int, expected: int
) -> Measurement:
    """One sync of `mapping` in the workspace `root`, in a fresh process.

    A sync that crashes is a measurement too (status `crashed`), so the table still prints.
    """
    try:
        run = run_child(repo, "bench.child", root, mapping)
    except (RuntimeError, subprocess.TimeoutExpired, ValueError) as exc:
        return Measurement(scenario, rows, 0, expected, 0.0, 0.0, status="crashed", error=str(exc))
    return Measurement(
        scenario=scenario,
        rows=rows,
        sent=int(run["sent"]),
        expected=expected,
        wall_s=float(run["wall_s"]),
        max_rss_mb=float(run["max_rss_mb"]),
        phases={k: float(v or 0.0) for k, v in run["phases"].items()},
        status=str(run["status"]),
        error=run["error"],
        journal_mb=float(run.get("journal_mb", 0.0)),
    )


def measure_bare_client(
    repo: Path, url: str, records: int, batch_size: int, concurrency: int
) -> Measurement:
    """The same records POSTed by plain aiohttp, in a fresh process."""
    run = run_child(repo, "bench.bare_client", url, records, batch_size, concurrency)
    return _of_child("bare aiohttp client", records, records, run)


def measure_payloads(repo: Path, rows: int, scenario: str) -> Measurement:
    """Payloads of a customized object and array for `rows` orders, built in a fresh process."""
    try:
        run = run_child(repo, "bench.payloads", rows)
    except (RuntimeError, subprocess.TimeoutExpired, ValueError) as exc:
        return Measurement(scenario, rows, 0, rows, 0.0, 0.0, status="crashed", error=str(exc))
    return _of_child(scenario, rows, rows, run)


def _of_child(scenario: str, rows: int, expected: int, run: dict[str, Any]) -> Measurement:
    """What every child reports: records, wall time and peak memory."""
    return Measurement(
        scenario=scenario,
        rows=rows,
        sent=int(run["sent"]),
        expected=expected,
        wall_s=float(run["wall_s"]),
        max_rss_mb=float(run["max_rss_mb"]),
    )
