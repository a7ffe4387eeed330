"""Loading and checking a workspace: every error names the file, the line and the key path."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, get_args

from pydantic import BaseModel, Field, ValidationError

from ebbtide.config.alerts import AlertsSpec
from ebbtide.config.env import EnvSubstitution
from ebbtide.config.located_yaml import (
    KeyPath,
    LocatedDocument,
    dotted,
    load_located,
    read_utf8,
)
from ebbtide.config.models import (
    DEFAULT_STATE_URL,
    DestinationConfig,
    JournalsSpec,
    MappingSpec,
    ModelSpec,
    Name,
    SnapshotsSpec,
    SourceConfig,
    Spec,
    WorkspaceSpec,
)
from ebbtide.config.redact import Redactor
from ebbtide.engine.mapping import compile_mapping
from ebbtide.errors import ConfigError, ConfigErrors, MappingError, UsageError
from ebbtide.registry import unknown_name
from ebbtide.suggest import did_you_mean

WORKSPACE_FILE = "ebbtide.yml"
STATE_DIR = ".ebbtide"


@dataclass(frozen=True)
class Workspace:
    """A checked workspace: its specs, adapter configs and what must stay secret."""

    root: Path
    file: Path
    # Resolved `${VAR}` values live in these: kept out of repr so no log ever shows them.
    spec: WorkspaceSpec = field(repr=False)
    sources: dict[str, SourceConfig] = field(repr=False)
    destinations: dict[str, DestinationConfig] = field(repr=False)
    redact: Redactor = field(repr=False)
    line_of: Callable[[KeyPath], int | None] = field(repr=False, default=lambda path: None)

    def located(self, error: MappingError, mapping: str) -> ConfigError:
        """A mapping error found after loading, pointed at its line in the workspace file."""
        path = ("mappings", mapping, *error.path)
        return ConfigError(
            str(error), file=str(self.file), line=self.line_of(path), path=dotted(path)
        )

    def located_model(self, message: str, model: str, key: str) -> ConfigError:
        """An error found by querying a model, pointed at `key` of the model's definition."""
        path = ("models", model, key)
        return ConfigError(message, file=str(self.file), line=self.line_of(path), path=dotted(path))

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
        return read_utf8(self.root / model.file)


def find_workspace(start: Path) -> Path:
    """The folder holding `ebbtide.yml`: `start` or its nearest parent."""
    for folder in (start, *start.parents):
        if (folder / WORKSPACE_FILE).is_file():
            return folder
    raise ConfigError(
        f"no {WORKSPACE_FILE} in {start} or its parents: run `ebbtide init` to create one",
        file=str(start / WORKSPACE_FILE),
    )


def workspace_root(path: Path | None) -> Path:
    """The folder of the workspace at `path`: a folder holding `ebbtide.yml`, or that file.

    Without a path: the current folder or its nearest parent holding `ebbtide.yml`.
    """
    if path is None:
        return find_workspace(Path.cwd()).resolve()
    path = path.expanduser()
    if path.is_file() or path.suffix in (".yml", ".yaml"):
        if path.name != WORKSPACE_FILE:
            raise ConfigError(
                f"a workspace's file is named {WORKSPACE_FILE}: give its folder, or that file",
                file=str(path),
            )
        path = path.parent
    return path.resolve()


def load_workspace(root: Path) -> Workspace:
    """Read, substitute, validate and cross-check `ebbtide.yml`, reporting every error at once."""
    file = root / WORKSPACE_FILE
    env = EnvSubstitution.for_workspace(root)
    doc = load_located(file, env)
    report = _Report(doc, Redactor(env.secrets))
    for name, path in env.missing:
        report.missing_variable(name, path, root / ".env")
    raw = doc.data if doc.data is not None else {}
    if not isinstance(raw, dict):
        report.error("the file must hold a mapping of sections", ())
        raise ConfigErrors(report.errors)
    sections = report.validate(_Sections, raw, ())
    if sections is None:
        raise ConfigErrors(report.errors)
    # Entry by entry, so one bad model does not hide the errors of the others.
    spec = WorkspaceSpec(
        state=sections.state,
        journals=sections.journals,
        snapshots=sections.snapshots,
        alerts=sections.alerts,
        sources=sections.sources,
        destinations=sections.destinations,
        models=report.validate_each(ModelSpec, sections.models, "models"),
        mappings=report.validate_each(MappingSpec, sections.mappings, "mappings"),
    )
    checker = _Checker(root, report, spec, sections)
    sources, destinations = checker.adapters()
    checker.references(destinations)
    if report.errors:
        raise ConfigErrors(report.errors)
    return Workspace(root, file, spec, sources, destinations, report.redact, doc.line_of)


