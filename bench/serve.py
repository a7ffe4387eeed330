"""The serve benchmark: 200 mappings on a 1-minute schedule in one `ebbtide serve` process,
and the REST API's runs list over a history of 100,000 runs (bench/README.md, "serve").

Each part runs in a fresh child process: `bench.serve_child` (the scheduler loop, bounded in
time) and `bench.serve_api` (the API over a seeded state store, on SQLite and PostgreSQL);
the requests are timed here, in another process than the server.
"""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console

from bench.measure import Measurement, run_child
from bench.report import journal_note, table
from bench.serve_workspace import (
    LOCKSTEP,
    MAPPINGS,
    SPREAD,
    lockstep,
    spread,
    write_serve_workspace,
)

WORKERS = 2  # `ebbtide serve`'s default
MAX_DELAY_P99_S = 2.0
MAX_API_P99_MS = 100.0
HISTORY_RUNS = 100_000
NOISE_RUNS = 100_000  # other mappings' runs, interleaved
BUSY_MAPPING = "m000"
PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"
FIRST_PAGES = 200
KEYSET_PAGES = 100


@dataclass(frozen=True)
class Knobs:
    """How long each part runs: the full bench, or `--quick`."""

    spread_s: float = 70.0  # every mapping comes due at least once a minute
    # The first minute runs every mapping once (all due at once); then their slots spread.
    lockstep_s: float = 150.0
    history_runs: int = HISTORY_RUNS
    noise_runs: int = NOISE_RUNS
    requests: int = FIRST_PAGES

    @classmethod
    def quick(cls) -> Knobs:
        return cls(spread_s=30.0, lockstep_s=100.0, requests=100)


@dataclass(frozen=True)
class ServeRow:
    """One serve measurement: a distribution (p50/p99/max) and its verdict."""

    scenario: str
    size: int  # mappings, or runs in the mapping's history
    samples: int  # runs, ticks or requests measured
    wall_s: float
    max_rss_mb: float
    p50: float
    p99: float
    worst: float
    unit: str  # s or ms
    target: str
    passed: bool | None
    why: str = ""
    sent: int | None = None  # records the runs sent (scheduler rows)
    extra: str = ""  # more of the distribution (the tick's CPU time)
    notes: list[str] = field(default_factory=list)

    def cells(self) -> list[str]:
        """The cells of the bench table: scenario, rows, records sent, wall, records/s, peak
        MB, the distribution (where the sync rows show phases), target, result."""
        result = "—"
        if self.passed is not None:
            result = "[green]pass" if self.passed else f"[red]FAIL {self.why}"
        spread = f"p50/p99/max {self.p50:.3g}/{self.p99:.3g}/{self.worst:.3g} {self.unit}"
        spread += self.extra
        return [
            self.scenario,
            f"{self.size:,}",
            "—" if self.sent is None else f"{self.sent:,}",
            f"{self.wall_s:.2f}",
            "—",
            f"{self.max_rss_mb:,.0f}",
            spread,
            self.target,
            result,
        ]


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0–100), nearest rank: p99 of 200 samples is the 198th."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


# -- the scheduler ----------------------------------------------------------------------------


