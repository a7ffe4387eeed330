"""The executor of `serve` on a PostgreSQL state store: claimed runs go through procrastinate.

Every serve process sharing the state store runs the same scheduler; the one that wins a due
slot or a request (compare-and-set in the state store) defers a job, and any process's worker
with room runs it. Jobs of one mapping share a procrastinate lock, so a worker never starts a
mapping another is syncing; the mapping's lease stays the final authority (a job that finds
the lease held is skipped, as with the embedded executor).

A process killed with SIGKILL leaves its job `doing`, holding the mapping's lock. Its worker
stops sending heartbeats; after `STALLED_S` every scheduler may close such jobs as failed, so
the mapping's next due run starts, takes over the dead run's lease and marks it interrupted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
from collections.abc import Callable
from concurrent.futures import Future
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from procrastinate import App, PsycopgConnector, SyncPsycopgConnector
from procrastinate.exceptions import AlreadyEnqueued
from procrastinate.jobs import Status
from procrastinate.schema import SchemaManager

from ebbtide.config.workspace import Workspace
from ebbtide.services.claims import Claim, ClaimRunner, Reason, RunEvent
from ebbtide.state.schedules import ReplayRequest, ScheduleBook, SyncRequest
from ebbtide.state.store import SqlStateStore

log = logging.getLogger(__name__)

QUEUE = "ebbtide"
TASK = "ebbtide.run_claim"
# How often a worker says it is alive, and how long without that before its jobs are closed.
# The environment shortens them for tests of processes killed mid-run.
HEARTBEAT_S = float(os.environ.get("EBBTIDE_QUEUE_HEARTBEAT_S", "10"))
STALLED_S = float(os.environ.get("EBBTIDE_QUEUE_STALLED_S", "60"))
_SCHEMA_LOCK = 0x6562627469646501  # pg_advisory_xact_lock key: one process installs the schema


class QueueExecutor:
    """Defers claims as procrastinate jobs, and runs a worker that takes anyone's jobs."""

    def __init__(
        self,
        state: SqlStateStore,
        workers: int,
        runner: ClaimRunner,
        workspace: Callable[[], Workspace],
    ) -> None:
        self.state, self.workers, self.runner = state, workers, runner
        self.cancel = runner.cancel
        self.workspace = workspace  # as serve last reloaded it: jobs run with it
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        conninfo = _conninfo(state.engine.url)
        install_schema(state.engine)
        self._deferrer = App(connector=SyncPsycopgConnector(conninfo=conninfo))
        self._worker_app = App(connector=PsycopgConnector(conninfo=conninfo))
        for app in (self._deferrer, self._worker_app):
            app.task(name=TASK, queue=QUEUE)(self._run_job)
        self._deferrer.open()
        self._lock = threading.Lock()
        self._mine: set[str] = set()  # mappings this process's worker is syncing
        self._idle = threading.Condition(self._lock)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._worker: Future[None] | None = None
        self._thread = threading.Thread(target=self._serve, name="ebbtide-queue", daemon=True)
        self._started = threading.Event()

    # -- the Executor protocol ---------------------------------------------------------------

    def room(self) -> int:
        """Claims wait in the queue for whichever worker is free: never refused for room."""
        return 1_000_000

    def running(self) -> frozenset[str]:
        """Mappings with a job waiting or running on any process: a due slot of one of them
        is skipped rather than queued behind it."""
        query = sa.text(
            "SELECT DISTINCT args->>'mapping' FROM procrastinate_jobs"
            " WHERE queue_name = :queue AND status IN ('todo', 'doing')"
        )
        with self.state.engine.connect() as conn:
            queued = {row[0] for row in conn.execute(query, {"queue": QUEUE})}
        with self._lock:
            return frozenset(queued | self._mine)

    def running_here(self) -> frozenset[str]:
        """Mappings this process's worker is syncing."""
        with self._lock:
            return frozenset(self._mine)

    def submit(self, claim: Claim, workspace: Workspace) -> None:
        # One waiting job per mapping and reason (replays each their own): a second would
        # only run the same sync again.
        waiting = None if claim.replay else f"{claim.mapping}:{claim.reason.value}"
        deferrer = self._deferrer.tasks[TASK].configure(lock=claim.mapping, queueing_lock=waiting)
        try:
            deferrer.defer(**_job_args(claim))
        except AlreadyEnqueued:
            if claim.request is not None:  # it runs after the one waiting, with newer data
                ScheduleBook(self.state.engine).give_back(claim.request)
            detail = f"a {claim.reason.value} job of it already waits in the queue"
            self.runner.on_event(RunEvent("skipped", claim, detail=detail))

    # -- the worker ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start taking jobs; returns once the worker is registered."""
        self._thread.start()
        self._started.wait(30)

    def stop(self) -> None:
        """Take no more jobs; jobs running go on (cancel them with `cancel`)."""
        if self._loop is not None and self._worker is not None:
            self._loop.call_soon_threadsafe(self._worker.cancel)

    def wait_idle(self, timeout_s: float) -> bool:
        """True once this process runs no job; the worker has then stopped (after `stop`)."""
        with self._idle:
            idle = self._idle.wait_for(lambda: not self._mine, timeout_s)
        if idle and self._thread.is_alive():
            self._thread.join(timeout_s)
        return idle

    def close(self) -> None:
        self._deferrer.close()

    def recover_stalled(self) -> list[str]:
        """Close as failed the jobs of workers that stopped sending heartbeats (a process
        killed mid-run); returns their mappings. Their runs are marked interrupted by the next
        run of each mapping, which takes the dead run's lease over."""
        if self._loop is None:
            return []
        coroutine = self._close_stalled()
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(30)

    async def _close_stalled(self) -> list[str]:
        manager = self._worker_app.job_manager
        await manager.prune_stalled_workers(STALLED_S)
        stalled = await manager.get_stalled_jobs(queue=QUEUE, seconds_since_heartbeat=STALLED_S)
        closed = []
        for job in stalled:
            await manager.finish_job(job, status=Status.FAILED, delete_job=True)
            closed.append(str(job.task_kwargs.get("mapping")))
        return closed

    def _serve(self) -> None:
        asyncio.run(self._work())

    async def _work(self) -> None:
        self._loop = asyncio.get_running_loop()
        async with self._worker_app.open_async():
            worker = asyncio.ensure_future(
                self._worker_app.run_worker_async(
                    queues=[QUEUE],
                    concurrency=self.workers,
                    name=self.name,
                    install_signal_handlers=False,
                    delete_jobs="always",
                    update_heartbeat_interval=HEARTBEAT_S,
                    stalled_worker_timeout=STALLED_S,
                    fetch_job_polling_interval=1.0,
                )
            )
            self._worker = worker  # type: ignore[assignment]
            self._started.set()
            with contextlib.suppress(asyncio.CancelledError):  # stop() asked
                await worker

    def _run_job(self, **args: Any) -> None:
        claim = _claim(args)
        with self._lock:
            self._mine.add(claim.mapping)
        try:
            self.runner.run(claim, self.workspace())
        finally:
            with self._idle:
                self._mine.discard(claim.mapping)
                self._idle.notify_all()


