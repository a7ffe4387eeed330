"""Cursor-assisted detection against the full diff, on a PostgreSQL model streamed out.

    .venv/bin/python -m bench.cursor [--rows N] [--keep]

Creates the `users` table of bench/postgres_extract.py (N rows, default 1M; `updated_at` a
timestamptz) in a schema of its own in the `test` database on 127.0.0.1:5432, dropped at the
end, and a workspace with two mirror mappings of it to the count-only webhook receiver: one
with the default full diff, one with `change_detection: {cursor: updated_at}`. Each sync is a
real `ebbtide sync run` process, timed whole with its peak memory: the first full sync, a sync
with nothing changed, and one after 1% of the rows were updated (`updated_at = now()`) and
0.5% deleted. The same changes reach both mappings; both must send the same records.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

import psycopg
from rich.console import Console
from rich.table import Table

from bench.measure import _ebbtide, _run_command
from bench.postgres_extract import DSN, USERS
from bench.receiver import ReceiverProcess

REPO = Path(__file__).resolve().parent.parent

WORKSPACE = """\
state: sqlite:///.ebbtide/state.db
sources:
  warehouse: {{type: postgres, url: "{dsn}"}}
models:
  users:
    source: warehouse
    primary_key: id
    sql: SELECT id, email, name, plan, ltv, updated_at FROM {schema}.users
destinations:
  hook: {{type: webhook, url: "{url}", batch_size: 500, concurrency: 4}}
mappings:
  users_full:
    model: users
    destination: hook
    action: upsert
    mode: mirror
    fields: {fields}
  users_cursor:
    model: users
    destination: hook
    action: upsert
    mode: mirror
    change_detection: {{cursor: updated_at}}
    fields: {fields}
"""
FIELDS = "{email: email, name: name, plan: plan, ltv: ltv, updated_at: updated_at}"
SCENARIOS = ("first full sync", "no change", "1% updated, 0.5% deleted")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.cursor", description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--keep", action="store_true", help="keep the workspace folder")
    args = parser.parse_args(argv)
    console = Console(width=150)
    schema = f"bench_cursor_{uuid.uuid4().hex[:8]}"
    root = Path(tempfile.mkdtemp(prefix="ebbtide-bench-cursor-"))
    rows: list[dict[str, Any]] = []
    load_before = os.getloadavg()[0]
    try:
        _execute(f"CREATE SCHEMA {schema}", USERS.format(schema=schema, rows=args.rows))
        _execute(f"ALTER TABLE {schema}.users ADD PRIMARY KEY (id)", f"ANALYZE {schema}.users")
        with ReceiverProcess(REPO) as receiver:
            (root / "ebbtide.yml").write_text(
                WORKSPACE.format(dsn=DSN, schema=schema, url=receiver.url, fields=FIELDS),
                encoding="utf-8",
            )
            for scenario in SCENARIOS:
                if scenario.startswith("1%"):
                    _execute(
                        f"UPDATE {schema}.users SET plan = 'changed', updated_at = now()"
                        " WHERE id % 100 = 0",
                        f"DELETE FROM {schema}.users WHERE id % 200 = 1",
                    )
                for mapping in ("users_full", "users_cursor"):
                    rows.append(_sync(root, mapping, scenario))
    finally:
        _execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        if args.keep:
            console.print(f"kept the workspace {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    _show(console, rows, args.rows, load_before)


def _sync(root: Path, mapping: str, scenario: str) -> dict[str, Any]:
    argv = [_ebbtide(), "--workspace", str(root), "sync", "run", mapping, "--json"]
    run, wall_s, rss_mb = _run_command(REPO, argv)
    sent = sum(int(run[k]) for k in ("loaded_new", "loaded_updated", "loaded_deleted"))
    return {
        "scenario": scenario,
        "mapping": mapping,
        "status": run["status"],
        "detection": run.get("detection") or "",
        "sent": sent,
        "deleted": int(run["loaded_deleted"]),
        "wall_s": wall_s,
        "run_s": float(run["duration_s"]),
        "extract_s": float(run["phases_s"]["extract"] or 0.0),
        "rss_mb": rss_mb,
    }


def _show(console: Console, rows: list[dict[str, Any]], size: int, load_before: float) -> None:
    table = Table(title=f"Cursor-assisted detection vs full diff: PostgreSQL model, {size:,} rows")
    for column in ("scenario", "mapping", "detection", "status", "sent", "deletes sent"):
        table.add_column(column)
    for column in ("wall (s)", "run (s)", "extract (s)", "peak MB"):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(
            row["scenario"],
            row["mapping"],
            row["detection"],
            row["status"],
            f"{row['sent']:,}",
            f"{row['deleted']:,}",
            f"{row['wall_s']:.2f}",
            f"{row['run_s']:.2f}",
            f"{row['extract_s']:.2f}",
            f"{row['rss_mb']:.0f}",
        )
    console.print(table)
    console.print(
        f"{os.cpu_count()} CPUs; load average (1 min) {load_before:.2f} before,"
        f" {os.getloadavg()[0]:.2f} after."
    )
    for scenario in SCENARIOS:
        sent = {r["mapping"]: r["sent"] for r in rows if r["scenario"] == scenario}
        if len(set(sent.values())) > 1:
            console.print(f"[red]{scenario}: the two mappings sent different counts: {sent}")


def _execute(*statements: str) -> None:
    with psycopg.connect(DSN, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


if __name__ == "__main__":
    main()
