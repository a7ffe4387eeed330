"""Dagster: one asset per ebbtide mapping (`pip install 'ebbtide[dagster]'`).

    import dagster as dg
    from ebbtide.integrations.dagster import EbbtideResource, ebbtide_assets

    defs = dg.Definitions(
        assets=ebbtide_assets("path/to/workspace"),
        resources={"ebbtide": EbbtideResource(workspace_path="path/to/workspace")},
    )

Materializing an asset syncs its mapping through `ebbtide.Workspace` and attaches the run's
counts as metadata. A run that ends `failed` (or cancelled, interrupted) fails the asset with
the run's error; `partial_success` materializes it, with the failed count in the metadata and a
warning in the log. This is the one module that imports Dagster.
"""

# No `from __future__ import annotations`: Dagster reads the asset function's annotations.
from collections.abc import Mapping, Sequence
from os import PathLike
from pathlib import Path

import dagster as dg
from pydantic import Field

from ebbtide.config.models import MappingSpec
from ebbtide.services.views import RunDetailsView, RunView
from ebbtide.services.workspace_services import open_workspace
from ebbtide.values import RunStatus
from ebbtide.workspace_api import Workspace

RESOURCE_KEY = "ebbtide"
SUCCEEDED = (RunStatus.SUCCESS, RunStatus.PARTIAL_SUCCESS)  # the others fail the asset
# The counts a run reports, in the order Dagster's UI lists them.
COUNTS = (
    "extracted",
    "added",
    "updated",
    "deleted",
    "loaded_new",
    "loaded_updated",
    "loaded_deleted",
    "failed",
)


class EbbtideResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """An ebbtide workspace (a folder holding `ebbtide.yml`, or that file), opened per sync."""

    workspace_path: str = Field(
        description="The workspace: a folder holding ebbtide.yml, or that file."
    )

    def open(self, actor: str | None = None) -> Workspace:
        """The Python API over the workspace as it is now; close it when done."""
        return Workspace.load(self.workspace_path, actor=actor)

    def sync(self, mapping: str, *, actor: str | None = None, full_resync: bool = False) -> RunView:
        """Sync one mapping now; a failed sync is a run with status `failed`, not raised."""
        with self.open(actor) as workspace:
            return workspace.sync(mapping, full_resync=full_resync)

    def run(self, run_id: int) -> RunDetailsView:
        """One run with its failed records grouped by error (`ebbtide runs show`)."""
        with self.open() as workspace:
            return workspace.run(run_id)


def ebbtide_assets(
    workspace_path: str | PathLike[str],
    *,
    mappings: Sequence[str] | None = None,
    key_prefix: Sequence[str] = (),
    group_name: str = "ebbtide",
    deps: Mapping[str, Sequence[dg.AssetKey | str]] | None = None,
    resource_key: str = RESOURCE_KEY,
) -> list[dg.AssetsDefinition]:
    """One asset per mapping (every enabled one, or those named), keyed by the mapping's name.

    Only `ebbtide.yml` is read now (the state store is not opened), to list the mappings: a
    bad workspace raises ConfigErrors here, an unknown name UsageError. Each asset is tagged
    with its model and destination; `deps` maps a model's name to the upstream assets that
    build it (a dbt model, say), and syncs go through the resource bound to `resource_key`.
    """
    config = open_workspace(Path(workspace_path))
    if mappings is None:
        mappings = [name for name, spec in config.spec.mappings.items() if spec.enabled]
    upstream = deps or {}
    return [
        _asset(
            name,
            config.mapping(name),
            [*key_prefix, name],
            group_name,
            upstream.get(config.mapping(name).model, ()),
            resource_key,
        )
        for name in mappings
    ]


def _asset(
    name: str,
    spec: MappingSpec,
    key: list[str],
    group_name: str,
    deps: Sequence[dg.AssetKey | str],
    resource_key: str,
) -> dg.AssetsDefinition:
    @dg.asset(
        key=dg.AssetKey(key),
        group_name=group_name,
        deps=deps,
        description=(
            f"ebbtide mapping {name}: model {spec.model} to {spec.destination}"
            f" ({spec.action}, mode {spec.mode})"
        ),
        tags={"ebbtide/model": spec.model, "ebbtide/destination": spec.destination},
        kinds={"ebbtide"},
        metadata={"model": spec.model, "destination": spec.destination},
        required_resource_keys={resource_key},
    )
    def sync_mapping(context: dg.AssetExecutionContext) -> dg.MaterializeResult:  # type: ignore[type-arg]
        resource: EbbtideResource = getattr(context.resources, resource_key)
        run = resource.sync(name, actor=f"dagster run {context.run.run_id}")
        if run.status not in SUCCEEDED:
            raise run_failure(resource.run(run.id))
        return materialization(run, context.log)

    return sync_mapping


def run_metadata(run: RunView) -> dict[str, dg.MetadataValue]:
    """A run's id, status, counts and duration, as asset metadata."""
    metadata: dict[str, dg.MetadataValue] = {
        "run_id": dg.MetadataValue.int(run.id),
        "status": dg.MetadataValue.text(run.status.value),
        **{name: dg.MetadataValue.int(getattr(run, name)) for name in COUNTS},
    }
    if run.duration_s is not None:
        metadata["duration_s"] = dg.MetadataValue.float(run.duration_s)
    if run.failed_by_class:
        metadata["failed_by_class"] = dg.MetadataValue.json(dict(run.failed_by_class))
    if run.error:
        metadata["error"] = dg.MetadataValue.text(run.error)
    return metadata


def run_failure(run: RunDetailsView) -> dg.Failure:
    """A failed run as the asset's failure: the run's error, or (when every record failed)
    its largest error groups, and how to see more."""
    why = run.error or "; ".join(
        f"{g.count} record(s) {g.error_class}: {g.message}" for g in run.failure_groups[:3]
    )
    return dg.Failure(
        description=f"ebbtide run {run.id} of {run.mapping} {run.status.value}:"
        f" {why or 'no error recorded'} (details: ebbtide runs show {run.id})",
        metadata=run_metadata(run),
    )


def materialization(run: RunView, log: dg.DagsterLogManager) -> dg.MaterializeResult:  # type: ignore[type-arg]
    """The asset's result for a run that succeeded, at least partly."""
    if run.failed:
        log.warning(
            f"ebbtide run {run.id} of {run.mapping}: {run.failed} record(s) failed and are"
            f" retried on the next sync; see `ebbtide runs show {run.id}`"
        )
    return dg.MaterializeResult(metadata=run_metadata(run))
