"""Measurements: each taken in a fresh child process that reports itself as one JSON line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
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
    """One `ebbtide sync run` of `mapping` in the workspace `root`, a fresh process timed whole:
    interpreter start, imports, configuration, the run and the exit.

    A sync that crashes is a measurement too (status `crashed`), so the table still prints.
    """
    try:
        run, wall_s, max_rss_mb = _run_command(
            repo, [_ebbtide(), "--workspace", str(root), "sync", "run", mapping, "--json"]
        )
    except (RuntimeError, ValueError) as exc:
        return Measurement(scenario, rows, 0, expected, 0.0, 0.0, status="crashed", error=str(exc))
    phases = {k: float(v or 0.0) for k, v in run["phases_s"].items()}
    return Measurement(
        scenario=scenario,
        rows=rows,
        sent=sum(int(run[k]) for k in ("loaded_new", "loaded_updated", "loaded_deleted", "failed")),
        expected=expected,
        wall_s=round(wall_s, 3),
        max_rss_mb=max_rss_mb,
        phases={**phases, "run": float(run["duration_s"])},
        status=str(run["status"]),
        error=run["error"],
        journal_mb=_journal_mb(root, mapping, int(run["id"])),
    )


def _ebbtide() -> str:
    """The `ebbtide` command of the interpreter running the bench (the project's venv)."""
    return str(Path(sys.executable).with_name("ebbtide"))


def compile_sources(repo: Path) -> None:
    """ebbtide's bytecode, written once, as an installed wheel has it. Where the environment
    sets PYTHONDONTWRITEBYTECODE (this machine does), every command would otherwise compile
    every module it imports again, about 0.1 s that no installed ebbtide spends."""
    global _compiled
    if not _compiled:
        import compileall

        compileall.compile_dir(repo / "src" / "ebbtide", quiet=1)
        _compiled = True


_compiled = False


def _run_command(repo: Path, argv: list[str]) -> tuple[dict[str, Any], float, float]:
    """Run a command that prints a run as JSON; the run, wall seconds and its peak RSS (MB)."""
    compile_sources(repo)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        process = subprocess.Popen(argv, cwd=repo, stdout=out, stderr=err)
        # wait4, not wait: the rusage of this one child, not the largest of every child so far.
        _, status, usage = os.wait4(process.pid, 0)
        wall_s = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        text, error = out.read().decode(), err.read().decode()
    if not text.strip().startswith("["):
        raise RuntimeError(f"{' '.join(argv)} exited with {process.returncode}:\n{error[-3000:]}")
    runs: list[dict[str, Any]] = json.loads(text)
    return runs[-1], wall_s, round(usage.ru_maxrss / 1024, 1)


def _journal_mb(root: Path, mapping: str, run_id: int) -> float:
    """The size of the run's sent-record journal (kept for replays)."""
    from ebbtide.config.workspace import STATE_DIR
    from ebbtide.snapshots.sent_journal import journal_path

    path = journal_path(root / STATE_DIR, mapping, run_id)
    return round(path.stat().st_size / 2**20, 1) if path.exists() else 0.0


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
