"""The REST API over a state store with a long history, in a process of its own.

`python -m bench.serve_api ROOT STATE_URL MAPPING RUNS NOISE` opens (and migrates) a fresh
state store, bulk-inserts RUNS finished runs of MAPPING interleaved with NOISE runs of the
workspace's other mappings, creates a read token, and serves the API as `ebbtide serve` does
(uvicorn in a thread, 127.0.0.1, any free port). It prints one JSON line (the URL, the token,
the seeding time, the query plans of the runs list) and serves until its stdin closes, then
prints a last line with its peak memory. The requests come from another process (the bench),
so client and server do not share one interpreter's lock.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from ebbtide.config.workspace import load_workspace
from ebbtide.server.api.app import create_app
from ebbtide.server.api.context import services_over
from ebbtide.server.api.server import ApiServer
from ebbtide.state.schema import runs
from ebbtide.state.store import SqlStateStore
from ebbtide.state.tokens import TokenBook, TokenScope

BLOCK = 2_000  # runs inserted one by one; the rest are copies of them
T0 = datetime(2024, 1, 1, tzinfo=UTC)


def seed(engine: sa.Engine, mapping: str, others: list[str], wanted: int, noise: int) -> float:
    """`wanted` runs of `mapping` and `noise` of the others, interleaved in id order as a real
    history is. A block of BLOCK runs goes in row by row; then the table copies itself
    (`INSERT … SELECT`, doubling) until it holds them all: seconds, not minutes. Returns the
    seconds it took, statistics refreshed (as autovacuum or `ANALYZE` would)."""
    began = time.perf_counter()
    total = wanted + noise
    block = min(BLOCK, total)
    ours = max(1, round(block * wanted / total))  # runs of `mapping` in the block
    every = block / ours
    rows = [_run(mapping if i % every < 1 else others[i % len(others)], i) for i in range(block)]
    columns = [c for c in runs.c if c.name != "id"]
    with engine.begin() as conn:
        conn.execute(runs.insert(), rows)
        count = block
        while count < total:
            copied = sa.select(*columns).order_by(runs.c.id).limit(min(count, total - count))
            conn.execute(runs.insert().from_select(columns, copied))
            count += min(count, total - count)
    with engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE")
    return time.perf_counter() - began


def _run(mapping: str, i: int) -> dict[str, Any]:
    started = T0 + timedelta(seconds=30 * i)
    status = "failed" if i % 97 == 0 else "partial_success" if i % 31 == 0 else "success"
    return {
        "mapping": mapping,
        "trigger": "schedule",
        "status": status,
        "started_at": started,
        "finished_at": started + timedelta(seconds=1.5),
        "heartbeat_at": started + timedelta(seconds=1.5),
        "extract_s": 0.2,
        "diff_s": 0.1,
        "load_s": 1.0,
        "commit_s": 0.1,
        "extracted": 5,
        "added": 1,
        "updated": 1,
        "loaded_updated": 1,
        "loaded_new": 1,
        "failed_by_class": {"validation": 1} if status != "success" else {},
        "error": "1 record failed" if status != "success" else None,
        "actor": "scheduler",
        "host": "bench",
        "pid": 1,
    }


def plans(engine: sa.Engine, mapping: str, before: int) -> dict[str, list[str]]:
    """How the database runs the runs list (as `SqlStateStore.list_runs` builds it)."""
    first = sa.select(runs).where(runs.c.mapping == mapping).order_by(runs.c.id.desc()).limit(20)
    queries = {
        "first page": first,
        "keyset page": first.where(runs.c.id < before),
        "failed only": first.where(runs.c.status == "failed"),
        "a status none has": first.where(runs.c.status == "cancelled"),
    }
    explain = "EXPLAIN QUERY PLAN " if engine.dialect.name == "sqlite" else "EXPLAIN ANALYZE "
    found = {}
    with engine.connect() as conn:
        for name, query in queries.items():
            sql = str(query.compile(engine, compile_kwargs={"literal_binds": True}))
            rows = conn.exec_driver_sql(explain + sql).all()
            found[name] = [" | ".join(str(v) for v in row) for row in rows]
    return found


def extent(engine: sa.Engine, mapping: str) -> dict[str, Any]:
    """The mapping's oldest and newest run ids, its runs and every mapping's."""
    ours = sa.select(sa.func.min(runs.c.id), sa.func.max(runs.c.id), sa.func.count())
    with engine.connect() as conn:
        low, high, count = conn.execute(ours.where(runs.c.mapping == mapping)).one()
        total = conn.execute(sa.select(sa.func.count()).select_from(runs)).scalar_one()
    return {"ids": [int(low), int(high)], "history": int(count), "total": int(total)}


def main(root: str, url: str, mapping: str, wanted: int, noise: int) -> None:
    workspace = load_workspace(Path(root))
    state = SqlStateStore(url, workspace.root)
    others = sorted(set(workspace.spec.mappings) - {mapping})
    seed_s = seed(state.engine, mapping, others, wanted, noise)
    seeded = extent(state.engine, mapping)
    token, _ = TokenBook(state.engine).create(TokenScope.READ, "bench")
    services = services_over(lambda: workspace, state)  # as `ebbtide serve` builds them
    server = ApiServer(create_app(services), "127.0.0.1", 0)
    ready = {
        "url": server.start(),
        "token": token,
        "seed_s": round(seed_s, 2),
        **seeded,
        "plans": plans(state.engine, mapping, sum(seeded["ids"]) // 2),
    }
    print(json.dumps(ready), flush=True)
    sys.stdin.read()  # the bench closes it when done
    server.stop()
    state.dispose()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"max_rss_mb": round(rss, 1)}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