class _Sections(Spec):
    """The top level of the file; entries are validated one by one afterwards."""

    state: str = DEFAULT_STATE_URL
    journals: JournalsSpec = Field(default_factory=JournalsSpec)
    snapshots: SnapshotsSpec | None = None
    alerts: AlertsSpec = Field(default_factory=AlertsSpec)
    sources: dict[Name, dict[str, Any]] = Field(default_factory=dict)
    models: dict[Name, dict[str, Any]] = Field(default_factory=dict)
    destinations: dict[Name, dict[str, Any]] = Field(default_factory=dict)
    mappings: dict[Name, dict[str, Any]] = Field(default_factory=dict)


SpecT = TypeVar("SpecT", bound=BaseModel)


class _Report:
    """Collects errors with file, line and key path, secrets masked."""

    def __init__(self, doc: LocatedDocument, redact: Redactor) -> None:
        self.doc, self.redact = doc, redact
        self.errors: list[ConfigError] = []
        self._unset: set[KeyPath] = set()

    def error(self, message: str, path: KeyPath) -> None:
        if any(path[: len(unset)] == unset for unset in self._unset):
            return  # already reported: the variable it needs is not set
        self.errors.append(
            ConfigError(
                self.redact(message),
                file=str(self.doc.file),
                line=self.doc.line_of(path),
                path=dotted(path),
            )
        )

    def missing_variable(self, name: str, path: KeyPath, dotenv: Path) -> None:
        self.error(
            f"environment variable {name} is not set (export it or add it to {dotenv})", path
        )
        self._unset.add(path)

    def validate(self, model: type[SpecT], data: Any, prefix: KeyPath) -> SpecT | None:
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            for error in exc.errors():
                # A bad name is reported at the name itself, not at pydantic's `[key]` marker.
                loc = tuple(part for part in error["loc"] if part != "[key]")
                self.error(_message(model, error, loc), prefix + loc)
            return None

    def validate_each(
        self, model: type[SpecT], entries: dict[str, Any], section: str
    ) -> dict[str, SpecT]:
        valid = {}
        for name, raw in entries.items():
            checked = self.validate(model, raw, (section, name))
            if checked is not None:
                valid[name] = checked
        return valid


def _message(model: type[BaseModel], error: Any, loc: KeyPath) -> str:
    message = str(error["msg"])
    if error["type"] == "extra_forbidden":
        allowed = sorted(_model_at(model, loc[:-1]).model_fields)
        return f"unknown key {loc[-1]!r}" + did_you_mean(str(loc[-1]), allowed, "allowed")
    if error["type"] == "missing":
        return f"{loc[-1]!r} is required"
    return message.removeprefix("Value error, ")


def _model_at(model: type[BaseModel], loc: KeyPath) -> type[BaseModel]:
    """The nested model that `loc` points into (`retry` of a mapping → RetrySpec)."""
    current = model
    for part in loc:
        info = current.model_fields.get(str(part))
        if info is None:
            continue  # a dict key or a list index: stay in the model that holds the dict
        nested = [
            t
            for t in (info.annotation, *get_args(info.annotation))
            if isinstance(t, type) and issubclass(t, BaseModel)
        ]
        if nested:
            current = nested[0]
    return current


