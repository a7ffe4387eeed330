"""YAML loading that remembers where every value stood, so errors can name file and line."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ebbtide.errors import ConfigError

KeyPath = tuple[str | int, ...]


@dataclass
class LocatedDocument:
    """A parsed YAML document and the line (1-based) of each key path in it."""

    file: Path
    data: Any
    lines: dict[KeyPath, int] = field(default_factory=dict)

    def line_of(self, path: KeyPath) -> int | None:
        """The line of `path`, or of its nearest ancestor that has one."""
        for end in range(len(path), -1, -1):
            line = self.lines.get(tuple(path[:end]))
            if line is not None:
                return line
        return None


def load_located(file: Path, substitute: Callable[[str, KeyPath], str]) -> LocatedDocument:
    """Parse `file`, passing every string scalar through `substitute` (for `${VAR}`)."""
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the file: {exc.strerror}", file=str(file)) from exc
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else None
        raise ConfigError(f"not valid YAML: {exc.problem}", file=str(file), line=line) from exc
    doc = LocatedDocument(file=file, data=None)
    if root is not None:
        doc.data = _build(root, (), doc, substitute)
    return doc


def _build(
    node: yaml.Node,
    path: KeyPath,
    doc: LocatedDocument,
    substitute: Callable[[str, KeyPath], str],
) -> Any:
    doc.lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = str(_scalar(key_node))
            if key in result:
                raise ConfigError(
                    f"the key {key!r} appears twice",
                    file=str(doc.file),
                    line=key_node.start_mark.line + 1,
                    path=dotted(path + (key,)),
                )
            doc.lines[path + (key,)] = key_node.start_mark.line + 1
            result[key] = _build(value_node, path + (key,), doc, substitute)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_build(item, path + (i,), doc, substitute) for i, item in enumerate(node.value)]
    value = _scalar(node)
    return substitute(value, path) if isinstance(value, str) else value


def _scalar(node: yaml.Node) -> Any:
    return yaml.SafeLoader(stream="").construct_object(node, deep=True)


def dotted(path: KeyPath) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out
