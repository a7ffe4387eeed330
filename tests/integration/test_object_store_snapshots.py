"""Snapshots and journals in a shared store (`snapshots:`), so that a mapping runs on any machine.

Two copies of a workspace play two machines: each has its own `.ebbtide/` folder (its cache),
both share one state store file, one warehouse and one bucket on a real S3 server (moto's, on
127.0.0.1) or one shared folder; records go to the real receiver on loopback.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
import sqlalchemy as sa
import yaml

from ebbtide.config.workspace import load_workspace
from ebbtide.demo.receiver import Receiver
from ebbtide.errors import ConfigErrors, StorageError
from ebbtide.services.history import History
from ebbtide.services.replay import ReplayService
from ebbtide.services.reset import ResetService
from ebbtide.services.sync import SyncService
from ebbtide.state.schema import leases
from ebbtide.values import FailureStatus, RunStatus
from tests.e2e.harness import wait_until
from tests.integration.workspace_kit import (
    TOKEN,
    expected_data,
    failed_records,
    hook,
    mapping,
    sent,
    users_table,
    warehouse_sql,
)
from tests.s3_kit import new_bucket

ROWS = 60
MIRROR = "users_mirror"


def bucket_keys(endpoint: str, bucket: str) -> list[str]:
    client = boto3.client("s3", endpoint_url=endpoint)
    return sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", []))


@dataclass
class Machines:
    """Two workspace folders sharing a warehouse, a state store and a snapshots store."""

    tmp: Path
    monkeypatch: pytest.MonkeyPatch
    services: list[SyncService] = field(default_factory=list)

    @property
    def a(self) -> Path:
        return self.tmp / "machine-a"

    @property
    def b(self) -> Path:
        return self.tmp / "machine-b"

    def build(self, url: str, snapshots: dict[str, Any], *, rows: int = ROWS) -> None:
        self.monkeypatch.setenv("HOOK_URL", url)
        self.monkeypatch.setenv("HOOK_TOKEN", TOKEN)
        users_table(self.tmp, rows)
        for root in (self.a, self.b):
            root.mkdir(exist_ok=True)
            doc = {
                "state": f"sqlite:///{self.tmp / 'shared-state.db'}",
                "snapshots": snapshots,
                "sources": {
                    "warehouse": {"type": "duckdb", "path": str(self.tmp / "warehouse.duckdb")}
                },
                "models": {
                    "users": {
                        "source": "warehouse",
                        "primary_key": "id",
                        "sql": "select id, email, plan, ltv from users",
                    }
                },
                "destinations": {"hook": hook(batch_size=10, concurrency=2)},
                "mappings": {MIRROR: mapping("mirror")},
            }
            (root / "ebbtide.yml").write_text(yaml.safe_dump(doc, sort_keys=False))

    def service(self, root: Path) -> SyncService:
        service = SyncService(load_workspace(root))
        self.services.append(service)
        return service

    def sql(self, *statements: str) -> None:
        warehouse_sql(self.tmp, *statements)

    def close(self) -> None:
        for service in self.services:
            service.state.dispose()


@pytest.fixture
def machines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Machines]:
    made = Machines(tmp_path, monkeypatch)
    yield made
    made.close()


@pytest.fixture(params=["s3", "folder"])
def shared_store(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    """The `snapshots:` setting of both machines: a bucket on S3, or a shared folder."""
    if request.param == "folder":
        folder = tmp_path / "shared-folder"
        folder.mkdir()
        return {"url": folder.as_uri()}
    endpoint = request.getfixturevalue("s3_server")
    request.getfixturevalue("aws_env")
    return {"url": f"s3://{new_bucket(endpoint)}/team/ebbtide", "endpoint_url": endpoint}


# -- two machines ----------------------------------------------------------------------------


def test_a_sync_on_one_machine_then_the_other_sends_only_the_changes(
    receiver: Receiver, machines: Machines, shared_store: dict[str, Any]
) -> None:
    machines.build(receiver.url, shared_store)
    first = machines.service(machines.a).run(MIRROR)
    assert (first.status, first.loaded_new) == (RunStatus.SUCCESS, ROWS), first.error

    machines.sql(
        "UPDATE users SET email = 'new7@example.com' WHERE id = 7",
        "DELETE FROM users WHERE id = 9",
        "INSERT INTO users VALUES (1000, 'user1000@example.com', 'pro', 1.0)",
    )
    receiver.reset()
    on_b = machines.service(machines.b)
    second = on_b.run(MIRROR)
    assert second.status is RunStatus.SUCCESS, second.error
    assert sent(receiver) == {("updated", 7), ("deleted", 9), ("added", 1000)}
    assert (second.added, second.updated, second.deleted) == (1, 1, 1)

    # B's copy is now the current version: its next run downloads nothing and sends nothing.
    local = machines.b / ".ebbtide" / "snapshots" / f"{MIRROR}.duckdb"
    before = local.stat().st_mtime_ns
    receiver.reset()
    assert on_b.run(MIRROR).status is RunStatus.SUCCESS
    assert receiver.requests == 0
    assert local.stat().st_mtime_ns == before  # the cache was that version: no download

    # And A, whose copy is stale, fetches B's version: nothing to send either.
    assert machines.service(machines.a).run(MIRROR).status is RunStatus.SUCCESS
    assert receiver.requests == 0


def test_a_failed_record_is_retried_from_the_other_machine_with_the_latest_data(
    receiver: Receiver, machines: Machines, shared_store: dict[str, Any]
) -> None:
    machines.build(receiver.url, shared_store)
    receiver.reject(5, message="email: not a valid address")
    on_a = machines.service(machines.a)
    assert on_a.run(MIRROR).status is RunStatus.PARTIAL_SUCCESS

    machines.sql("UPDATE users SET email = 'fixed5@example.com' WHERE id = 5")
    receiver.clear_behaviours()
    receiver.reset()
    on_b = machines.service(machines.b)
    retried = on_b.run(MIRROR)
    assert retried.status is RunStatus.SUCCESS, retried.error
    assert {r["key"]: r["data"] for r in receiver.records} == {
        5: expected_data(5, "fixed5@example.com")
    }
    assert failed_records(on_b, MIRROR)["5"].status is FailureStatus.RESOLVED


def test_a_run_killed_mid_load_is_finished_by_the_other_machine_resending_only_in_flight(
    receiver: Receiver, machines: Machines, shared_store: dict[str, Any]
) -> None:
    """The machine that ran it is gone, its `.ebbtide/` with it: what it had acknowledged was
    published batch by batch, so the other machine resends only the batches in flight."""
    machines.build(receiver.url, shared_store, rows=200)
    receiver.hold_after = 75  # from the 8th batch on, nothing is answered: the run hangs
    run = subprocess.Popen(
        [sys.executable, "-m", "ebbtide", "-w", str(machines.a), "sync", "run", MIRROR],
        env=dict(os.environ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        # Both requests in flight are held: every batch answered before them is settled.
        wait_for(lambda: receiver.in_flight == 2 and receiver.record_count >= 75, run)
        run.kill()
    finally:
        run.wait()
    received = {r["key"] for r in receiver.records}
    in_flight = {r["key"] for r in receiver.records[-20:]}  # the two requests held unanswered
    receiver.release()
    assert len(received) >= 80

    shutil.rmtree(machines.a / ".ebbtide")  # the machine is lost

    receiver.reset()
    on_b = machines.service(machines.b)
    finished = on_b.run(MIRROR)
    assert finished.status is RunStatus.SUCCESS, finished.error
    sent_by_b = {r["key"] for r in receiver.records}
    assert sent_by_b & received <= in_flight  # what A delivered is not sent again
    assert sent_by_b | received == set(range(1, 201))
    dead = on_b.state.list_runs(MIRROR)[-1]
    assert dead.status is RunStatus.INTERRUPTED
    # Credited from its published journal: every record is A's or B's, none both.
    assert dead.loaded_new + finished.loaded_new == 200
    assert finished.loaded_new == len(sent_by_b)


def wait_for(condition: Any, process: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    """`condition` becomes true while the sync runs; a sync that exited fails at once."""

    def reached() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"the sync exited early: {process.stderr.read()!r}")  # type: ignore[union-attr]
        return bool(condition())

    wait_until(reached, timeout_s, "the run to reach the hold")


def test_a_run_that_lost_its_lease_cannot_publish(
    receiver: Receiver,
    machines: Machines,
    shared_store: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    machines.build(receiver.url, shared_store)
    on_a = machines.service(machines.a)
    assert on_a.run(MIRROR).status is RunStatus.SUCCESS
    before = on_a.snapshot_versions.current(MIRROR)

    machines.sql("UPDATE users SET plan = 'gold' WHERE id <= 30")
    shared = on_a.shared_snapshots(MIRROR)
    assert shared is not None
    _, lease = on_a.state.start_run(MIRROR, "manual", 60)
    shared.fetch()
    # Another machine takes the mapping over (its lease expired there, say).
    with on_a.snapshot_versions.engine.begin() as conn:
        conn.execute(sa.update(leases).where(leases.c.mapping == MIRROR).values(token="other"))
    with pytest.raises(Exception, match="lost its lease") as lost:
        shared.publish(lease, lease.run_id)
    assert "was not made current" in str(lost.value)
    assert on_a.snapshot_versions.current(MIRROR) == before

    # A whole run fenced out mid-load: it stops sending and the pointer does not move.
    with on_a.snapshot_versions.engine.begin() as conn:
        conn.execute(sa.delete(leases).where(leases.c.mapping == MIRROR))
    on_b = machines.service(machines.b)
    receiver.hold_after = 10

    with caplog.at_level(logging.WARNING):
        runner = threading.Thread(target=lambda: on_b.run(MIRROR))
        runner.start()
        wait_for_thread(lambda: receiver.in_flight == 2, runner)
        with on_b.snapshot_versions.engine.begin() as conn:
            conn.execute(sa.update(leases).where(leases.c.mapping == MIRROR).values(token="stolen"))
        receiver.release()
        runner.join(60)
    assert on_a.snapshot_versions.current(MIRROR) == before
    assert any("lost its lease" in r.getMessage() for r in caplog.records)


def wait_for_thread(condition: Any, thread: Any, timeout_s: float = 60) -> None:
    """`condition` becomes true while the run's thread lives; a run that ended fails at once."""

    def reached() -> bool:
        assert thread.is_alive(), "the run ended before the hold"
        return bool(condition())

    wait_until(reached, timeout_s, "the run to reach the hold")


