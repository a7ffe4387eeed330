"""Builders shared by the failed-record tests: a DuckDB warehouse, ebbtide.yml, a sync service,
and a scripted batch server on 127.0.0.1 for answers the demo receiver cannot give.

Patterns follow tests/integration/test_webhook_sync.py: a real warehouse file, `${HOOK_URL}` and
`${HOOK_TOKEN}` from the environment, `SyncService.run` against a real HTTP server.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import pytest
import yaml
from aiohttp import web

from ebbtide.config.workspace import Workspace, load_workspace
from ebbtide.demo.receiver import Receiver
from ebbtide.services.sync import SyncService
from ebbtide.values import FailedRecord, FailureStatus, RunRecord
from tests.e2e.harness import wait_until

if TYPE_CHECKING:
    from tests.integration.warehouse_kit import Backend

TOKEN = "tok-kit-not-a-real-secret-4711"
USERS_SQL = "select id, email, plan, ltv from users"
FIELDS = {"email": "email", "plan": "plan", "ltv": "ltv"}


def warehouse_sql(root: Path, *statements: str) -> None:
    with duckdb.connect(str(root / "warehouse.duckdb")) as con:
        for statement in statements:
            con.execute(statement)


def users_table(root: Path, rows: int) -> None:
    """`users(id, email, plan, ltv)` with ids 1..rows, as `expected_data` describes them."""
    warehouse_sql(
        root,
        "CREATE OR REPLACE TABLE users AS SELECT i::BIGINT AS id,"
        " 'user' || i || '@example.com' AS email,"
        " CASE WHEN i % 3 = 0 THEN 'pro' ELSE 'free' END AS plan, i * 1.5 AS ltv"
        f" FROM range(1, {rows + 1}) t(i)",
    )


def expected_data(i: int, email: str | None = None) -> dict[str, Any]:
    return {
        "email": email or f"user{i}@example.com",
        "plan": "pro" if i % 3 == 0 else "free",
        "ltv": i * 1.5,
    }


def hook(
    *, batch_size: int = 10, concurrency: int = 2, timeout_s: float = 5.0, **extra: Any
) -> dict[str, Any]:
    """A webhook destination posting to `${HOOK_URL}` with a bearer token from the environment."""
    return {
        "type": "webhook",
        "url": "${HOOK_URL}",
        "headers": {"Authorization": "Bearer ${HOOK_TOKEN}"},
        "batch_size": batch_size,
        "concurrency": concurrency,
        "timeout_s": timeout_s,
        **extra,
    }


def mapping(mode: str = "mirror", destination: str = "hook", **extra: Any) -> dict[str, Any]:
    return {
        "model": "users",
        "destination": destination,
        "action": "upsert",
        "mode": mode,
        "fields": dict(FIELDS),
        **extra,
    }


def write_workspace(
    root: Path,
    *,
    destinations: dict[str, Any],
    mappings: dict[str, Any],
    sql: str = USERS_SQL,
    source: dict[str, Any] | None = None,
) -> None:
    doc = {
        "sources": {"warehouse": source or {"type": "duckdb", "path": "warehouse.duckdb"}},
        "models": {"users": {"source": "warehouse", "primary_key": "id", "sql": sql}},
        "destinations": destinations,
        "mappings": mappings,
    }
    (root / "ebbtide.yml").write_text(yaml.safe_dump(doc, sort_keys=False))


@dataclass
class Kit:
    """One test's workspace folder and the services opened on it (disposed at teardown)."""

    root: Path
    monkeypatch: pytest.MonkeyPatch
    services: list[SyncService] = field(default_factory=list)
    # A PostgreSQL or MariaDB server instead of the DuckDB file (tests/integration/warehouse_kit)
    backend: Backend | None = None

    def build(
        self,
        url: str,
        *,
        rows: int,
        destinations: dict[str, Any] | None = None,
        mappings: dict[str, Any] | None = None,
        env: dict[str, str] | None = None,
    ) -> SyncService:
        """Write the warehouse and ebbtide.yml (default: mirror and upsert to `hook`)."""
        self.monkeypatch.setenv("HOOK_URL", url)
        self.monkeypatch.setenv("HOOK_TOKEN", TOKEN)
        for name, value in (env or {}).items():
            self.monkeypatch.setenv(name, value)
        mappings = mappings or {
            "users_mirror": mapping("mirror"),
            "users_upsert": mapping("upsert"),
        }
        if self.backend is None:
            write_workspace(
                self.root, destinations=destinations or {"hook": hook()}, mappings=mappings
            )
            users_table(self.root, rows)
        else:
            diff = self.backend.diff
            write_workspace(
                self.root,
                destinations=destinations or {"hook": hook()},
                mappings={name: {"diff": diff, **spec} for name, spec in mappings.items()},
                source=self.backend.source,
            )
            self.backend.create_users(rows)
        return self.service()

    def workspace(self) -> Workspace:
        return load_workspace(self.root)

    def service(self) -> SyncService:
        service = SyncService(self.workspace())
        self.services.append(service)
        return service

    def sql(self, *statements: str) -> None:
        if self.backend is None:
            warehouse_sql(self.root, *statements)
        else:
            self.backend.execute(*statements)

    def close(self) -> None:
        for service in self.services:
            service.state.dispose()


