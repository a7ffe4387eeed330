"""The three tools of `python -m bench.peers`: how each is configured, started and read.

Each tool gets a folder of its own holding its copy of the warehouse and its configuration;
`point_at` (re)writes the configuration for the receiver of the next sync, `command` is the
process to time, and `outcome` reads what the process said about its sync.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from bench import peers_venv
from bench.workspace import BATCH_SIZE, CONCURRENCY, MAPPING, write_workspace

REPO = Path(__file__).resolve().parents[1]
DLT_SCRIPT = REPO / "bench" / "peers_dlt_sync.py"
DLT_FILE_ROWS = 100_000  # rows per dlt load file (peers_dlt_sync.py); files load in parallel


@dataclass(frozen=True)
class Command:
    argv: list[str]
    cwd: Path
    env: dict[str, str]


@dataclass(frozen=True)
class Outcome:
    """What the tool said about its sync: success or not, deletes it sent, and why not."""

    ok: bool
    deletes: int | None  # None: the tool, as configured, cannot send deletes
    error: str | None = None


class Tool(Protocol):
    name: str
    setup: str  # what it is configured to do, for the table and the README

    def prepare(self, root: Path) -> Path:
        """Write the tool's configuration under `root`; returns where its warehouse goes."""

    def point_at(self, root: Path, url: str) -> None: ...

    def command(self, root: Path, url: str) -> Command: ...

    def outcome(self, returncode: int, stdout: str, stderr: str) -> Outcome: ...


def _json_in(text: str, opener: str) -> Any:
    """The JSON document a command printed (from the first `opener` on)."""
    start = text.find(opener)
    if start < 0:
        raise ValueError("no JSON in the output")
    return json.loads(text[start:])


def _failure(returncode: int, stderr: str, detail: str = "") -> Outcome:
    tail = detail or stderr.strip()[-600:] or "no output"
    return Outcome(False, None, f"exit {returncode}: {tail}")


class Ebbtide:
    name = "ebbtide"
    setup = (
        f"mirror mode (key + row hash diff, no cursor), webhook, batch {BATCH_SIZE},"
        f" concurrency {CONCURRENCY}"
    )

    def prepare(self, root: Path) -> Path:
        return write_workspace(root, "http://127.0.0.1:9/ingest")

    def point_at(self, root: Path, url: str) -> None:
        write_workspace(root, url)  # only the URL changes; the state and snapshot stay

    def command(self, root: Path, url: str) -> Command:
        ebbtide = str(Path(sys.executable).with_name("ebbtide"))
        argv = [ebbtide, "--workspace", str(root), "sync", "run", MAPPING, "--json"]
        return Command(argv, REPO, dict(os.environ))

    def outcome(self, returncode: int, stdout: str, stderr: str) -> Outcome:
        try:
            run = _json_in(stdout, "[")[-1]
        except (ValueError, IndexError, KeyError):
            return _failure(returncode, stderr)
        ok = run["status"] == "success"
        return Outcome(ok, int(run["loaded_deleted"]), None if ok else str(run["error"]))


# The webhook protocol's batch, written by drt's Jinja batch template: every row an upsert.
DRT_BATCH = (
    '{"mapping": "users_to_hook", "action": "upsert", "records": ['
    "{% for row in rows %}"
    '{"op": "updated", "key": {{ row.id }}, "data": {'
    '"email": {{ row.email | tojson_safe }}, "name": {{ row.name | tojson_safe }},'
    ' "plan": {{ row.plan | tojson_safe }}, "ltv": {{ row.ltv | tojson_safe }},'
    ' "updated_at": {{ row.updated_at | tojson_safe }}}}'
    "{% if not loop.last %},{% endif %}{% endfor %}]}"
)


