"""The read service: runs and mappings as the CLI's --json and the API return them."""

from __future__ import annotations

from pathlib import Path

from ebbtide.config.workspace import load_workspace
from ebbtide.services.history import History
from ebbtide.services.sync import SyncService
from ebbtide.services.views import Health
from ebbtide.services.workspace_init import init_workspace
from ebbtide.values import RunResult, RunStatus, Trigger


def _service(tmp_path: Path) -> SyncService:
    root = tmp_path / "ws"
    init_workspace(root, demo=True)
    return SyncService(load_workspace(root))


def test_mappings_show_their_last_run_and_health(tmp_path: Path) -> None:
    service = _service(tmp_path)
    history = History(service.workspace, service.state)
    assert {m.name: m.health for m in history.mappings()} == {
        name: Health.NEVER_RUN for name in service.workspace.spec.mappings
    }

    synced = service.run("users_to_archive")
    archive = history.mapping("users_to_archive")
    assert synced.status is RunStatus.SUCCESS
    assert archive.health is Health.HEALTHY
    assert archive.last_run is not None and archive.last_run.id == synced.id
    assert (archive.model, archive.action, archive.enabled) == ("users", "append", True)

    # A run still going says nothing of health: the last finished one does.
    _, lease = service.state.start_run("users_to_archive", Trigger.MANUAL.value, 60)
    going = history.mapping("users_to_archive")
    assert going.last_run is not None and going.last_run.status is RunStatus.RUNNING
    assert going.health is Health.HEALTHY
    service.state.finish_run(lease, RunStatus.PARTIAL_SUCCESS, RunResult())
    assert history.mapping("users_to_archive").health is Health.FAILING


def test_run_json_keeps_the_isoformat_of_its_times(tmp_path: Path) -> None:
    service = _service(tmp_path)
    record = service.run("users_to_archive")
    shown = History(service.workspace, service.state).runs()[0].model_dump(mode="json")
    assert shown["started_at"] == record.started_at.isoformat()
    assert shown["finished_at"] == record.finished_at.isoformat() if record.finished_at else False
    assert shown["phases_s"].keys() == {"extract", "diff", "load", "commit"}