def failed_records(
    service: SyncService, name: str, statuses: tuple[FailureStatus, ...] = tuple(FailureStatus)
) -> dict[str, FailedRecord]:
    """Key text → the mapping's failed record, whatever its status unless told."""
    return {r.key: r for r in service.state.pending_failures.listed(name, statuses, 10_000)}


def sent(receiver: Receiver) -> set[tuple[str, Any]]:
    return {(r["op"], r["key"]) for r in receiver.records}


def max_in_window(arrivals: list[float], window_s: float, slack_s: float = 0.0) -> int:
    """The most requests that arrived within any interval of `window_s` seconds.

    `slack_s` forgives arrivals that land that much early: the limiter spaces sends, and
    loopback adds a little jitter between a send and its arrival.
    """
    times = sorted(arrivals)
    most = 0
    for i, start in enumerate(times):
        inside = [t for t in times[i:] if t < start + window_s - slack_s]
        most = max(most, len(inside))
    return most


# -- a scripted batch server ---------------------------------------------------------------

Answer = Callable[[int, list[dict[str, Any]]], tuple[int, dict[str, Any]]]


@dataclass(frozen=True)
class Arrival:
    at: float
    number: int
    keys: list[Any]
    status: int


class ScriptedServer:
    """Answers each POST with `answer(request_number, records) -> (status, json_body)`.

    For whole-batch behaviours the demo receiver does not have (it refuses records one by one):
    a 400 for any batch holding a poison key, a 401 once the token "expires" mid-run.
    """

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.arrivals: list[Arrival] = []
        self.accepted: list[Any] = []
        self.url = ""
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> ScriptedServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._open(), self._loop).result(timeout=10)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    async def _open(self) -> None:
        app = web.Application(client_max_size=1 << 26)
        app.router.add_post("/ingest", self._ingest)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/ingest"

    async def _ingest(self, request: web.Request) -> web.Response:
        records = json.loads(await request.read())["records"]
        with self._lock:
            number = len(self.arrivals) + 1
            status, body = self.answer(number, records)
            self.arrivals.append(
                Arrival(time.monotonic(), number, [r["key"] for r in records], status)
            )
            if 200 <= status < 300:
                refused = {json.dumps(r["key"]) for r in body.get("results", [])}
                self.accepted += [r["key"] for r in records if json.dumps(r["key"]) not in refused]
        return web.json_response(body, status=status)

    @property
    def requests(self) -> int:
        return len(self.arrivals)


@contextmanager
def held_sync(
    service: SyncService, receiver: Receiver, mapping: str = "users_mirror"
) -> Iterator[list[RunRecord]]:
    """A sync of `mapping` stopped in its load (the receiver answers nothing) until the block
    ends; yields the list its record lands in."""
    finished: list[RunRecord] = []

    def sync() -> None:
        try:
            finished.append(service.run(mapping))
        except KeyboardInterrupt:  # cancelled: as `sync run` does, the run says so and stops
            finished.append(service.state.list_runs(mapping, 1)[0])

    thread = threading.Thread(target=sync, daemon=True)
    try:
        with receiver.holding():
            thread.start()
            wait_until(lambda: receiver.requests > 0, 30, "the sync's first request")
            yield finished
    finally:
        thread.join(timeout=60)
    assert not thread.is_alive(), "the held sync did not finish"
