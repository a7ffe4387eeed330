"""`ebbtide.Workspace`: the CLI's work as function calls, against a real workspace.

A DuckDB warehouse, ebbtide.yml with `${HOOK_URL}`, and the demo receiver on 127.0.0.1 that
accepts, rejects chosen keys or refuses the credentials. No mocks.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator

import pytest

import ebbtide
from ebbtide.demo.receiver import Receiver
from ebbtide.errors import ConfigError, ConfigErrors, MappingBusyError, UsageError
from ebbtide.services.views import RunView
from ebbtide.state.schedules import ScheduleBook
from ebbtide.values import RunStatus
from tests.integration.test_reset_replay import sync_in_flight
from tests.integration.workspace_kit import Kit, hook, mapping, write_workspace

ROWS = 30


@pytest.fixture
def workspace(kit: Kit, receiver: Receiver) -> Iterator[ebbtide.Workspace]:
    kit.build(receiver.url, rows=ROWS)
    with ebbtide.Workspace.load(kit.root) as opened:
        yield opened


def test_sync_returns_the_run_as_the_history_records_it(
    workspace: ebbtide.Workspace, receiver: Receiver
) -> None:
    run = workspace.sync("users_mirror")

    assert isinstance(run, RunView)
    assert run.status is RunStatus.SUCCESS
    assert (run.extracted, run.added, run.loaded_new, run.failed) == (ROWS, ROWS, ROWS, 0)
    assert sorted(receiver.keys()) == list(range(1, ROWS + 1))
    assert workspace.runs("users_mirror") == [run]
    details = workspace.run(run.id)
    assert RunView(**dict(details)) == run and details.failures == []
    assert run.actor == workspace.actor and run.trigger == "manual"


def test_load_takes_the_folder_or_its_file(kit: Kit, receiver: Receiver) -> None:
    kit.build(receiver.url, rows=3)
    with ebbtide.Workspace.load(str(kit.root / "ebbtide.yml")) as by_file:
        assert by_file.root == kit.root.resolve()
        assert [m.name for m in by_file.mappings()] == ["users_mirror", "users_upsert"]
    other = kit.root / "prod.yml"
    other.write_text("{}")
    with pytest.raises(ConfigError, match="ebbtide.yml"):
        ebbtide.Workspace.load(other)


def test_a_bad_workspace_raises_config_errors_naming_file_line_and_key(kit: Kit) -> None:
    write_workspace(kit.root, destinations={"hook": hook()}, mappings={"m": mapping("mirorr")})
    kit.monkeypatch.setenv("HOOK_URL", "http://127.0.0.1:9/ingest")
    kit.monkeypatch.setenv("HOOK_TOKEN", "t")

    with pytest.raises(ConfigErrors) as raised:
        ebbtide.Workspace.load(kit.root)

    (error,) = raised.value.errors
    assert error.file == str(kit.root / "ebbtide.yml")
    assert error.line is not None and error.path == "mappings.m.mode"


def test_a_failed_sync_is_returned_and_an_unknown_mapping_raised(
    workspace: ebbtide.Workspace, receiver: Receiver
) -> None:
    receiver.status_for_all = 401

    run = workspace.sync("users_mirror")

    assert run.status is RunStatus.FAILED
    assert run.error is not None and "401" in run.error
    with pytest.raises(UsageError, match="users_mirorr"):
        workspace.sync("users_mirorr")


def test_partial_success_lists_the_failed_records(
    workspace: ebbtide.Workspace, receiver: Receiver
) -> None:
    receiver.reject(7, message="bad email")

    run = workspace.sync("users_upsert")

    assert run.status is RunStatus.PARTIAL_SUCCESS
    assert (run.loaded_new, run.failed) == (ROWS - 1, 1)
    (failure,) = workspace.failed_records(run.id)
    assert (failure.key, failure.message) == (7, "bad email")
    assert [r.key for r in workspace.pending_failures("users_upsert")] == [7]
    assert workspace.runs(status="partial_success") == [run]
    assert workspace.runs(status=RunStatus.SUCCESS) == []


def test_reset_is_refused_without_confirm_and_then_resends_everything(
    workspace: ebbtide.Workspace, receiver: Receiver
) -> None:
    workspace.sync("users_mirror")

    with pytest.raises(UsageError, match="confirm=True"):
        workspace.reset("users_mirror")
    assert workspace.plan("users_mirror").would_send == 0

    reset = workspace.reset("users_mirror", confirm=True)
    assert (reset.trigger, reset.status) == ("reset", RunStatus.SUCCESS)
    assert workspace.plan("users_mirror").added == ROWS
    receiver.reset()
    again = workspace.sync("users_mirror", full_resync=True)
    assert again.loaded_new == ROWS and len(receiver.keys()) == ROWS
    assert [r.trigger for r in workspace.runs("users_mirror")] == [
        "manual",
        "reset",
        "reset",
        "manual",
    ]


def test_a_busy_mapping_raises_and_is_not_reset(
    kit: Kit, workspace: ebbtide.Workspace, receiver: Receiver
) -> None:
    with sync_in_flight(kit.service(), receiver, "users_mirror") as finished:
        with pytest.raises(MappingBusyError):
            workspace.sync("users_mirror")
        with pytest.raises(MappingBusyError, match="cannot reset while the mapping is syncing"):
            workspace.reset("users_mirror", confirm=True)

    (held,) = finished
    assert held.status is RunStatus.SUCCESS
    assert [r.trigger for r in workspace.runs("users_mirror")] == ["manual"]


def test_replay_resends_the_failed_records_of_a_run(
    workspace: ebbtide.Workspace, receiver: Receiver
) -> None:
    receiver.reject(4)
    first = workspace.sync("users_upsert")
    receiver.clear_behaviours()
    receiver.reset()

    replayed = workspace.replay(first.id, only_failed=True)

    assert (replayed.trigger, replayed.replay_of, replayed.status) == (
        "replay",
        first.id,
        RunStatus.SUCCESS,
    )
    assert receiver.keys() == [4]
    with pytest.raises(UsageError, match="no failed records"):
        workspace.replay(replayed.id, only_failed=True)


def test_sync_all_runs_every_enabled_mapping_and_says_which_could_not(
    kit: Kit, receiver: Receiver
) -> None:
    with Receiver() as other:
        kit.build(
            receiver.url,
            rows=5,
            destinations={"hook": hook(), "other": {**hook(), "url": other.url}},
            mappings={
                "a": mapping("upsert"),
                "b": mapping("mirror", destination="other"),
                "off": mapping(enabled=False),
            },
        )
        with ebbtide.Workspace.load(kit.root) as workspace:
            assert workspace.sync_all().ok
            kit.sql("UPDATE users SET plan = 'gold' WHERE id = 2")
            with sync_in_flight(kit.service(), receiver, "a"):
                result = workspace.sync_all()

    assert [(r.mapping, r.loaded_updated) for r in result.runs] == [("b", 1)]
    assert list(result.refused) == ["a"] and not result.ok
    assert isinstance(result.refused["a"], MappingBusyError)


def test_sync_works_inside_a_running_event_loop(
    workspace: ebbtide.Workspace, receiver: Receiver
) -> None:
    async def orchestrate() -> tuple[RunView, RunView]:
        blocking = workspace.sync("users_mirror")  # a sync runs a loop of its own
        awaited = await workspace.sync_async("users_upsert")
        return blocking, awaited

    blocking, awaited = asyncio.run(orchestrate())

    assert blocking.status is awaited.status is RunStatus.SUCCESS
    assert blocking.loaded_new == awaited.loaded_new == ROWS


def test_the_cli_does_not_import_the_python_api_or_dagster() -> None:
    probe = (
        "import sys, ebbtide.cli.app;"
        " print(sorted(m for m in ('ebbtide.workspace_api', 'dagster', 'pandas', 'fastapi')"
        " if m in sys.modules))"
    )
    shown = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert shown.stdout.strip() == "[]"


def test_sync_requests_and_pauses_reach_the_schedule_book(
    kit: Kit, workspace: ebbtide.Workspace
) -> None:
    first = workspace.request_sync("users_mirror")
    second = workspace.request_sync("users_mirror")
    assert (first.status, second.status) == ("queued", "merged")
    assert first.requested_by == workspace.actor

    book = ScheduleBook(kit.service().state.engine)
    workspace.pause("users_mirror")
    slot = book.slot("users_mirror")
    assert slot is not None and slot.paused
    workspace.resume("users_mirror")
    slot = book.slot("users_mirror")
    assert slot is not None and not slot.paused
    with pytest.raises(UsageError, match="users_mirorr"):
        workspace.pause("users_mirorr")


def test_validate_checks_each_mapping_against_its_model_columns(
    kit: Kit, receiver: Receiver
) -> None:
    broken = mapping("upsert", fields={"email": "email", "tier": "plan_tier"})
    kit.build(receiver.url, rows=3, mappings={"users_mirror": mapping(), "broken": broken})

    with ebbtide.Workspace.load(kit.root) as workspace:
        workspace.validate(offline=True)  # the columns are not read
        with pytest.raises(ConfigErrors) as raised:
            workspace.validate()

    (error,) = raised.value.errors
    assert error.file == str(kit.root / "ebbtide.yml") and error.line is not None
    assert "broken" in error.path and "plan_tier" in error.message
