"""`ebbtide.integrations.dagster`: one asset per mapping, materialized by Dagster itself.

`dagster.materialize` syncs a real workspace (DuckDB warehouse, the demo receiver on
127.0.0.1): the run's counts become the materialization's metadata, a failed run fails the
step with the run's error, a partial success materializes with its failed count.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

dg = pytest.importorskip("dagster")

import ebbtide  # noqa: E402
from ebbtide.demo.receiver import Receiver  # noqa: E402
from ebbtide.integrations.dagster import (  # noqa: E402
    COUNTS,
    EbbtideResource,
    ebbtide_assets,
)
from ebbtide.services.views import RunView  # noqa: E402
from tests.integration.workspace_kit import Kit, hook, mapping  # noqa: E402

ROWS = 12


@pytest.fixture(autouse=True)
def dagster_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path_factory.mktemp("dagster_home")))


@pytest.fixture
def root(kit: Kit, receiver: Receiver) -> Path:
    kit.build(
        receiver.url,
        rows=ROWS,
        destinations={"crm-hook": hook()},
        mappings={
            "users_to_crm": mapping("mirror", destination="crm-hook"),
            "users-upsert": mapping("upsert", destination="crm-hook"),
            "paused": mapping(destination="crm-hook", enabled=False),
        },
    )
    return kit.root


@pytest.fixture
def resources(root: Path) -> dict[str, Any]:
    return {"ebbtide": EbbtideResource(workspace_path=str(root))}


def last_run(root: Path, name: str) -> RunView:
    with ebbtide.Workspace.load(root) as workspace:
        (run,) = workspace.runs(name, limit=1)
        return run


def metadata_of(result: Any, name: str) -> dict[str, Any]:
    (materialization,) = result.asset_materializations_for_node(name.replace("-", "_"))
    return {key: value.value for key, value in materialization.metadata.items()}


def expected_metadata(run: RunView) -> dict[str, Any]:
    expected = {name: getattr(run, name) for name in COUNTS}
    return {**expected, "run_id": run.id, "status": run.status.value}


def test_one_asset_per_enabled_mapping_tagged_with_model_and_destination(root: Path) -> None:
    assets = ebbtide_assets(root, key_prefix=["crm"])

    specs = {spec.key: spec for a in assets for spec in a.specs}
    assert set(specs) == {
        dg.AssetKey(["crm", "users_to_crm"]),
        dg.AssetKey(["crm", "users-upsert"]),
    }
    spec = specs[dg.AssetKey(["crm", "users_to_crm"])]
    assert spec.group_name == "ebbtide"
    assert spec.tags["ebbtide/model"] == "users"
    assert spec.tags["ebbtide/destination"] == "crm-hook"
    assert spec.kinds == {"ebbtide"}
    chosen = ebbtide_assets(
        root, mappings=["paused"], group_name="reverse_etl", deps={"users": ["dbt_users"]}
    )
    (paused,) = [s for a in chosen for s in a.specs]
    assert (paused.key, paused.group_name) == (dg.AssetKey(["paused"]), "reverse_etl")
    assert [d.asset_key for d in paused.deps] == [dg.AssetKey(["dbt_users"])]
    with pytest.raises(ebbtide.errors.UsageError, match="users_to_crn"):
        ebbtide_assets(root, mappings=["users_to_crn"])


def test_materializing_syncs_and_reports_the_run_counts(
    root: Path, resources: dict[str, Any], receiver: Receiver
) -> None:
    result = dg.materialize(ebbtide_assets(root), resources=resources)

    assert result.success
    for name in ("users_to_crm", "users-upsert"):
        run = last_run(root, name)
        assert run.loaded_new == ROWS and run.actor == f"dagster run {result.run_id}"
        metadata = metadata_of(result, name)
        assert metadata.pop("duration_s") == pytest.approx(run.duration_s)
        assert metadata == expected_metadata(run)
    assert len(receiver.keys()) == 2 * ROWS


def test_a_partial_success_materializes_and_says_how_many_failed(
    root: Path, resources: dict[str, Any], receiver: Receiver
) -> None:
    receiver.reject(3)
    receiver.reject(9)

    result = dg.materialize(ebbtide_assets(root, mappings=["users_to_crm"]), resources=resources)

    assert result.success
    metadata = metadata_of(result, "users_to_crm")
    assert (metadata["status"], metadata["failed"], metadata["loaded_new"]) == (
        "partial_success",
        2,
        ROWS - 2,
    )
    assert metadata["failed_by_class"] == {"validation": 2}

    # The next sync retries only those two, and the receiver refuses both again: every record
    # failed, so the run failed without a run-level error, and the asset says why.
    again = dg.materialize(
        ebbtide_assets(root, mappings=["users_to_crm"]), resources=resources, raise_on_error=False
    )
    assert not again.success
    (failure,) = again.get_step_failure_events()
    description = failure.step_failure_data.user_failure_data.description
    assert "failed: 2 record(s) validation: rejected by the receiver" in description


def test_a_failed_run_fails_the_asset_with_the_run_error(
    root: Path, resources: dict[str, Any], receiver: Receiver
) -> None:
    receiver.status_for_all = 401

    result = dg.materialize(
        ebbtide_assets(root, mappings=["users_to_crm"]), resources=resources, raise_on_error=False
    )

    assert not result.success
    run = last_run(root, "users_to_crm")
    assert run.status == "failed" and run.error
    (failure,) = result.get_step_failure_events()
    user_failure = failure.step_failure_data.user_failure_data
    assert run.error in user_failure.description
    assert user_failure.metadata["run_id"].value == run.id
    assert result.asset_materializations_for_node("users_to_crm") == []
