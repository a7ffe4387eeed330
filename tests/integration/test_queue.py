"""The procrastinate executor of `serve` on a PostgreSQL state store, in one process: its
schema installed once whoever starts first, claims run by its worker, a second claim of the
same mapping and reason merged, and the jobs of a dead worker closed."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from ebbtide.demo.receiver import Receiver
from ebbtide.server.queue import QUEUE, TASK, QueueExecutor, install_schema
from ebbtide.services.claims import Claim, ClaimRunner, Reason, RunEvent
from ebbtide.state.store import SqlStateStore
from tests.e2e.harness import wait_until
from tests.integration.workspace_kit import Kit

pytestmark = pytest.mark.postgres

MIRROR = "users_mirror"


@pytest.fixture
def state(pg_dsn: str, pg_schema: str, kit: Kit) -> Iterator[SqlStateStore]:
    url = pg_dsn.replace("postgresql://", "postgresql+psycopg://")
    store = SqlStateStore(f"{url}?options=-csearch_path%3D{pg_schema}", kit.root)
    yield store
    store.dispose()


@pytest.fixture
def queue(
    state: SqlStateStore, kit: Kit, receiver: Receiver
) -> Iterator[tuple[QueueExecutor, list[RunEvent]]]:
    kit.build(receiver.url, rows=12)
    workspace = kit.workspace()
    events: list[RunEvent] = []
    executor = QueueExecutor(state, 2, ClaimRunner(state, events.append), lambda: workspace)
    yield executor, events
    executor.stop()
    executor.wait_idle(60)
    executor.close()


def test_the_schema_is_installed_once_by_processes_starting_together(state: SqlStateStore) -> None:
    failures: list[BaseException] = []

    def install() -> None:
        engine = sa.create_engine(state.engine.url)
        try:
            install_schema(engine)
        except BaseException as error:  # noqa: BLE001 - collected for the assertion
            failures.append(error)
        finally:
            engine.dispose()

    threads = [threading.Thread(target=install) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert failures == []
    with state.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM procrastinate_jobs")).scalar() == 0


def test_claims_become_jobs_a_worker_runs_and_a_second_one_is_merged(
    queue: tuple[QueueExecutor, list[RunEvent]], state: SqlStateStore, kit: Kit
) -> None:
    executor, events = queue
    due = datetime.now(UTC)
    claim = Claim(MIRROR, Reason.SCHEDULE, due_at=due)
    executor.submit(claim, kit.workspace())
    assert executor.running() == {MIRROR}  # waiting in the queue: a due slot of it is skipped
    executor.submit(Claim(MIRROR, Reason.SCHEDULE, due_at=due), kit.workspace())
    assert [(e.kind, e.claim.mapping) for e in events] == [("skipped", MIRROR)]
    assert events[0].detail is not None and "already waits in the queue" in events[0].detail

    executor.start()
    finished = wait_until(lambda: [e for e in events if e.kind == "finished"], 60, "the job to run")
    assert finished[0].status == "success" and finished[0].claim.due_at == due
    [run] = state.list_runs(MIRROR, 10)
    assert run.trigger == "schedule" and run.loaded_new == 12
    wait_until(lambda: not executor.running(), 30, "the job to leave the queue")


def test_a_dead_workers_job_is_closed_so_its_mapping_can_run_again(
    queue: tuple[QueueExecutor, list[RunEvent]], state: SqlStateStore
) -> None:
    executor, _ = queue
    with state.engine.begin() as conn:  # the job of a worker that was pruned: no heartbeat
        conn.execute(
            sa.text(
                "INSERT INTO procrastinate_jobs (queue_name, task_name, lock, args, status)"
                " VALUES (:queue, :task, :lock, CAST(:args AS jsonb), 'doing')"
            ),
            {"queue": QUEUE, "task": TASK, "lock": MIRROR, "args": f'{{"mapping": "{MIRROR}"}}'},
        )
    assert executor.running() == {MIRROR}
    executor.start()
    assert executor.recover_stalled() == [MIRROR]
    assert executor.running() == frozenset()
