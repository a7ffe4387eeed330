"""One dlt sync of the bench's `users` table to the webhook receiver, for `python -m bench.peers`.

Run by the throwaway venv's interpreter (it imports dlt, which the project does not have):

    python bench/peers_dlt_sync.py WAREHOUSE URL PIPELINES_DIR BATCH_SIZE PARALLEL

A resource reads the DuckDB table as Arrow record batches, incremental on `updated_at`
(dlt keeps the cursor in its pipeline state, in PIPELINES_DIR); a `@dlt.destination` sink
POSTs each batch in the webhook protocol's shape (every record `op: updated`: dlt has no
notion of a deleted row here). It prints one JSON line: how many records it posted.
"""

from __future__ import annotations

import datetime
import json
import os
import sys
import threading
from collections.abc import Iterator
from typing import Any

import dlt
import duckdb
import pyarrow as pa
import requests

COLUMNS = ("email", "name", "plan", "ltv", "updated_at")
READ_ROWS = 100_000  # rows per Arrow batch read from DuckDB
EPOCH = datetime.datetime(1970, 1, 1)  # noqa: DTZ001 (the column is a naive TIMESTAMP)

_local = threading.local()
_sent = [0]
_sent_lock = threading.Lock()


def _session() -> requests.Session:
    """One HTTP session per loader thread (requests sessions are not shared across threads)."""
    session: requests.Session | None = getattr(_local, "session", None)
    if session is None:
        session = _local.session = requests.Session()
    return session


def _records(items: Any) -> list[dict[str, Any]]:
    rows = items.to_pylist() if isinstance(items, pa.Table | pa.RecordBatch) else items
    return [
        {"op": "updated", "key": row["id"], "data": {c: row[c] for c in COLUMNS}} for row in rows
    ]


def make_sink(url: str, batch_size: int, parallel: int) -> Any:
    @dlt.destination(
        batch_size=batch_size,
        loader_file_format="parquet",
        name="hook",
        max_parallel_load_jobs=parallel,
        loader_parallelism_strategy="parallel",
    )
    def hook(items: Any, table: Any) -> None:
        records = _records(items)
        body = {"mapping": "users_to_hook", "action": "upsert", "records": records}
        data = json.dumps(body, default=str).encode()
        answer = _session().post(
            url, data=data, headers={"Content-Type": "application/json"}, timeout=30
        )
        answer.raise_for_status()
        with _sent_lock:
            _sent[0] += len(records)

    return hook


def users_resource(warehouse: str) -> Any:
    @dlt.resource(name="users", primary_key="id", write_disposition="append")
    def users(
        # dlt reads the cursor from the default: its declared way to ask for one.
        updated_at: Any = dlt.sources.incremental("updated_at", initial_value=EPOCH),  # noqa: B008
    ) -> Iterator[pa.RecordBatch]:
        with duckdb.connect(warehouse, read_only=True) as con:
            reader = con.execute(
                "SELECT id, email, name, plan, ltv, updated_at FROM users WHERE updated_at >= ?",
                [updated_at.last_value],
            ).to_arrow_reader(READ_ROWS)
            yield from reader

    return users


def main() -> None:
    warehouse, url, pipelines_dir, batch_size, parallel = sys.argv[1:6]
    # Several files per load, so the loader can post them in parallel.
    os.environ.setdefault("DATA_WRITER__FILE_MAX_ITEMS", str(100_000))
    os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
    pipeline = dlt.pipeline(
        pipeline_name="users_to_hook",
        destination=make_sink(url, int(batch_size), int(parallel)),
        pipelines_dir=pipelines_dir,
        dataset_name="users",
    )
    info = pipeline.run(users_resource(warehouse))
    info.raise_on_failed_jobs()
    print(json.dumps({"sent": _sent[0], "deleted": 0}))  # noqa: T201 (read by bench.peers)


if __name__ == "__main__":
    main()
