"""The benchmark's scenarios, in order: per size a full, a no-change and a changed sync."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from bench.measure import Measurement, measure_bare_client, measure_payloads, measure_sync
from bench.targets import CHANGED, FULL, NO_CHANGE, PAYLOAD_ROWS, PAYLOADS
from bench.warehouse import cached_warehouse, change_warehouse, copy_warehouse
from bench.workspace import BATCH_SIZE, CONCURRENCY, MAPPING, write_workspace

BARE_RECORDS = 1_000_000


@dataclass(frozen=True)
class Suite:
    """Where the benchmark runs and against which receiver."""

    repo: Path  # children run from here, so `python -m bench.…` imports
    work: Path  # one workspace per size and round, removed afterwards unless `keep`
    cache: Path  # pristine warehouses, by size, kept between benchmark runs
    url: str
    log: Callable[[str], None]
    keep: bool = False
    repeat: int = 1
    sent: list[int] = field(default_factory=list)  # by every try, to check the receiver's count

    def size(self, rows: int) -> list[Measurement]:
        """The scenarios of one size, `repeat` times over: the fastest of each."""
        rounds = [self._round(rows, self.work / f"users-{rows}-{n}") for n in range(self.repeat)]
        return [best_of(list(tries)) for tries in zip(*rounds, strict=True)]

    def bare_client(self) -> Measurement:
        self.log(f"bare aiohttp client: {BARE_RECORDS:,} records")
        tries = [
            measure_bare_client(self.repo, self.url, BARE_RECORDS, BATCH_SIZE, CONCURRENCY)
            for _ in range(self.repeat)
        ]
        self.sent.extend(m.sent for m in tries)
        return best_of(tries)

    def payloads(self) -> Measurement:
        """Building payloads alone (no warehouse, no sending): the mapping's own speed."""
        self.log(f"{PAYLOADS}: {PAYLOAD_ROWS:,} rows")
        return best_of(
            [measure_payloads(self.repo, PAYLOAD_ROWS, PAYLOADS) for _ in range(self.repeat)]
        )

    def _round(self, rows: int, root: Path) -> list[Measurement]:
        """Full sync, no-change sync, then a sync after 1% of rows changed and 0.5% deleted."""
        self.log(f"{rows:,} rows: preparing the warehouse (cached in {self.cache})")
        copy_warehouse(cached_warehouse(self.cache, rows), write_workspace(root, self.url))
        results = []
        for scenario in (FULL, NO_CHANGE):
            self.log(f"{rows:,} rows: {scenario}")
            expected = rows if scenario == FULL else 0
            results.append(measure_sync(self.repo, root, MAPPING, scenario, rows, expected))
        updated, deleted = change_warehouse(root / "warehouse.duckdb")
        self.log(f"{rows:,} rows: {CHANGED} ({updated:,} updated, {deleted:,} deleted)")
        results.append(measure_sync(self.repo, root, MAPPING, CHANGED, rows, updated + deleted))
        if not self.keep:
            shutil.rmtree(root, ignore_errors=True)
        self.sent.extend(m.sent for m in results)
        return results


def best_of(tries: list[Measurement]) -> Measurement:
    """The fastest try stands for a scenario (the others were slowed by the machine, not the
    code), carrying the highest peak memory of all tries, which neighbours do not inflate."""
    fastest = min(tries, key=lambda m: (m.status != "success", m.wall_s))
    return replace(fastest, max_rss_mb=max(m.max_rss_mb for m in tries))