def install_schema(engine: sa.Engine) -> None:
    """procrastinate's tables and functions in the state store, once, whoever starts first."""
    # pg_class read as a table (an MVCC snapshot), not through to_regclass: its cache may still
    # say "no such table" after the lock is taken, as an advisory lock refreshes no cache.
    exists = sa.text(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class c"
        " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.relname = 'procrastinate_jobs' AND n.nspname = ANY (current_schemas(false)))"
    )
    with engine.begin() as conn:
        if conn.execute(exists).scalar():
            return
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK})
        if conn.execute(exists).scalar():
            return
        conn.exec_driver_sql(SchemaManager.get_schema().replace("%", "%%"))


def _conninfo(url: sa.URL) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def _job_args(claim: Claim) -> dict[str, Any]:
    args: dict[str, Any] = {"mapping": claim.mapping, "reason": claim.reason.value}
    if claim.due_at is not None:
        args["due_at"] = claim.due_at.isoformat()
    if claim.request is not None:
        args["requested_at"] = claim.request.requested_at.isoformat()
        args["requested_by"] = claim.request.requested_by
    if claim.replay is not None:
        replay = claim.replay
        args["replay"] = {
            "id": replay.id,
            "run_id": replay.run_id,
            "latest": replay.latest,
            "only_failed": replay.only_failed,
            "requested_at": replay.requested_at.isoformat(),
            "requested_by": replay.requested_by,
        }
    return args


def _claim(args: dict[str, Any]) -> Claim:
    mapping, reason = args["mapping"], Reason(args["reason"])
    due_at = datetime.fromisoformat(args["due_at"]) if "due_at" in args else None
    request = None
    if "requested_at" in args:
        request = SyncRequest(
            mapping, datetime.fromisoformat(args["requested_at"]), args.get("requested_by")
        )
    replay = None
    if "replay" in args:
        r = args["replay"]
        replay = ReplayRequest(
            r["id"],
            mapping,
            r["run_id"],
            r["latest"],
            r["only_failed"],
            datetime.fromisoformat(r["requested_at"]),
            r["requested_by"],
        )
    return Claim(mapping, reason, due_at=due_at, request=request, replay=replay)
