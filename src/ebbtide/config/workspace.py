"""Loading and checking a workspace: every error names the file, the line and the key path."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from ebbtide.config.env import EnvSubstitution
from ebbtide.config.located_yaml import KeyPath, LocatedDocument, dotted, load_located
from ebbtide.config.models import (
    DestinationConfig,
    MappingSpec,
    ModelSpec,
    SourceConfig,
    WorkspaceSpec,
)
from ebbtide.config.redact import Redactor
from ebbtide.engine.mapping import compile_mapping
from ebbtide.errors import ConfigError, ConfigErrors, MappingError, UsageError
from ebbtide.registry import unknown_name

WORKSPACE_FILE = "ebbtide.yml"
STATE_DIR = ".ebbtide"


@dataclass(frozen=True)
class Workspace:
    """A checked workspace: its specs, adapter configs and what must stay secret."""

    root: Path
    file: Path
    spec: WorkspaceSpec
    sources: dict[str, SourceConfig]
    destinations: dict[str, DestinationConfig]
    redact: Redactor

    @property
    def state_dir(self) -> Path:
        return self.root / STATE_DIR

    def mapping(self, name: str) -> MappingSpec:
        if name not in self.spec.mappings:
            raise UsageError(unknown_name("mapping", name, sorted(self.spec.mappings)))
        return self.spec.mappings[name]

    def model(self, name: str) -> ModelSpec:
        return self.spec.models[name]

    def model_query(self, name: str) -> str:
        """The model's SQL, whether written inline, as a table name or in a file."""
        model = self.spec.models[name]
        if model.sql:
            return model.sql
        if model.table:
            return f"SELECT * FROM {model.table}"
        assert model.file is not None
        return (self.root / model.file).read_text(encoding="utf-8")


def find_workspace(start: Path) -> Path:
    """The folder holding `ebbtide.yml`: `start` or its nearest parent."""
    for folder in (start, *start.parents):
        if (folder / WORKSPACE_FILE).is_file():
            return folder
    raise ConfigError(
        f"no {WORKSPACE_FILE} in {start} or its parents: run `ebbtide init` to create one",
        file=str(start / WORKSPACE_FILE),
    )


def load_workspace(root: Path) -> Workspace:
    """Read, substitute, validate and cross-check `ebbtide.yml`, reporting every error."""
    file = root / WORKSPACE_FILE
    env = EnvSubstitution.for_workspace(root)
    doc = load_located(file, env)
    errors = [
        ConfigError(
            f"environment variable {name} is not set (export it or add it to {root / '.env'})",
            file=str(file),
            line=doc.line_of(path),
            path=dotted(path),
        )
        for name, path in env.missing
    ]
    raw = doc.data if doc.data is not None else {}
    if not isinstance(raw, dict):
        raise ConfigErrors(
            [ConfigError("the file must hold a mapping of sections", file=str(file), line=1)]
        )
    spec = _validate(WorkspaceSpec, raw, (), doc, errors)
    if spec is None:
        raise ConfigErrors(errors)
    checker = _Checker(root, doc, spec, errors)
    sources, destinations = checker.adapters()
    checker.references(destinations)
    if errors:
        raise ConfigErrors(errors)
    return Workspace(root, file, spec, sources, destinations, Redactor(env.secrets))


M = Any


def _validate(
    model: type[BaseModel],
    data: Any,
    prefix: KeyPath,
    doc: LocatedDocument,
    errors: list[ConfigError],
) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        for error in exc.errors():
            path = prefix + tuple(error["loc"])
            errors.append(_config_error(model, error, path, doc))
        return None


def _config_error(
    model: type[BaseModel], error: Any, path: KeyPath, doc: LocatedDocument
) -> ConfigError:
    message = error["msg"]
    if error["type"] == "extra_forbidden":
        allowed = _allowed_keys(model, path)
        close = difflib.get_close_matches(str(path[-1]), allowed, n=1)
        message = f"unknown key {path[-1]!r}" + (
            f" (did you mean {close[0]!r}?)" if close else f" (allowed: {', '.join(allowed)})"
        )
    elif error["type"] == "missing":
        message = f"{path[-1]!r} is required"
    elif message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    return ConfigError(message, file=str(doc.file), line=doc.line_of(path), path=dotted(path))


