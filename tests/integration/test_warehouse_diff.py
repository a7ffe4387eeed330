"""`diff: warehouse` on real PostgreSQL and MariaDB servers: the snapshot is a table in
ebbtide's schema there, only changed rows leave the warehouse, a fenced run cannot commit, and
switching between the diffs is refused until a reset."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ebbtide.demo.receiver import Receiver
from ebbtide.errors import LeaseLostError
from ebbtide.snapshots.warehouse_sql import snapshot_table_name
from ebbtide.values import RunStatus
from tests.integration.warehouse_kit import backend_kit
from tests.integration.workspace_kit import Kit, expected_data, mapping, sent

ROWS = 30


@pytest.fixture(params=["postgres-warehouse", "mysql-warehouse"])
def kit(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Kit]:
    yield from backend_kit(request, tmp_path, monkeypatch)


def snapshot_rows(kit: Kit, name: str) -> int:
    assert kit.backend is not None
    quote = '"' if kit.backend.name == "postgres" else "`"
    table = f"{quote}{kit.backend.state_schema}{quote}.{quote}{snapshot_table_name(name)}{quote}"
    return int(kit.backend.rows(f"SELECT count(*) FROM {table}")[0][0])


def data_sent(receiver: Receiver) -> dict[Any, Any]:
    return {r["key"]: r["data"] for r in receiver.records}


def test_first_sync_sends_everything_then_only_what_changed(receiver: Receiver, kit: Kit) -> None:
    service = kit.build(receiver.url, rows=ROWS)
    first = service.run("users_mirror")
    assert first.status is RunStatus.SUCCESS, first.error
    assert (first.extracted, first.added, first.loaded_new) == (ROWS, ROWS, ROWS)
    assert data_sent(receiver) == {i: expected_data(i) for i in range(1, ROWS + 1)}
    assert snapshot_rows(kit, "users_mirror") == ROWS

    receiver.reset()
    kit.sql(
        "UPDATE users SET email = 'new3@example.com' WHERE id = 3",
        "DELETE FROM users WHERE id = 5",
        "INSERT INTO users VALUES (31, 'user31@example.com', 'free', 46.5)",
    )
    second = service.run("users_mirror")
    assert second.status is RunStatus.SUCCESS, second.error
    assert (second.extracted, second.added, second.updated, second.deleted) == (ROWS, 1, 1, 1)
    assert sent(receiver) == {("updated", 3), ("deleted", 5), ("added", 31)}
    assert data_sent(receiver)[3] == expected_data(3, "new3@example.com")
    assert snapshot_rows(kit, "users_mirror") == ROWS

    receiver.reset()
    third = service.run("users_mirror")
    assert (third.added, third.updated, third.deleted, receiver.requests) == (0, 0, 0, 0)


def test_same_value_written_again_or_a_decimal_rescaled_is_not_a_change(
    receiver: Receiver, kit: Kit
) -> None:
    service = kit.build(receiver.url, rows=ROWS)
    assert service.run("users_mirror").status is RunStatus.SUCCESS
    receiver.reset()
    kit.sql(
        "UPDATE users SET email = email, plan = plan",
        "ALTER TABLE users "
        + (
            "ALTER COLUMN ltv TYPE DECIMAL(20, 3)"
            if kit.backend is not None and kit.backend.name == "postgres"
            else "MODIFY ltv DECIMAL(20, 3)"
        ),
    )
    again = service.run("users_mirror")
    assert (again.added, again.updated, again.deleted, receiver.requests) == (0, 0, 0, 0)


def test_rejected_records_are_retried_with_the_latest_data(receiver: Receiver, kit: Kit) -> None:
    service = kit.build(receiver.url, rows=ROWS)
    receiver.reject(4)
    first = service.run("users_mirror")
    assert first.status is RunStatus.PARTIAL_SUCCESS
    assert snapshot_rows(kit, "users_mirror") == ROWS - 1  # never the rejected one

    receiver.clear_behaviours()
    receiver.reset()
    kit.sql("UPDATE users SET email = 'later4@example.com' WHERE id = 4")
    second = service.run("users_mirror")
    assert second.status is RunStatus.SUCCESS, second.error
    assert (second.retried, second.added) == (1, 1)
    assert data_sent(receiver) == {4: expected_data(4, "later4@example.com")}
    assert snapshot_rows(kit, "users_mirror") == ROWS


def test_switching_between_the_diffs_is_refused_until_a_reset(receiver: Receiver, kit: Kit) -> None:
    service = kit.build(receiver.url, rows=ROWS)
    assert service.run("users_mirror").status is RunStatus.SUCCESS
    workspace = kit.root / "ebbtide.yml"
    workspace.write_text(workspace.read_text().replace("diff: warehouse", "diff: local"))
    switched = kit.service()
    refused = switched.run("users_mirror")
    assert refused.status is RunStatus.FAILED
    assert refused.error is not None
    for words in ("diff: local", "kept by the warehouse diff", "ebbtide reset users_mirror"):
        assert words in refused.error

    from ebbtide.services.reset import ResetService

    ResetService(switched).reset("users_mirror")
    receiver.reset()
    assert snapshot_table_name("users_mirror") not in {
        str(r[0])
        for r in kit.backend.rows(  # type: ignore[union-attr]
            "SELECT table_name FROM information_schema.tables WHERE table_schema ="
            f" '{kit.backend.state_schema}'"  # type: ignore[union-attr]
        )
    }
    local = switched.run("users_mirror")
    assert local.status is RunStatus.SUCCESS, local.error
    assert (local.added, receiver.requests > 0) == (ROWS, True)


def test_a_fenced_run_cannot_commit_into_the_warehouse_snapshot(
    receiver: Receiver, kit: Kit
) -> None:
    service = kit.build(receiver.url, rows=ROWS, mappings={"users_mirror": mapping("mirror")})
    assert service.run("users_mirror").status is RunStatus.SUCCESS
    compiled = service.compile("users_mirror")
    from ebbtide.values import Lease

    def store(run_id: int) -> Any:
        lease = Lease("users_mirror", "test", run_id)
        return service.open_store(compiled, lease=lease)

    old, new = store(10_001), store(10_002)  # a run, then the one that took its lease over
    try:
        kit.sql("UPDATE users SET email = 'fenced@example.com' WHERE id = 1")
        source = service._source(compiled.model)
        old.extract(source, service.workspace.model_query(compiled.model))
        source.close()
        old.diff()
        journal = old.open_journal(10_001)
        batch = old.outbound(compiled.operations_sent, 10).read_next_batch()
        journal.append(batch)  # journaled here; the checkpoint into the warehouse is refused
        with pytest.raises(LeaseLostError, match="run 10002 took it over"):
            journal.close()
    finally:
        old.close()
        new.close()


def test_validate_checks_the_grants_the_warehouse_diff_needs(receiver: Receiver, kit: Kit) -> None:
    from ebbtide.errors import ConfigErrors
    from ebbtide.services.workspace_services import check_mappings

    service = kit.build(receiver.url, rows=3, mappings={"users_mirror": mapping("mirror")})
    check_mappings(service, offline=False)  # the kit's user has what it needs
    assert kit.backend is not None
    if kit.backend.name == "mysql":  # a database the user was granted nothing on
        forbidden = f"{kit.backend.state_schema}_elsewhere"
        workspace = kit.root / "ebbtide.yml"
        text = workspace.read_text().replace(kit.backend.state_schema, forbidden)
        workspace.write_text(text)
        with pytest.raises(ConfigErrors) as refused:
            check_mappings(kit.service(), offline=False)
        said = str(refused.value)
        line = next(i for i, t in enumerate(text.splitlines(), 1) if "diff: warehouse" in t)
        assert f"ebbtide.yml:{line}: mappings.users_mirror.diff:" in said
        assert f"schema {forbidden!r}" in said and "CREATE TEMPORARY TABLES" in said


def test_a_source_that_cannot_run_the_diff_is_a_config_error(
    receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ebbtide.errors import ConfigErrors
    from ebbtide.services.workspace_services import check_mappings

    duck = Kit(tmp_path / "duck", monkeypatch)
    (tmp_path / "duck").mkdir()
    try:
        service = duck.build(
            receiver.url, rows=3, mappings={"users_mirror": mapping("mirror", diff="warehouse")}
        )
        with pytest.raises(
            ConfigErrors, match=r"mappings\.users_mirror\.diff: .*duckdb.*`diff: local`"
        ):
            check_mappings(service, offline=False)
        run = service.run("users_mirror")
        assert run.status is RunStatus.FAILED and "needs a postgres or mysql source" in str(
            run.error
        )
    finally:
        duck.close()


@pytest.mark.parametrize(
    ("extra", "said"),
    [
        ("select id, email, plan, ltv from users where id in (3, 4)", "2 primary key value(s)"),
        ("select null, 'x@example.com', 'free', 1.5", "1 row(s) have a null primary key"),
    ],
    ids=["duplicate", "null"],
)
def test_bad_keys_fail_the_run_before_anything_is_sent(
    receiver: Receiver, kit: Kit, extra: str, said: str
) -> None:
    service = kit.build(receiver.url, rows=ROWS, mappings={"users_mirror": mapping("mirror")})
    workspace = kit.root / "ebbtide.yml"
    sql = "select id, email, plan, ltv from users"
    workspace.write_text(workspace.read_text().replace(sql, f"{sql} union all {extra}"))
    run = kit.service().run("users_mirror")
    assert run.status is RunStatus.FAILED
    assert said in str(run.error) and "nothing was sent" in str(run.error)
    assert receiver.requests == 0
    del service


def test_sync_plan_diffs_in_the_warehouse_and_changes_nothing(receiver: Receiver, kit: Kit) -> None:
    service = kit.build(receiver.url, rows=ROWS, mappings={"users_mirror": mapping("mirror")})
    assert service.run("users_mirror").status is RunStatus.SUCCESS
    kit.sql("UPDATE users SET plan = 'gold' WHERE id = 2", "DELETE FROM users WHERE id = 9")
    receiver.reset()

    plan = service.plan("users_mirror", samples=5)

    assert (plan.extracted, plan.added, plan.updated, plan.deleted) == (ROWS - 1, 0, 1, 1)
    assert receiver.requests == 0
    assert snapshot_rows(kit, "users_mirror") == ROWS  # the plan committed nothing
    assert kit.backend is not None
    tables = {
        str(r[0])
        for r in kit.backend.rows(
            "SELECT table_name FROM information_schema.tables WHERE table_schema ="
            f" '{kit.backend.state_schema}'"
        )
    }
    assert tables == {"ebbtide_mappings", snapshot_table_name("users_mirror")}  # no stage left
    run = service.run("users_mirror")
    assert (run.updated, run.deleted) == (1, 1)
