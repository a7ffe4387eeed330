"""`python -m bench.peers [--rows N] [--repeat N] [--keep] [--json FILE]`: ebbtide, drt and
dlt side by side on the bench's DuckDB `users` model, each posting to the same loopback
receiver (see bench/README.md, "Side by side with drt and dlt").

The peers are pip-installed, pinned, in a throwaway virtualenv under /tmp (reused while its
pins are the same). Per tool: its own copy of the warehouse, then three syncs, each a fresh
process timed whole with its peak memory: a full sync, a no-change sync, and one after 1% of
the rows were updated (`updated_at` moved to now) and 0.5% deleted. Every sync gets a receiver
of its own, so its count is that sync's alone.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import duckdb
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bench import peers_venv
from bench.measure import compile_sources
from bench.peers_tools import REPO, TOOLS, Command, Tool
from bench.receiver import ReceiverProcess
from bench.report import WIDTH, machine
from bench.targets import CHANGED, FULL, NO_CHANGE
from bench.warehouse import cached_warehouse, copy_warehouse

CACHE = Path(tempfile.gettempdir()) / "ebbtide-bench-cache"
SYNC_TIMEOUT_S = 1800
# Unlike `make bench` (ltv + 1, updated_at + 1 day), the update moves `updated_at` to now, so
# a tool that syncs by an `updated_at` cursor can see it.
UPDATE_1PCT = "UPDATE users SET updated_at = now(), plan = 'x' WHERE id % 100 = 0"
DELETE_HALF_PCT = "DELETE FROM users WHERE id % 200 = 1"


@dataclass(frozen=True)
class Row:
    """One sync of one tool, as the receiver and the tool saw it."""

    tool: str
    version: str
    scenario: str
    rows: int
    wall_s: float
    peak_mb: float
    received: int  # records the receiver counted (upserts and deletes)
    deletes: int | None  # None: the tool, as configured, sends no deletes
    expected_upserts: int
    expected_deletes: int
    ok: bool
    error: str | None = None

    @property
    def verdict(self) -> str:
        if not self.ok:
            return f"failed: {self.error or 'see above'}"
        deletes = self.deletes or 0
        if self.received == 0 and self.expected_upserts == 0 and self.expected_deletes == 0:
            return "nothing changed, nothing sent"
        missed = self.expected_deletes - deletes
        upserts = self.received - deletes
        problems = []
        if upserts != self.expected_upserts:
            problems.append(f"{upserts:,} upserts, expected {self.expected_upserts:,}")
        if missed > 0:
            problems.append(f"missed {missed:,} deletes")
        return "; ".join(problems) or "all changes delivered"


def timed(command: Command) -> tuple[int, str, str, float, float]:
    """Run a command; its exit code, output, error output, wall seconds and peak RSS (MB)."""
    compile_sources(REPO)  # as the peers' installed packages are
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        process = subprocess.Popen(
            command.argv, cwd=command.cwd, env=command.env, stdout=out, stderr=err
        )
        # wait4, not wait: the rusage of this one child (as bench/measure.py does).
        _, status, usage = os.wait4(process.pid, 0)
        wall_s = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        text, error = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    return process.returncode, text, error, wall_s, round(usage.ru_maxrss / 1024, 1)


def change(warehouse: Path) -> tuple[int, int]:
    """The same change in every tool's copy: (updated, deleted)."""
    with duckdb.connect(str(warehouse)) as con:
        updated = con.execute(UPDATE_1PCT).fetchone()
        deleted = con.execute(DELETE_HALF_PCT).fetchone()
    return int(updated[0]) if updated else 0, int(deleted[0]) if deleted else 0


def run_tool(tool: Tool, version: str, rows: int, root: Path, log: Log) -> list[Row]:
    """A tool's three syncs on a fresh copy of the warehouse."""
    copy_warehouse(cached_warehouse(CACHE, rows), tool.prepare(root))
    results = []
    updated, deleted = 0, 0
    for scenario in (FULL, NO_CHANGE, CHANGED):
        if scenario == CHANGED:
            updated, deleted = change(root / "warehouse.duckdb")
        log(f"{tool.name}: {scenario}")
        with ReceiverProcess(REPO) as receiver:
            tool.point_at(root, receiver.url)
            code, out, err, wall_s, peak_mb = timed(tool.command(root, receiver.url))
        outcome = tool.outcome(code, out, err)
        expected = rows if scenario == FULL else updated
        results.append(
            Row(tool.name, version, scenario, rows, round(wall_s, 3), peak_mb,
                receiver.records or 0, outcome.deletes, expected, deleted, outcome.ok,
                outcome.error)
        )  # fmt: skip
    return results


