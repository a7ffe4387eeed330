"""The workspace's sources, models and destinations as the API shows them: names, types and
how they connect, never a setting that could hold a credential."""

from __future__ import annotations

from ebbtide.config.models import FieldSource, PropertySource
from ebbtide.config.workspace import Workspace
from ebbtide.services.views import DestinationView, MappingFieldView, ModelView, SourceView


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

    def mapping_fields(self, name: str) -> list[MappingFieldView]:
        """A mapping's fields as configured, in the order written; a static value of a
        sensitive field is left out (it could be a credential)."""
        spec = self.workspace.mapping(name)
        hidden = set(spec.sensitive)
        return [
            _field_view(field, source, field in hidden) for field, source in spec.fields.items()
        ]


def _field_view(name: str, source: FieldSource, sensitive: bool) -> MappingFieldView:
    children = [
        _property_view(prop, given, sensitive) for prop, given in (source.properties or {}).items()
    ]
    return MappingFieldView(
        name=name,
        kind=source.kind,
        source=source.reference,
        value=None if sensitive else source.value,
        sensitive=sensitive,
        skip_nulls=source.skip_nulls,
        properties=children,
    )


def _property_view(name: str, given: PropertySource, sensitive: bool) -> MappingFieldView:
    kind = "path" if given.path is not None else "column" if given.column is not None else "value"
    return MappingFieldView(
        name=name,
        kind=kind,
        source=given.path if given.path is not None else given.column,
        value=None if sensitive else given.value,
        sensitive=sensitive,
    )
