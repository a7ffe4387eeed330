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
from collections.abc import Sequence
from os import PathLike

import dagster as dg

from ebbtide.services.views import MappingView, RunView
from ebbtide.values import RunStatus
from ebbtide.workspace_api import Workspace

RESOURCE_KEY = "ebbtide"
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

    workspace_path: str

    def open(self, actor: str | None = None) -> Workspace:
        """The Python API over the workspace as it is now; close it when done."""
        return Workspace.load(self.workspace_path, actor=actor)

    def sync(self, mapping: str, *, actor: str | None = None, full_resync: bool = False) -> RunView:
        """Sync one mapping now; a failed sync is a run with status `failed`, not raised."""
        with self.open(actor) as workspace:
            return workspace.sync(mapping, full_resync=full_resync)


def ebbtide_assets(
    workspace_path: str | PathLike[str],
    *,
    mappings: Sequence[str] | None = None,
    key_prefix: Sequence[str] = (),
    group_name: str = "ebbtide",
    resource_key: str = RESOURCE_KEY,
) -> list[dg.AssetsDefinition]:
    """One asset per mapping (every enabled one, or those named), keyed by the mapping's name.

    The workspace is read now, to list its mappings: a bad one raises ConfigErrors here.
    Each asset is tagged with its model and destination, and syncs through the resource
    bound to `resource_key`.
    """
    with Workspace.load(workspace_path) as workspace:
        found = {view.name: view for view in workspace.mappings()}
    names = list(mappings) if mappings is not None else [n for n, v in found.items() if v.enabled]
    for name in names:
        if name not in found:
            with Workspace.load(workspace_path) as workspace:
                workspace.mapping(name)  # the unknown name, said as the CLI says it
    return [_asset(found[n], list(key_prefix), group_name, resource_key) for n in names]


def _asset(
    mapping: MappingView, key_prefix: list[str], group_name: str, resource_key: str
) -> dg.AssetsDefinition:
    @dg.asset(
        key=dg.AssetKey([*key_prefix, mapping.name]),
        group_name=group_name,
        description=(
            f"ebbtide mapping {mapping.name}: model {mapping.model} to"
            f" {mapping.destination} ({mapping.action}, mode {mapping.mode})"
        ),
        tags={"ebbtide/model": mapping.model, "ebbtide/destination": mapping.destination},
        kinds={"ebbtide"},
        metadata={"model": mapping.model, "destination": mapping.destination},
        required_resource_keys={resource_key},
    )
    def sync_mapping(context: dg.AssetExecutionContext) -> dg.MaterializeResult:  # type: ignore[type-arg]
        resource: EbbtideResource = getattr(context.resources, resource_key)
        run = resource.sync(mapping.name, actor=f"dagster run {context.run.run_id}")
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


def materialization(run: RunView, log: dg.DagsterLogManager) -> dg.MaterializeResult:  # type: ignore[type-arg]
    """The asset's result for a finished run: Failure unless it (at least partly) succeeded."""
    metadata = run_metadata(run)
    if run.status not in (RunStatus.SUCCESS, RunStatus.PARTIAL_SUCCESS):
        raise dg.Failure(
            description=f"ebbtide run {run.id} of {run.mapping} {run.status.value}: {run.error}",
            metadata=metadata,
        )
    if run.failed:
        log.warning(
            f"ebbtide run {run.id} of {run.mapping}: {run.failed} record(s) failed and are"
            f" retried on the next sync; see `ebbtide runs show {run.id}`"
        )
    return dg.MaterializeResult(metadata=metadata)