# -- reset and replay ------------------------------------------------------------------------


def test_a_reset_on_one_machine_makes_the_other_send_the_whole_model(
    receiver: Receiver, machines: Machines, shared_store: dict[str, Any]
) -> None:
    machines.build(receiver.url, shared_store)
    on_b = machines.service(machines.b)
    assert on_b.run(MIRROR).status is RunStatus.SUCCESS  # B's cache holds the full snapshot
    on_a = machines.service(machines.a)
    assert ResetService(on_a).plan(MIRROR).snapshot_records == ROWS
    ResetService(on_a).reset(MIRROR)
    assert ResetService(on_b).plan(MIRROR).snapshot_records == 0

    receiver.reset()
    again = on_b.run(MIRROR)
    assert (again.status, again.loaded_new) == (RunStatus.SUCCESS, ROWS), again.error


def test_a_run_is_replayed_on_the_other_machine(
    receiver: Receiver, machines: Machines, shared_store: dict[str, Any]
) -> None:
    machines.build(receiver.url, shared_store)
    first = machines.service(machines.a).run(MIRROR)
    receiver.reset()
    replays = ReplayService(machines.service(machines.b))
    replayed = replays.replay(replays.plan(first.id))
    assert replayed.status is RunStatus.SUCCESS, replayed.error
    assert len(receiver.records) == ROWS


