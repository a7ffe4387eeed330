"""Adapters by name: built-ins load lazily, third-party ones come through entry points."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar

from ebbtide.suggest import did_you_mean

T = TypeVar("T")


@dataclass(frozen=True)
class Registry(Generic[T]):
    """Maps a `type:` name to the object that builds that adapter."""

    kind: str
    group: str
    builtins: dict[str, str]

    def names(self) -> list[str]:
        return sorted(set(self.builtins) | {ep.name for ep in entry_points(group=self.group)})

    def get(self, name: str) -> T:
        """The plugin named `name`; a KeyError says what exists instead."""
        target = self.builtins.get(name)
        if target is not None:
            module, _, attr = target.partition(":")
            plugin: Any = getattr(importlib.import_module(module), attr)
            return plugin  # type: ignore[no-any-return]
        for ep in entry_points(group=self.group):
            if ep.name == name:
                return ep.load()  # type: ignore[no-any-return]
        raise KeyError(unknown_name(self.kind, name, self.names()))


def unknown_name(kind: str, name: str, known: list[str]) -> str:
    """`unknown destination 'crm_hok' (did you mean 'crm_hook'?)`."""
    return f"unknown {kind} {name!r}" + did_you_mean(name, known)