def measure_schedule(
    repo: Path,
    root: Path,
    name: str,
    seconds: float,
    runs_wanted: int,
    *,
    after_first: bool = False,
) -> tuple[ServeRow, dict[str, Any]]:
    """The due→start delay of every scheduled run in one bounded serve; with `after_first`,
    of every run but each mapping's first (all come due together when serve first sees
    them: that burst is reported in the notes, the row measures the steady state)."""
    got = run_child(repo, "bench.serve_child", root, seconds, WORKERS, runs_wanted)
    runs = got["runs"]
    burst: list[float] = []
    if after_first:
        seen: set[str] = set()
        firsts = []
        for run in sorted(runs, key=lambda r: r["run_id"]):
            if run["mapping"] not in seen:
                seen.add(run["mapping"])
                firsts.append(run)
        burst = [r["delay_s"] for r in firsts]
        # Slots due while the start-up burst still ran wait behind it: the steady state
        # begins once every first run has started.
        cleared = max((_started(r) for r in firsts), default="")
        runs = [r for r in runs if r not in firsts and r["due_at"] > cleared]
    waited = [r["delay_s"] for r in runs] + got["unstarted_s"]  # unstarted: lower bounds
    failed = [r for r in runs if r["status"] != "success"]
    p99 = percentile(waited, 99)
    passed = p99 < MAX_DELAY_P99_S and not failed
    waiting = len(got["unstarted_s"])
    why = f"p99 {p99:.3g} s"
    if failed:
        why = f"{len(failed)} run(s) not success"
    if got["unobserved"] or not runs:
        passed, why = False, f"{got['unobserved']} run(s) with no claim seen: bench broken"
    notes = [
        f"{len(runs)} scheduled runs ({got['events']}); {waiting} slot(s) due but not started"
        " when serve stopped, counted with the time they had waited (a lower bound)"
    ]
    if burst:
        notes.append(
            f"first runs when serve starts (all {len(burst)} due at once, not in the row, nor"
            f" the slots due before the last of them started): delay p50"
            f" {percentile(burst, 50):.3g} s, max {max(burst):.3g} s"
        )
    row = ServeRow(
        scenario=f"serve: due→start, {name}",
        size=MAPPINGS,
        samples=len(waited),
        wall_s=got["wall_s"],
        max_rss_mb=got["max_rss_mb"],
        p50=percentile(waited, 50),
        p99=p99,
        worst=max(waited, default=float("nan")),
        unit="s",
        target=f"p99 < {MAX_DELAY_P99_S:g} s",
        passed=passed,
        why="" if passed else why,
        sent=got["sent"],
        notes=notes,
    )
    return row, got


def _started(run: dict[str, Any]) -> str:
    """When a run started, as an ISO time comparable with the `due_at` texts."""
    due = datetime.fromisoformat(run["due_at"])
    return (due + timedelta(seconds=run["delay_s"])).isoformat()


def tick_row(got: dict[str, Any], name: str) -> ServeRow:
    """Scheduler overhead: wall and CPU of each tick after the first (which registers the
    200 mappings' due times)."""
    ticks = got["ticks"][1:]
    walls = [w * 1000 for w, _, _ in ticks]
    cpus = [c * 1000 for _, c, _ in ticks]
    first_wall, first_cpu, _ = got["ticks"][0]
    share = sum(cpus) / 1000 / got["wall_s"] * 100 if got["wall_s"] else 0.0
    cpu = f"{percentile(cpus, 50):.3g}/{percentile(cpus, 99):.3g}/{max(cpus, default=0):.3g}"
    notes = [
        f"{len(ticks)} ticks after the first; tick CPU p50/p99/max {cpu} ms;"
        f" scheduler CPU {share:.2f}% of one core; first tick (registers 200 due times)"
        f" {first_wall * 1000:.0f} ms wall, {first_cpu * 1000:.0f} ms CPU"
    ]
    return ServeRow(
        scenario=f"serve: scheduler tick ({name})",
        size=MAPPINGS,
        samples=len(ticks),
        wall_s=got["wall_s"],
        max_rss_mb=got["max_rss_mb"],
        p50=percentile(walls, 50),
        p99=percentile(walls, 99),
        worst=max(walls, default=float("nan")),
        unit="ms",
        target="—",
        extra=f", CPU p50 {percentile(cpus, 50):.2g} ms",
        passed=None,
        notes=notes,
    )


# -- the API ----------------------------------------------------------------------------------


def timed_gets(client: httpx.Client, paths: list[str]) -> list[float]:
    """Milliseconds per request; each must answer 200 with a list."""
    took = []
    for path in paths:
        began = time.perf_counter()
        answer = client.get(path)
        took.append((time.perf_counter() - began) * 1000)
        if answer.status_code != 200 or not isinstance(answer.json(), list):
            raise RuntimeError(f"GET {path}: {answer.status_code} {answer.text[:300]}")
    return took