class _Checker:
    def __init__(self, root: Path, report: _Report, spec: WorkspaceSpec, sections: _Sections):
        self.root, self.report, self.spec, self.sections = root, report, spec, sections

    def error(self, message: str, path: KeyPath) -> None:
        self.report.error(message, path)

    def adapters(self) -> tuple[dict[str, SourceConfig], dict[str, DestinationConfig]]:
        from ebbtide.destinations import DESTINATIONS
        from ebbtide.sources import SOURCES

        sources: dict[str, SourceConfig] = {}
        for name, raw in self.spec.sources.items():
            plugin = self._plugin(SOURCES, raw, ("sources", name))
            if plugin is not None:
                config = self.report.validate(plugin.config, raw, ("sources", name))
                if config is not None:
                    sources[name] = config
        destinations: dict[str, DestinationConfig] = {}
        for name, raw in self.spec.destinations.items():
            plugin = self._plugin(DESTINATIONS, raw, ("destinations", name))
            if plugin is not None:
                config = self.report.validate(plugin.config, raw, ("destinations", name))
                if config is not None:
                    destinations[name] = config
                    self._credentials(name, config)
        return sources, destinations

    def _credentials(self, name: str, config: DestinationConfig) -> None:
        """A credential setting reads `${VAR}`: a key written in ebbtide.yml would end up in
        version control. Any literal one is still masked like the environment's secrets."""
        known = self.report.redact.secrets
        for setting in type(config).secret_settings:
            value = getattr(config, setting, None)
            if isinstance(value, str) and value and value not in known:
                self.error(
                    f"{setting} is a credential: read it from the environment, as"
                    f" `{setting}: ${{{name.upper()}_{setting.upper()}}}` (or from .env beside"
                    " ebbtide.yml), so that it stays out of the file and version control",
                    ("destinations", name, setting),
                )
        self.report.redact = self.report.redact.with_values(config.secret_values())

    def _plugin(self, registry: Any, raw: Any, path: KeyPath) -> Any:
        if not isinstance(raw, dict) or "type" not in raw:
            self.error(f"needs a type (one of: {', '.join(registry.names())})", path)
            return None
        try:
            return registry.get(str(raw["type"]))
        except KeyError as exc:
            self.error(str(exc.args[0]), path + ("type",))
            return None

    def _reference(self, kind: str, name: str, section: dict[str, Any], path: KeyPath) -> bool:
        """True when `name` exists and is valid; an unknown name is an error, an invalid one
        was reported where it is defined."""
        if name not in section:
            self.error(unknown_name(kind, name, sorted(section)), path)
            return False
        return True

    def references(self, destinations: dict[str, DestinationConfig]) -> None:
        from ebbtide.destinations import DESTINATIONS

        for name, model in self.spec.models.items():
            self._reference(
                "source", model.source, self.sections.sources, ("models", name, "source")
            )
            if model.file and not (self.root / model.file).is_file():
                self.error(f"the file {model.file} does not exist", ("models", name, "file"))
        for i, subscription in enumerate(self.spec.alerts.subscriptions):
            for j, mapping_name in enumerate(subscription.mappings or []):
                self._reference(
                    "mapping",
                    mapping_name,
                    self.sections.mappings,
                    ("alerts", "subscriptions", i, "mappings", j),
                )
        for name, mapping in self.spec.mappings.items():
            path: KeyPath = ("mappings", name)
            has_model = self._reference(
                "model", mapping.model, self.sections.models, path + ("model",)
            )
            has_destination = self._reference(
                "destination",
                mapping.destination,
                self.sections.destinations,
                path + ("destination",),
            )
            config = destinations.get(mapping.destination)
            if not has_destination or config is None:
                continue
            plugin = DESTINATIONS.get(config.type)
            if mapping.action not in plugin.actions:
                self.error(
                    unknown_name("action", mapping.action, sorted(plugin.actions)),
                    path + ("action",),
                )
            elif has_model and mapping.model in self.spec.models:
                action = plugin.action(config, mapping.action)
                try:
                    compile_mapping(name, mapping, self.spec.models[mapping.model], action)
                except MappingError as exc:
                    self.error(str(exc), path + (exc.path or ("fields",)))