def _allowed_keys(model: type[BaseModel], path: KeyPath) -> list[str]:
    """Field names of the (possibly nested) model that `path[-1]` was found in."""
    section: dict[str, type[BaseModel]] = {"models": ModelSpec, "mappings": MappingSpec}
    for i, part in enumerate(path[:-1]):
        if part in section and len(path) - i == 3:
            return sorted(section[str(part)].model_fields)
    return sorted(model.model_fields)


class _Checker:
    def __init__(
        self, root: Path, doc: LocatedDocument, spec: WorkspaceSpec, errors: list[ConfigError]
    ):
        self.root, self.doc, self.spec, self.errors = root, doc, spec, errors

    def error(self, message: str, path: KeyPath) -> None:
        self.errors.append(
            ConfigError(
                message, file=str(self.doc.file), line=self.doc.line_of(path), path=dotted(path)
            )
        )

    def adapters(self) -> tuple[dict[str, SourceConfig], dict[str, DestinationConfig]]:
        from ebbtide.destinations import DESTINATIONS
        from ebbtide.sources import SOURCES

        sources: dict[str, SourceConfig] = {}
        for name, raw in self.spec.sources.items():
            plugin = self._plugin(SOURCES, raw, ("sources", name))
            if plugin is not None and (
                cfg := _validate(plugin.config, raw, ("sources", name), self.doc, self.errors)
            ):
                sources[name] = cfg
        destinations: dict[str, DestinationConfig] = {}
        for name, raw in self.spec.destinations.items():
            plugin = self._plugin(DESTINATIONS, raw, ("destinations", name))
            if plugin is not None and (
                cfg := _validate(plugin.config, raw, ("destinations", name), self.doc, self.errors)
            ):
                destinations[name] = cfg
        return sources, destinations

    def _plugin(self, registry: Any, raw: Any, path: KeyPath) -> Any:
        if not isinstance(raw, dict) or "type" not in raw:
            self.error(f"needs a type (one of: {', '.join(registry.names())})", path)
            return None
        try:
            return registry.get(str(raw["type"]))
        except KeyError as exc:
            self.error(str(exc.args[0]), path + ("type",))
            return None

    def references(self, destinations: dict[str, DestinationConfig]) -> None:
        from ebbtide.destinations import DESTINATIONS

        for name, model in self.spec.models.items():
            if model.source not in self.spec.sources:
                self.error(
                    unknown_name("source", model.source, sorted(self.spec.sources)),
                    ("models", name, "source"),
                )
            if model.file and not (self.root / model.file).is_file():
                self.error(f"the file {model.file} does not exist", ("models", name, "file"))
        for name, mapping in self.spec.mappings.items():
            path: KeyPath = ("mappings", name)
            if mapping.model not in self.spec.models:
                self.error(
                    unknown_name("model", mapping.model, sorted(self.spec.models)),
                    path + ("model",),
                )
            if mapping.destination not in self.spec.destinations:
                self.error(
                    unknown_name(
                        "destination", mapping.destination, sorted(self.spec.destinations)
                    ),
                    path + ("destination",),
                )
                continue
            config = destinations.get(mapping.destination)
            if config is None:
                continue
            actions = DESTINATIONS.get(config.type).actions
            if mapping.action not in actions:
                self.error(
                    unknown_name("action", mapping.action, sorted(actions)), path + ("action",)
                )
            elif mapping.model in self.spec.models:
                try:
                    compile_mapping(
                        name, mapping, self.spec.models[mapping.model], actions[mapping.action]
                    )
                except MappingError as exc:
                    self.error(str(exc), path + ("fields",))
