"""The serve benchmark's workspace: 200 mappings of 5-row DuckDB models, each to a file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import duckdb
import yaml

MAPPINGS = 200
ROWS_PER_MODEL = 5
SPREAD = "spread (200 × 1m)"
LOCKSTEP = "1m intervals (200 × 1m)"


def write_serve_workspace(root: Path, schedule: Callable[[int], str]) -> Path:
    """200 mappings of 5-row DuckDB models, each to its own JSONL file; `schedule(i)` is the
    i-th mapping's schedule."""
    root.mkdir(parents=True, exist_ok=True)
    with duckdb.connect(str(root / "warehouse.duckdb")) as con:
        con.execute(
            "CREATE OR REPLACE TABLE users AS SELECT i::BIGINT AS id, 'u' || i || '@x.io' AS"
            f" email, i % {MAPPINGS} AS shard FROM range({MAPPINGS * ROWS_PER_MODEL}) t(i)"
        )
    names = [f"m{i:03d}" for i in range(MAPPINGS)]
    spec = {
        "state": "sqlite:///.ebbtide/state.db",
        "sources": {"warehouse": {"type": "duckdb", "path": "warehouse.duckdb"}},
        "models": {
            name: {
                "source": "warehouse",
                "primary_key": "id",
                "sql": f"select id, email from users where shard = {i}",
            }
            for i, name in enumerate(names)
        },
        "destinations": {name: {"type": "file", "path": f"out/{name}.jsonl"} for name in names},
        "mappings": {
            name: {
                "model": name,
                "destination": name,
                "action": "upsert",
                "fields": {"email": "email"},
                "schedule": schedule(i),
            }
            for i, name in enumerate(names)
        },
    }
    (root / "ebbtide.yml").write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return root


def spread(i: int) -> str:
    """Every minute at second `i * 60 / 200` (croniter's sixth field is the second)."""
    return f"* * * * * {i * 60 // MAPPINGS}"


def lockstep(i: int) -> str:
    """`1m`: an interval is first due when serve first sees it, so all 200 come due together
    once; from then on each sits at its own offset within the minute."""
    return "1m"
