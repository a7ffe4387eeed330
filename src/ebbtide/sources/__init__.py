"""Sources: warehouse connections that stream model rows as Arrow record batches."""

from ebbtide.ports import SourcePlugin
from ebbtide.registry import Registry

SOURCES: Registry[SourcePlugin] = Registry(  # type: ignore[type-arg]
    kind="source type",
    group="ebbtide.sources",
    builtins={
        "duckdb": "ebbtide.sources.duckdb:PLUGIN",
        "sqlite": "ebbtide.sources.sqlite:PLUGIN",
        "postgres": "ebbtide.sources.postgres:PLUGIN",
        "mysql": "ebbtide.sources.mysql:PLUGIN",
        "files": "ebbtide.sources.files:PLUGIN",
        "sqlalchemy": "ebbtide.sources.sqlalchemy:PLUGIN",
    },
)

BATCH_ROWS = 65_536
