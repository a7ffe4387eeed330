"""The destinations row: 100,000 records to each vendor's emulator, at the destination's default
batch size and rate limit, in a fresh `ebbtide sync run` process.

The emulator runs in this process (a thread; this process does nothing else meanwhile) and
enforces the vendor's limit itself, so the table can show both how fast the sync went and how
close it kept to the limit: the allowed rate used (target ≥ 90%) and the most requests that
arrived in any window of the limit (never above it).
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import yaml
from rich.table import Table

from ebbtide.destinations import DESTINATIONS

RECORDS = 100_000
CREDENTIAL = "bench-credential-not-a-secret"
TIMEOUT_S = 1800
_NOT_VENDORS = frozenset({"postgres", "file"})  # no HTTP API with limits to measure


@dataclass(frozen=True)
class DestinationRow:
    type: str
    action: str
    batch_size: int
    limit: tuple[int, float] | None  # (requests, per seconds) by default
    records: int  # the emulator holds this many at the end
    wall_s: float
    requests: int
    most_in_window: int  # most requests that arrived within any window of the limit
    status: str
    error: str = ""

    @property
    def rate(self) -> float:
        return self.records / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def used(self) -> float | None:
        """The share of the allowed record rate the sync reached."""
        if self.limit is None:
            return None
        requests, per_s = self.limit
        return self.rate / (requests / per_s * self.batch_size)

    def cells(self) -> list[str]:
        limit = f"{self.limit[0]}/{self.limit[1]:g}s" if self.limit else "none"
        used = f"{self.used:.0%}" if self.used is not None else "-"
        window = f"{self.most_in_window}/{self.limit[0]}" if self.limit else "-"
        verdict = self.status
        if self.status == "success" and self.limit is not None:
            within = self.most_in_window <= self.limit[0]
            verdict = "ok" if within and (self.used or 0) >= 0.9 else "MISSED"
        return [
            self.type,
            self.action,
            str(self.batch_size),
            limit,
            f"{self.records:,}",
            f"{self.wall_s:.1f}",
            f"{self.rate:,.0f}",
            used,
            window,
            verdict,
        ]


def cases() -> list[Any]:
    """The conformance cases of the vendor emulators (tests/emulators/*.py)."""
    import tests.emulators

    found = []
    for module in pkgutil.iter_modules(tests.emulators.__path__):
        case = getattr(importlib.import_module(f"tests.emulators.{module.name}"), "CASE", None)
        if case is not None and case.type not in _NOT_VENDORS:
            found.append(case)
    return sorted(found, key=lambda c: c.type)


def run_destinations(
    repo: Path, work: Path, log: Callable[[str], None], records: int = RECORDS
) -> list[DestinationRow]:
    rows = []
    for case in cases():
        log(f"destinations: {records:,} records to the {case.type} emulator")
        rows.append(_measure(repo, work / f"dest-{case.type}", case, records))
    return rows


def _defaults(case: Any) -> tuple[int, tuple[int, float] | None]:
    """The batch size and rate limit the destination takes when the workspace sets none (some
    depend on other settings, such as HubSpot's tier): read off a validated config."""
    settings = {"type": case.type, **case.settings("http://127.0.0.1:9")}
    config = DESTINATIONS.get(case.type).config.model_validate(settings)
    limit = config.rate_limit
    batch_size = min(config.batch_size, case.max_batch_size)
    return batch_size, (limit.requests, limit.per_s) if limit is not None else None


def _measure(repo: Path, root: Path, case: Any, records: int) -> DestinationRow:
    batch_size, limit = _defaults(case)
    root.mkdir(parents=True)
    with duckdb.connect(str(root / "warehouse.duckdb")) as con:
        con.execute(
            "CREATE TABLE users AS SELECT i::BIGINT AS id, 'user' || i || '@example.com' AS email,"
            " 'User ' || i AS name, 'free' AS plan, i * 1.5 AS score"
            f" FROM range(1, {records + 1}) t(i)"
        )
    with case.emulator(credential=CREDENTIAL) as emulator:
        if limit is not None:
            emulator.limit(*limit)  # the vendor's own limit, enforced at arrival
        settings = {"type": case.type, **case.settings(emulator.url)}
        doc = {
            "sources": {"warehouse": {"type": "duckdb", "path": "warehouse.duckdb"}},
            "models": {
                "users": {
                    "source": "warehouse",
                    "primary_key": "id",
                    "sql": "select id, email, name, plan, score from users",
                }
            },
            "destinations": {"vendor": settings},
            "mappings": {
                "users": {
                    "model": "users",
                    "destination": "vendor",
                    "action": case.action,
                    "mode": "upsert",
                    "fields": case.fields,
                    **case.mapping_extra,
                }
            },
        }
        (root / "ebbtide.yml").write_text(yaml.safe_dump(doc, sort_keys=False))
        env = {**os.environ, "CONFORMANCE_CREDENTIAL": CREDENTIAL}
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "ebbtide", "sync", "run", "users"],
            cwd=root,
            env={**env, "PYTHONPATH": str(repo)},
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            check=False,
        )
        wall = time.perf_counter() - started
        arrivals = [s.at for s in emulator.seen if s.path in case.record_paths]
        held = len(case.held(emulator))
    status = "success" if done.returncode == 0 else f"exit {done.returncode}"
    return DestinationRow(
        case.type,
        case.action,
        batch_size,
        limit,
        held,
        wall,
        len(arrivals),
        most_in_window(arrivals, limit[1]) if limit else 0,
        status,
        "" if done.returncode == 0 else (done.stderr or done.stdout)[-1500:],
    )


def most_in_window(arrivals: list[float], window_s: float) -> int:
    """The most arrivals within any half-open interval of `window_s` seconds."""
    times = sorted(arrivals)
    most, start = 0, 0
    for end, at in enumerate(times):
        while times[start] <= at - window_s:
            start += 1
        most = max(most, end - start + 1)
    return most


def table(rows: list[DestinationRow], records: int = RECORDS) -> Table:
    grid = Table(
        title=f"destinations: {records:,} records to each vendor emulator, upsert, defaults",
        caption="used: the share of the default rate limit's record rate reached (target ≥ 90%);"
        " most in a window: requests that arrived within any window of the limit (never above)",
    )
    for name in (
        "destination",
        "action",
        "batch",
        "rate limit",
        "records",
        "wall (s)",
        "records/s",
        "used",
        "most in a window",
        "result",
    ):
        grid.add_column(name, justify="left" if name in ("destination", "action") else "right")
    for row in rows:
        grid.add_row(*row.cells())
    return grid
