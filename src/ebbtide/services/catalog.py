"""The workspace's sources, models and destinations as the API shows them: names, types and
how they connect, never a setting that could hold a credential."""

from __future__ import annotations

from ebbtide.config.workspace import Workspace
from ebbtide.services.views import DestinationView, ModelView, SourceView


class Catalog:
    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace

    def sources(self) -> list[SourceView]:
        models = self.workspace.spec.models
        return [
            SourceView(
                name=name,
                type=config.type,
                models=sorted(m for m, spec in models.items() if spec.source == name),
            )
            for name, config in sorted(self.workspace.sources.items())
        ]

    def models(self) -> list[ModelView]:
        mappings = self.workspace.spec.mappings
        return [
            ModelView(
                name=name,
                source=spec.source,
                primary_key=list(spec.primary_key),
                query="table" if spec.table else "sql" if spec.sql else "file",
                description=spec.description,
                mappings=sorted(m for m, ms in mappings.items() if ms.model == name),
            )
            for name, spec in sorted(self.workspace.spec.models.items())
        ]

    def destinations(self) -> list[DestinationView]:
        mappings = self.workspace.spec.mappings
        return [
            DestinationView(
                name=name,
                type=config.type,
                batch_size=config.batch_size,
                concurrency=config.concurrency,
                mappings=sorted(m for m, ms in mappings.items() if ms.destination == name),
            )
            for name, config in sorted(self.workspace.destinations.items())
        ]