# -- failures --------------------------------------------------------------------------------


def test_a_missing_bucket_fails_the_run_naming_the_url_and_sends_nothing(
    receiver: Receiver, machines: Machines, s3_server: str, aws_env: None
) -> None:
    url = f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/ebbtide"
    machines.build(receiver.url, {"url": url, "endpoint_url": s3_server})
    service = machines.service(machines.a)
    with pytest.raises(StorageError, match="does not exist") as error:
        service.run(MIRROR)
    assert url in str(error.value) and "secret-test-not-real" not in str(error.value)
    assert error.value.exit_code == 5
    assert receiver.requests == 0
    [run] = service.state.list_runs(MIRROR)
    assert run.status is RunStatus.FAILED and url in (run.error or "")


def test_bad_credentials_fail_the_run_without_showing_them(
    receiver: Receiver,
    machines: Machines,
    s3_server: str,
    aws_env: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bucket = new_bucket(s3_server)
    machines.build(receiver.url, {"url": f"s3://{bucket}", "endpoint_url": s3_server})
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(StorageError, match="no AWS credentials") as error:
        machines.service(machines.a).run(MIRROR)
    assert f"s3://{bucket}" in str(error.value)
    assert receiver.requests == 0


def test_credentials_in_the_workspace_file_are_refused_with_file_and_line(
    machines: Machines, receiver: Receiver, tmp_path: Path
) -> None:
    machines.build(receiver.url, {"url": "s3://bucket", "aws_secret_access_key": "x"})
    with pytest.raises(ConfigErrors, match="environment variables") as error:
        load_workspace(machines.a)
    assert "ebbtide.yml:" in str(error.value) and "snapshots" in str(error.value)


def test_without_the_setting_no_boto3_is_imported_and_snapshots_stay_local(
    receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    machines = Machines(tmp_path, monkeypatch)
    machines.build(receiver.url, {"url": "unused"})
    doc = yaml.safe_load((machines.a / "ebbtide.yml").read_text())
    del doc["snapshots"]
    (machines.a / "ebbtide.yml").write_text(yaml.safe_dump(doc, sort_keys=False))
    code = (
        "import sys; from pathlib import Path;"
        "from ebbtide.config.workspace import load_workspace;"
        "from ebbtide.services.sync import SyncService;"
        f"s = SyncService(load_workspace(Path({str(machines.a)!r})));"
        f"print(s.run({MIRROR!r}).status, 'boto3' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ)
    )
    assert out.stdout.split() == ["success", "False"], out.stderr
    assert (machines.a / ".ebbtide" / "snapshots" / f"{MIRROR}.duckdb").exists()
    assert not (machines.a / ".ebbtide" / "snapshots" / f"{MIRROR}.version").exists()


def test_a_failed_publish_fails_the_run_and_the_snapshot_does_not_advance(
    receiver: Receiver, machines: Machines, tmp_path: Path
) -> None:
    folder = tmp_path / "shared-folder"
    folder.mkdir()
    machines.build(receiver.url, {"url": str(folder)})
    on_a = machines.service(machines.a)
    assert on_a.run(MIRROR).status is RunStatus.SUCCESS
    before = on_a.snapshot_versions.current(MIRROR)
    machines.sql("UPDATE users SET plan = 'gold' WHERE id IN (2, 4)")
    versions = folder / MIRROR / "versions"
    versions.rename(tmp_path / "versions-aside")
    versions.write_text("not a folder")  # no new version can be written there

    receiver.reset()
    with pytest.raises(StorageError, match=str(folder)) as error:
        on_a.run(MIRROR)
    assert error.value.exit_code == 5
    assert on_a.snapshot_versions.current(MIRROR) == before
    [failed, _] = on_a.state.list_runs(MIRROR)
    assert failed.status is RunStatus.FAILED
    assert {r["key"] for r in receiver.records} == {2, 4}

    versions.unlink()
    (tmp_path / "versions-aside").rename(versions)
    receiver.reset()
    recovered = machines.service(machines.b).run(MIRROR)  # its acknowledgements were kept
    assert recovered.status is RunStatus.SUCCESS, recovered.error
    assert receiver.requests == 0
    assert on_a.snapshot_versions.current(MIRROR).generation == before.generation + 1


def test_a_run_with_nothing_to_send_publishes_no_new_version(
    receiver: Receiver, machines: Machines, shared_store: dict[str, Any]
) -> None:
    machines.build(receiver.url, shared_store)
    on_a = machines.service(machines.a)
    on_a.run(MIRROR)
    published = on_a.snapshot_versions.current(MIRROR)
    assert on_a.run(MIRROR).status is RunStatus.SUCCESS
    assert on_a.snapshot_versions.current(MIRROR) == published


def test_sync_plan_on_the_other_machine_diffs_against_the_current_version(
    receiver: Receiver, machines: Machines, shared_store: dict[str, Any]
) -> None:
    machines.build(receiver.url, shared_store)
    machines.service(machines.a).run(MIRROR)
    machines.sql("DELETE FROM users WHERE id = 3")
    plan = machines.service(machines.b).plan(MIRROR)
    assert (plan.added, plan.updated, plan.deleted) == (0, 0, 1)
    assert not list((machines.b / ".ebbtide" / "work").glob(f"{MIRROR}-*"))  # its copy is gone


def test_local_snapshots_are_kept_when_the_setting_is_added(
    receiver: Receiver, machines: Machines, shared_store: dict[str, Any]
) -> None:
    """A workspace that synced with snapshots in `.ebbtide/` publishes them on its first run."""
    machines.build(receiver.url, shared_store)
    doc = yaml.safe_load((machines.a / "ebbtide.yml").read_text())
    local = {k: v for k, v in doc.items() if k != "snapshots"}
    (machines.a / "ebbtide.yml").write_text(yaml.safe_dump(local, sort_keys=False))
    assert machines.service(machines.a).run(MIRROR).loaded_new == ROWS

    (machines.a / "ebbtide.yml").write_text(yaml.safe_dump(doc, sort_keys=False))
    machines.sql("UPDATE users SET plan = 'gold' WHERE id = 1")
    receiver.reset()
    assert machines.service(machines.a).run(MIRROR).status is RunStatus.SUCCESS
    assert sent(receiver) == {("updated", 1)}
    receiver.reset()
    assert machines.service(machines.b).run(MIRROR).status is RunStatus.SUCCESS
    assert receiver.requests == 0


def test_an_unreachable_object_store_fails_the_run_naming_it(
    receiver: Receiver, machines: Machines, aws_env: None
) -> None:

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    machines.build(receiver.url, {"url": "s3://bucket/x", "endpoint_url": endpoint})
    service = machines.service(machines.a)
    with pytest.raises(StorageError, match="s3://bucket/x") as error:
        service.run(MIRROR)
    assert endpoint in str(error.value)
    assert receiver.requests == 0


def test_sent_journals_in_the_shared_store_are_pruned_with_the_local_ones(
    receiver: Receiver, machines: Machines, shared_store: dict[str, Any]
) -> None:
    machines.build(receiver.url, shared_store)
    on_a = machines.service(machines.a)
    first = on_a.run(MIRROR)
    shared = on_a.shared_snapshots(MIRROR)
    assert shared is not None
    sent_key = f"{MIRROR}/sent/{first.id:012d}.parquet"
    assert sent_key in shared.objects.list_keys(f"{MIRROR}/sent/")
    assert shared.prune_sent(30) == 0  # young enough
    in_31_days = time.time() + 31 * 86_400
    assert shared.prune_sent(30, now=in_31_days) == 1
    assert shared.objects.list_keys(f"{MIRROR}/sent/") == []


def test_journals_prune_removes_old_sent_journals_from_a_shared_folder(
    receiver: Receiver, machines: Machines, tmp_path: Path
) -> None:
    folder = tmp_path / "shared-folder"
    folder.mkdir()
    machines.build(receiver.url, {"url": str(folder)})
    run = machines.service(machines.a).run(MIRROR)
    remote = folder / MIRROR / "sent" / f"{run.id:012d}.parquet"
    long_ago = time.time() - 40 * 86_400
    os.utime(remote, (long_ago, long_ago))
    files, _ = ReplayService(machines.service(machines.b)).prune(30)
    assert files == 1 and not remote.exists()


def test_the_cli_says_in_one_line_which_store_is_missing_and_exits_5(
    receiver: Receiver, machines: Machines, s3_server: str, aws_env: None
) -> None:
    url = f"s3://missing-{uuid.uuid4().hex[:8]}/etl"
    machines.build(receiver.url, {"url": url, "endpoint_url": s3_server})
    done = subprocess.run(
        [sys.executable, "-m", "ebbtide", "-w", str(machines.a), "sync", "run", MIRROR],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=120,
    )
    assert done.returncode == 5, done.stderr
    assert url in done.stderr and "Traceback" not in done.stderr
    assert "secret-test-not-real" not in done.stderr + done.stdout
    assert receiver.requests == 0


def test_the_s3_adapter_tells_a_missing_bucket_from_a_missing_object(
    s3_server: str, aws_env: None, tmp_path: Path
) -> None:
    from ebbtide.snapshots.s3 import S3Objects

    file = tmp_path / "object"
    file.write_bytes(b"snapshot")
    present = S3Objects(f"s3://{new_bucket(s3_server)}/p", endpoint_url=s3_server, region=None)
    assert present.get_file("absent", tmp_path / "copy") is False
    assert present.get_bytes("absent") is None
    present.put_file("a/b", file)
    assert present.get_file("a/b", tmp_path / "copy")
    assert (tmp_path / "copy").read_bytes() == b"snapshot"
    assert present.list_keys("a/") == ["a/b"]

    gone = S3Objects("s3://no-such-bucket-at-all/p", endpoint_url=s3_server, region=None)
    for attempt in (
        lambda: gone.put_file("k", file),  # upload_file's own error type
        lambda: gone.get_file("k", tmp_path / "copy"),  # a bare 404 from HEAD
        lambda: gone.put_bytes("k", b"1"),
        lambda: gone.list_keys(""),
    ):
        with pytest.raises(StorageError, match="s3://no-such-bucket-at-all/p.*does not exist"):
            attempt()


def test_a_reset_that_cannot_reach_the_store_changes_nothing_and_frees_the_mapping(
    receiver: Receiver, machines: Machines, s3_server: str, aws_env: None
) -> None:
    bucket = new_bucket(s3_server)
    machines.build(receiver.url, {"url": f"s3://{bucket}/x", "endpoint_url": s3_server})
    on_a = machines.service(machines.a)
    assert on_a.run(MIRROR).status is RunStatus.SUCCESS
    published = on_a.snapshot_versions.current(MIRROR)
    client = boto3.client("s3", endpoint_url=s3_server)
    kept = {
        k: client.get_object(Bucket=bucket, Key=k)["Body"].read()
        for k in bucket_keys(s3_server, bucket)
    }
    for key in kept:
        client.delete_object(Bucket=bucket, Key=key)
    client.delete_bucket(Bucket=bucket)

    with pytest.raises(StorageError, match=f"s3://{bucket}/x"):
        ResetService(on_a).reset(MIRROR)
    assert on_a.snapshot_versions.current(MIRROR) == published
    reset_run = on_a.state.list_runs(MIRROR)[0]
    assert reset_run.status is RunStatus.FAILED

    client.create_bucket(Bucket=bucket)  # the store is back: the mapping is not held
    for key, body in kept.items():
        client.put_object(Bucket=bucket, Key=key, Body=body)
    receiver.reset()
    assert machines.service(machines.b).run(MIRROR).status is RunStatus.SUCCESS
    assert receiver.requests == 0


def test_a_keys_history_shows_the_runs_of_every_machine(
    receiver: Receiver, machines: Machines, shared_store: dict[str, Any]
) -> None:
    machines.build(receiver.url, shared_store)
    on_a = machines.service(machines.a)
    first = on_a.run(MIRROR)
    machines.sql("UPDATE users SET email = 'new7@example.com' WHERE id = 7")
    on_b = machines.service(machines.b)
    second = on_b.run(MIRROR)
    assert second.loaded_updated == 1
    for root, service in ((machines.a, on_a), (machines.b, on_b)):
        history = History(load_workspace(root), service.state).key_history(MIRROR, "7")
        assert [(r.run_id, r.operation, r.outcome) for r in history.runs] == [
            (second.id, "updated", "loaded"),
            (first.id, "added", "loaded"),
        ], root


def test_a_keys_history_is_read_on_a_machine_that_never_ran_the_mapping(
    receiver: Receiver, machines: Machines, shared_store: dict[str, Any]
) -> None:
    machines.build(receiver.url, shared_store)
    ran = machines.service(machines.a).run(MIRROR)
    viewer = machines.tmp / "machine-c"  # a serve that only answers the web UI and the API
    viewer.mkdir()
    (viewer / "ebbtide.yml").write_text((machines.a / "ebbtide.yml").read_text())
    service = machines.service(viewer)
    history = History(load_workspace(viewer), service.state).key_history(MIRROR, "7")
    assert [(r.run_id, r.operation, r.outcome) for r in history.runs] == [
        (ran.id, "added", "loaded")
    ]