def not_run(tool: Tool, rows: int, problem: str) -> list[Row]:
    """The rows of a peer that could not be installed: the reason, no numbers."""
    return [Row(tool.name, "(not installed)", s, rows, 0.0, 0.0, 0, None, 0, 0, False, problem)
            for s in (FULL, NO_CHANGE, CHANGED)]  # fmt: skip


def best_of(tries: list[Row]) -> Row:
    """The fastest successful try, with the highest peak memory of all tries."""
    fastest = min(tries, key=lambda r: (not r.ok, r.wall_s))
    return replace(fastest, peak_mb=max(r.peak_mb for r in tries))


class Log:
    def __init__(self, console: Console) -> None:
        self.console = console

    def __call__(self, message: str) -> None:
        self.console.print(f"[dim]{time.strftime('%H:%M:%S')}[/] {escape(message)}")


def table(results: list[Row], note: str) -> Table:
    grid = Table(title="Side by side: users model → loopback webhook receiver", caption=note)
    for name in ("tool", "scenario", "wall (s)", "peak MB", "records sent", "deletes sent"):
        right = name not in ("tool", "scenario")
        grid.add_column(name, justify="right" if right else "left", no_wrap=True)
    grid.add_column("result")
    for r in results:
        deletes = f"{r.deletes:,}" if r.deletes is not None else "0 (not supported)"
        grid.add_row(
            f"{r.tool} {r.version}",
            r.scenario,
            f"{r.wall_s:.2f}" if r.ok else "—",
            f"{r.peak_mb:,.0f}" if r.ok else "—",
            f"{r.received:,}",
            deletes,
            escape(r.verdict) if r.ok else f"[red]{escape(r.verdict[:300])}",
        )
    return grid


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.peers", description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=1, help="best of N tries per sync")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--json", type=Path, help="also write the results here")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    console = Console(width=WIDTH)
    log = Log(console)
    peers = peers_venv.prepare(log)
    work = Path(tempfile.mkdtemp(prefix="ebbtide-peers-", dir=tempfile.gettempdir()))
    load_before = os.getloadavg()[0]
    results: list[Row] = []
    try:
        for tool in TOOLS:
            peer = peers.get(tool.name)
            if peer is not None and peer.problem:
                results.extend(not_run(tool, args.rows, peer.problem))
                continue
            version = peer.version if peer and peer.version else _ebbtide_version()
            tries = [
                run_tool(tool, version, args.rows, work / f"{tool.name}-{n}", log)
                for n in range(args.repeat)
            ]
            results.extend(best_of(list(t)) for t in zip(*tries, strict=True))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    note = notes(args, load_before, os.getloadavg()[0], work)
    console.print(table(results, note))
    for tool in TOOLS:
        console.print(f"[bold]{tool.name}[/]: {escape(tool.setup)}")
    if args.json:
        write_json(args.json, results, note)


def notes(args: argparse.Namespace, before: float, after: float, work: Path) -> str:
    kept = f" Work folder kept: {work}." if args.keep else ""
    return (
        f"{machine()}. {args.rows:,} rows; best of {args.repeat}. Each sync a fresh process,"
        f" wall time of the whole command. Load average (1 min) {before:.2f} before,"
        f" {after:.2f} after.{kept}"
    )


def _ebbtide_version() -> str:
    from importlib.metadata import version

    return version("ebbtide")


def write_json(path: Path, results: list[Row], note: str) -> None:
    setups = {tool.name: tool.setup for tool in TOOLS}
    rows = [{**asdict(r), "verdict": r.verdict} for r in results]
    document = {"note": note, "setups": setups, "pins": peers_venv.PEER_PINS, "results": rows}
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