def keyset_paths(client: httpx.Client, ids: tuple[int, int], pages: int) -> list[str]:
    """Half of the pages followed from the newest down (before = the last id of the page
    before), half at evenly spread depths down to the oldest runs."""
    paths, before = [], None
    base = f"/api/v1/runs?mapping={BUSY_MAPPING}&limit=20"
    for _ in range(pages // 2):
        page = client.get(base + (f"&before={before}" if before else "")).json()
        before = page[-1]["id"]
        paths.append(f"{base}&before={before}")
    low, high = ids
    step = (high - low) // (pages - pages // 2)
    paths += [f"{base}&before={low + 21 + n * step}" for n in range(pages - pages // 2)]
    return paths


def measure_api(
    repo: Path, root: Path, url: str, backend: str, knobs: Knobs, log: Callable[[str], None]
) -> list[ServeRow]:
    """The busy mapping's runs list through a real HTTP server in another process: first
    pages, keyset pages, and a status filter that matches a few runs and one that matches
    none."""
    args = [root, url, BUSY_MAPPING, knobs.history_runs, knobs.noise_runs]
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.serve_api", *map(str, args)],
        cwd=repo,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert server.stdin is not None and server.stdout is not None
    line = server.stdout.readline()
    if not line:
        server.kill()
        raise RuntimeError(f"bench.serve_api on {backend}: {server.communicate()[1][-3000:]}")
    ready = json.loads(line)
    log(f"{backend}: seeded {ready['total']:,} runs in {ready['seed_s']} s")
    try:
        began = time.perf_counter()
        took = timed_requests(ready, knobs)
        wall_s = time.perf_counter() - began
    finally:
        server.stdin.close()  # the server stops, whether the requests went well or not
        last = server.stdout.read().strip().splitlines()
        server.wait(30)
    rss = json.loads(last[-1])["max_rss_mb"] if last else 0.0
    plans = [f"{name}: " + "; ".join(plan) for name, plan in ready["plans"].items()]
    size, measured = ready["history"], (wall_s, rss)
    names = ("first page", "keyset pages", "status=failed", "status none has")
    return [
        _api_row(f"API runs: {name}, {backend}", size, took[name], measured, [] if n else plans)
        for n, name in enumerate(names)
    ]


def timed_requests(ready: dict[str, Any], knobs: Knobs) -> dict[str, list[float]]:
    """Milliseconds per request, by kind, through one keep-alive client."""
    headers = {"Authorization": f"Bearer {ready['token']}"}
    with httpx.Client(base_url=ready["url"], headers=headers, timeout=30) as client:
        first = f"/api/v1/runs?mapping={BUSY_MAPPING}&limit=20"
        timed_gets(client, [first] * 10)  # warm-up: connection, caches
        return {
            "first page": timed_gets(client, [first] * knobs.requests),
            "keyset pages": timed_gets(
                client, keyset_paths(client, tuple(ready["ids"]), KEYSET_PAGES)
            ),
            "status=failed": timed_gets(client, [first + "&status=failed"] * (knobs.requests // 2)),
            # A status none of its runs has: the filter reads the whole history to say so.
            "status none has": timed_gets(
                client, [first + "&status=cancelled"] * (knobs.requests // 4)
            ),
        }


def _api_row(
    scenario: str, size: int, took: list[float], measured: tuple[float, float], notes: list[str]
) -> ServeRow:
    p99 = percentile(took, 99)
    wall_s, rss = measured
    return ServeRow(
        scenario=scenario,
        size=size,
        samples=len(took),
        wall_s=wall_s,
        max_rss_mb=rss,
        p50=statistics.median(took),
        p99=p99,
        worst=max(took),
        unit="ms",
        target=f"p99 < {MAX_API_P99_MS:g} ms",
        passed=p99 < MAX_API_P99_MS,
        why=f"p99 {p99:.0f} ms",
        notes=notes,
    )


def pg_schema(dsn: str) -> str | None:
    """A fresh schema for the state store in the test database; None without a server."""
    import psycopg

    schema = f"bench_serve_{uuid.uuid4().hex[:8]}"
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
    except psycopg.OperationalError:
        return None
    return schema


def drop_schema(dsn: str, schema: str) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


# -- all of it --------------------------------------------------------------------------------


Part = Callable[[], list[ServeRow]]
CRASHES = (RuntimeError, subprocess.TimeoutExpired, ValueError, KeyError, OSError)


def run_serve(repo: Path, work: Path, knobs: Knobs, log: Callable[[str], None]) -> list[ServeRow]:
    """Spread and lock-step schedules, then the API on SQLite and PostgreSQL. A part that
    crashes is a row too (FAIL, with the error), so the table still prints."""
    spread_root = write_serve_workspace(work / "serve-spread", spread)
    lockstep_root = write_serve_workspace(work / "serve-lockstep", lockstep)

    def spread_part() -> list[ServeRow]:
        log(f"serve: {MAPPINGS} mappings due once a minute, spread over it, {knobs.spread_s:g} s")
        row, got = measure_schedule(repo, spread_root, SPREAD, knobs.spread_s, 10**9)
        return [row, tick_row(got, "spread")]

    def lockstep_part() -> list[ServeRow]:
        log(f"serve: {MAPPINGS} mappings on `1m` intervals ({knobs.lockstep_s:g} s)")
        row, _ = measure_schedule(
            repo, lockstep_root, LOCKSTEP, knobs.lockstep_s, 10 * MAPPINGS, after_first=True
        )
        return [row]

    def sqlite_part() -> list[ServeRow]:
        log(f"API: {knobs.history_runs:,} runs of {BUSY_MAPPING} on SQLite")
        url = f"sqlite:///{work / 'serve-api.db'}"
        return measure_api(repo, lockstep_root, url, "SQLite", knobs, log)

    def postgres_part() -> list[ServeRow]:
        schema = pg_schema(PG_DSN)
        if schema is None:
            log("API on PostgreSQL skipped: no server on 127.0.0.1:5432")
            return []
        try:
            log(f"API: {knobs.history_runs:,} runs of {BUSY_MAPPING} on PostgreSQL ({schema})")
            url = f"{PG_DSN}?options=-csearch_path%3D{schema}"
            return measure_api(repo, lockstep_root, url, "PostgreSQL", knobs, log)
        finally:
            drop_schema(PG_DSN, schema)

    parts: dict[str, Part] = {
        f"serve: due→start, {SPREAD}": spread_part,
        f"serve: due→start, {LOCKSTEP}": lockstep_part,
        "API runs list (SQLite)": sqlite_part,
        "API runs list (PostgreSQL)": postgres_part,
    }
    rows: list[ServeRow] = []
    for name, part in parts.items():
        try:
            rows += part()
        except CRASHES as error:
            rows.append(crashed(name, error))
    return rows


def crashed(scenario: str, error: BaseException) -> ServeRow:
    nan = float("nan")
    return ServeRow(
        scenario,
        0,
        0,
        0.0,
        0.0,
        nan,
        nan,
        nan,
        "",
        "",
        False,
        "crashed",
        notes=[str(error)[-2000:]],
    )


def serve_json(rows: list[ServeRow]) -> list[dict[str, Any]]:
    """The rows for `--json`; a crashed part's missing numbers are null (JSON has no NaN)."""
    return [
        {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in asdict(r).items()}
        for r in rows
    ]


def show_all(
    console: Console, results: list[Measurement], serve_rows: list[ServeRow], note: str
) -> None:
    """The bench table with the serve rows under the sync rows, then what explains them."""
    grid = table(results, note)
    if not results:
        grid.title = (
            f"ebbtide serve benchmark: {MAPPINGS} mappings, 1-minute schedule, one process"
            f" ({WORKERS} workers); runs list API over {HISTORY_RUNS:,} runs"
        )
    for row in serve_rows:
        grid.add_row(*row.cells())
    console.print(grid)
    journals = journal_note(results)
    if journals:
        console.print(journals)
    for m in results:
        if m.error:
            console.print(f"[red]{m.scenario} of {m.rows:,} rows: {m.status}[/]")
            console.print(m.error[-2000:], markup=False, highlight=False)
    for row in serve_rows:
        for line in row.notes:
            console.print(f"{row.scenario}: {line}", markup=False, highlight=False)