class Drt:
    name = "drt"
    setup = (
        "`rest_api` destination, `body_mode: batch` (500 records a request), sync mode"
        " `incremental` on cursor `updated_at`, `batch_size: 500`, no pacing"
        " (`rate_limit.requests_per_second: 0`), one request at a time"
        " (mode `mirror` is refused for `rest_api`)"
    )

    def prepare(self, root: Path) -> Path:
        warehouse = root / "warehouse.duckdb"
        (root / "project" / "syncs").mkdir(parents=True, exist_ok=True)
        (root / "home" / ".drt").mkdir(parents=True, exist_ok=True)
        profile = {"warehouse": {"type": "duckdb", "database": str(warehouse)}}
        (root / "home" / ".drt" / "profiles.yml").write_text(json.dumps(profile), "utf-8")
        project = {"name": "peers", "version": "0.1", "profile": "warehouse"}
        (root / "project" / "drt_project.yml").write_text(json.dumps(project), "utf-8")
        return warehouse

    def point_at(self, root: Path, url: str) -> None:
        sync = {
            "name": MAPPING,
            "model": "ref('users')",
            "destination": {
                "type": "rest_api",
                "url": url,
                "method": "POST",
                "headers": {"Content-Type": "application/json"},
                "body_mode": "batch",
                "max_records_per_request": BATCH_SIZE,
                "batch_template": DRT_BATCH,
            },
            "sync": {
                "mode": "incremental",
                "cursor_field": "updated_at",
                "batch_size": BATCH_SIZE,
                "on_error": "fail",
                # drt paces a REST destination at 10 requests/s by default; ebbtide's webhook
                # is not paced unless told to: 0 turns drt's pacing off.
                "rate_limit": {"requests_per_second": 0},
            },
        }
        # JSON is YAML: no YAML writer needed in the bench.
        (root / "project" / "syncs" / f"{MAPPING}.yml").write_text(json.dumps(sync), "utf-8")

    def command(self, root: Path, url: str) -> Command:
        env = {**os.environ, "HOME": str(root / "home"), "DO_NOT_TRACK": "1"}
        argv = [str(peers_venv.VENV / "bin" / "drt"), "run", "--output", "json"]
        return Command(argv, root / "project", env)

    def outcome(self, returncode: int, stdout: str, stderr: str) -> Outcome:
        try:
            sync = _json_in(stdout, "{")["syncs"][0]
        except (ValueError, IndexError, KeyError):
            return _failure(returncode, stderr)
        ok = sync["status"] == "success" and returncode == 0
        return Outcome(ok, None, None if ok else _failure(returncode, "", str(sync)).error)


class Dlt:
    name = "dlt"
    setup = (
        "a resource reading `users` as Arrow batches with `dlt.sources.incremental('updated_at')`,"
        f" a `@dlt.destination` sink (batch_size {BATCH_SIZE}, parquet load files of"
        f" {DLT_FILE_ROWS:,} rows, `max_parallel_load_jobs` {CONCURRENCY})"
    )

    def prepare(self, root: Path) -> Path:
        root.mkdir(parents=True, exist_ok=True)
        return root / "warehouse.duckdb"

    def point_at(self, root: Path, url: str) -> None:
        """The URL is an argument of the script: nothing to write."""

    def command(self, root: Path, url: str) -> Command:
        argv = [
            str(peers_venv.python()),
            str(DLT_SCRIPT),
            str(root / "warehouse.duckdb"),
            url,
            str(root / "pipelines"),
            str(BATCH_SIZE),
            str(CONCURRENCY),
        ]
        env = {
            **os.environ,
            "RUNTIME__DLTHUB_TELEMETRY": "false",
            "DATA_WRITER__FILE_MAX_ITEMS": str(DLT_FILE_ROWS),
        }
        return Command(argv, root, env)

    def outcome(self, returncode: int, stdout: str, stderr: str) -> Outcome:
        lines = stdout.strip().splitlines()
        if returncode != 0 or not lines:
            return _failure(returncode, stderr)
        json.loads(lines[-1])  # the script's own count; the receiver's is the one shown
        return Outcome(True, None)


TOOLS: tuple[Tool, ...] = (Ebbtide(), Drt(), Dlt())
