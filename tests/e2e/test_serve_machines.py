"""Three `ebbtide serve` processes as three machines: each in its own folder with its own copy
of the workspace, sharing only a PostgreSQL state store (with the procrastinate queue in it)
and an S3 bucket of snapshots (moto's server). Ten mappings on a 2-second schedule read a
PostgreSQL warehouse that changes all the while; one serve is killed with SIGKILL mid-load.

Checked from the receiver's log and the run history: no mapping ever ran twice at once, no
due slot started twice, no record was resent except the batches in flight in the killed
process, and the killed process's run was recovered (interrupted, then synced by another).
"""

from __future__ import annotations

import os
import re
import signal
import threading
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from ebbtide.demo.receiver import Receiver
from tests.e2e.harness import Processes, Serve, Workspace, wait_until
from tests.s3_kit import new_bucket

pytestmark = pytest.mark.postgres

MAPPINGS = [f"slice_{i}" for i in range(10)]
ROWS = 400
BATCH_SIZE = 20
CONCURRENCY = 2
ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
CLAIMED = re.compile(r"claimed (\S+) \(schedule, due (\S+ \S+)\)")
STARTED = re.compile(r"started (\S+) run (\d+) \(schedule, due (\S+ \S+)\)")


@pytest.fixture
def database() -> Iterator[str]:
    """A database of its own on the PostgreSQL server: warehouse and state store."""
    name = f"ebbtide_machines_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(ADMIN, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    url = f"postgresql://postgres@127.0.0.1:5432/{name}"
    with psycopg.connect(url) as conn:
        conn.execute(
            "CREATE TABLE users AS SELECT i AS id, 'user' || i || '@example.com' AS email,"
            f" 0 AS version FROM generate_series(1, {ROWS}) i"
        )
        conn.execute("ALTER TABLE users ADD PRIMARY KEY (id)")
    yield url
    with psycopg.connect(ADMIN, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE {name} WITH (FORCE)")


@pytest.fixture
def bucket(s3_server: str, aws_env: None, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    # A dead worker's jobs are closed after 4 s without its heartbeat (1 s apart).
    monkeypatch.setenv("EBBTIDE_QUEUE_HEARTBEAT_S", "1")
    monkeypatch.setenv("EBBTIDE_QUEUE_STALLED_S", "4")
    return {"url": f"s3://{new_bucket(s3_server)}/ebbtide", "endpoint_url": s3_server}


def workspace_file(database: str, snapshots: dict[str, str]) -> str:
    doc: dict[str, Any] = {
        "state": database.replace("postgresql://", "postgresql+psycopg://"),
        "snapshots": snapshots,
        "sources": {"warehouse": {"type": "postgres", "url": database}},
        "models": {
            name: {
                "source": "warehouse",
                "primary_key": "id",
                "sql": f"select id, email, version from users where id % 10 = {i}",
            }
            for i, name in enumerate(MAPPINGS)
        },
        "destinations": {
            "hook": {
                "type": "webhook",
                "url": "${HOOK_URL}",
                "batch_size": BATCH_SIZE,
                "concurrency": CONCURRENCY,
                "timeout_s": 120,
            }
        },
        "mappings": {
            name: {
                "model": name,
                "destination": "hook",
                "action": "upsert",
                "mode": "mirror",
                "fields": {"email": "email", "version": "version"},
                "schedule": "2s",
            }
            for name in MAPPINGS
        },
    }
    return yaml.safe_dump(doc, sort_keys=False)


class Changes:
    """Keeps changing the warehouse while the test runs: each round bumps the version of a
    few rows of every slice, so every run has something new to send."""

    def __init__(self, database: str) -> None:
        self.database = database
        self.stop = threading.Event()
        self.rounds = 0
        self.thread = threading.Thread(target=self._change, daemon=True)

    def _change(self) -> None:
        with psycopg.connect(self.database, autocommit=True) as conn:
            while not self.stop.wait(0.4):  # a steady trickle of changes, not a synchronisation
                start = (self.rounds * 7) % ROWS
                conn.execute(
                    "UPDATE users SET version = version + 1 WHERE id > %s AND id <= %s",
                    (start, start + 20),
                )
                self.rounds += 1


def runs(database: str) -> list[dict[str, Any]]:
    """The run history; empty until the first serve has created the state store's tables."""
    with psycopg.connect(database) as conn:
        if conn.execute("SELECT to_regclass('runs')").fetchone() == (None,):
            return []
        cursor = conn.execute(
            "SELECT id, mapping, trigger, status, started_at, finished_at, pid, loaded_new,"
            " loaded_updated FROM runs ORDER BY id"
        )
        names = [d.name for d in cursor.description or []]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def successes_after(database: str, run_id: int) -> dict[str, int]:
    done: dict[str, int] = defaultdict(int)
    for run in runs(database):
        if run["id"] > run_id and run["status"] == "success":
            done[run["mapping"]] += 1
    return done


def every_mapping_synced(database: str, times: int, after: int = 0) -> bool:
    done = successes_after(database, after)
    return all(done[m] >= times for m in MAPPINGS)


@pytest.mark.timeout(900)  # two waits of up to 400 s each, beside the browser tests
def test_three_serve_processes_share_the_work_and_recover_a_killed_one(
    tmp_path: Path,
    processes: Processes,
    database: str,
    bucket: dict[str, str],
) -> None:
    receiver = Receiver().start()
    serves: list[Serve] = []
    for machine in ("a", "b", "c"):
        root = tmp_path / machine
        root.mkdir()
        (root / "ebbtide.yml").write_text(workspace_file(database, bucket))
        workspace = Workspace(root, receiver.url, ROWS)
        serves.append(Serve(workspace, processes, f"serve-{machine}", "--workers", "2"))
    changes = Changes(database)
    changes.thread.start()
    try:
        wait_until(
            lambda: _serving(serves) and every_mapping_synced(database, 3),
            400,
            "three syncs of each",
        )

        victim = serves[1]
        with receiver.holding():
            # Mid-load: a run of the victim has records at the receiver, unanswered.
            held = wait_until(
                lambda: _victims_run_at_receiver(database, victim, receiver),
                120,
                "a run of serve-b with records at the receiver",
            )
            os.kill(victim.process.pid, signal.SIGKILL)
            victim.process.wait(timeout=30)
        wait_until(
            lambda: _serving(serves[::2]) and every_mapping_synced(database, 3, after=held),
            400,
            "syncs after",
        )
        assert _status(database, held) == "interrupted", _status(database, held)
    finally:
        changes.stop.set()
        changes.thread.join(timeout=30)
        exits = [serve.stop() for serve in serves if serve.process.poll() is None]
        receiver.stop()
    assert exits == [0, 0], [serve.text() for serve in serves]

    history = runs(database)
    logs = [serve.text() for serve in serves]
    assert not [r for r in history if r["status"] == "running"]
    assert all(r["status"] in ("success", "interrupted") for r in history), history
    _never_twice_at_once(history, receiver)
    _each_slot_started_once(logs)
    killed = [r for r in history if r["pid"] == victim.process.pid]
    assert killed and all(r["status"] in ("success", "interrupted") for r in killed)
    # Besides the held run, the victim's other worker may have had batches at the receiver,
    # unanswered, when it was killed; and a run stalled by the held receiver on a busy machine
    # may have been taken over. Only a run cut short may have its in-flight batches resent.
    cut_short = {r["id"] for r in history if r["status"] == "interrupted"}
    assert held in cut_short
    _resent_only_in_flight(history, receiver, cut_short)
    assert {s for s in ("a", "c") if "started" in logs["abc".index(s)]} == {"a", "c"}


def _serving(serves: list[Serve]) -> bool:
    """True while every one of `serves` runs; a serve that exited fails the wait at once, with
    its log (it will sync nothing more)."""
    for serve in serves:
        if serve.process.poll() is not None:
            raise AssertionError(
                f"{serve.log.name} exited {serve.process.returncode}:\n{serve.text()}"
            )
    return True


def _victims_run_at_receiver(database: str, victim: Serve, receiver: Receiver) -> int | None:
    running = {
        r["id"]
        for r in runs(database)
        if r["status"] == "running" and r["pid"] == victim.process.pid
    }
    for record in list(receiver.records):
        run_id = int(record["idempotency_key"].split("-")[0])
        if run_id in running:
            return run_id
    return None


def _status(database: str, run_id: int) -> str:
    return next(str(r["status"]) for r in runs(database) if r["id"] == run_id)


def _never_twice_at_once(history: list[dict[str, Any]], receiver: Receiver) -> None:
    """Per mapping, runs in the history follow one another, and at the receiver the records of
    one run all arrive before the next run's first."""
    mapping_of = {r["id"]: r["mapping"] for r in history}
    by_mapping: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for run in history:
        by_mapping[run["mapping"]].append(run)
    for mapping, its in by_mapping.items():
        for earlier, later in zip(its, its[1:], strict=False):
            if earlier["status"] != "interrupted":  # a dead run ends when it is taken over
                assert earlier["finished_at"] <= later["started_at"], (mapping, earlier, later)
    order: dict[str, list[int]] = defaultdict(list)
    for record in receiver.records:
        run_id = int(record["idempotency_key"].split("-")[0])
        sequence = order[mapping_of[run_id]]
        if not sequence or sequence[-1] != run_id:
            assert run_id not in sequence, f"run {run_id} interleaved with another of its mapping"
            sequence.append(run_id)


def _each_slot_started_once(logs: list[str]) -> None:
    claimed = [m for log in logs for m in CLAIMED.findall(log)]
    started = [(m, due) for log in logs for m, _run, due in STARTED.findall(log)]
    assert len(claimed) == len(set(claimed)), "a due slot was claimed twice"
    assert len(started) == len(set(started)), "a due slot started two runs"
    assert started, "no scheduled run started"


def _resent_only_in_flight(
    history: list[dict[str, Any]], receiver: Receiver, killed_runs: set[int]
) -> None:
    """A record (key and version) reached the receiver twice only when it was in flight in a
    run that was cut short (taken over), and at most a batch per request in flight, per run."""
    mapping_of = {r["id"]: r["mapping"] for r in history}
    first_seen: dict[tuple[str, Any, Any], int] = {}
    resent: list[tuple[str, Any, int]] = []
    for record in receiver.records:
        run_id = int(record["idempotency_key"].split("-")[0])
        identity = (mapping_of[run_id], record["key"], record["data"]["version"])
        if identity in first_seen and first_seen[identity] != run_id:
            resent.append((identity[0], record["key"], first_seen[identity]))
        first_seen.setdefault(identity, run_id)
    assert all(first in killed_runs for _m, _k, first in resent), resent
    per_run = Counter(first for _m, _k, first in resent)
    assert all(n <= BATCH_SIZE * CONCURRENCY for n in per_run.values()), per_run
