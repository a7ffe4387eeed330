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
    root = _compose(file, read_utf8(file))
    doc = LocatedDocument(file=file, data=None)
    if root is not None:
        doc.data = _build(root, (), doc, substitute)
    return doc


def read_utf8(file: Path) -> str:
    """The file as UTF-8 text (a byte order mark is dropped), or where it stops being UTF-8."""
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the file: {exc.strerror}", file=str(file)) from exc
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ConfigError(
            f"the file is not UTF-8 text: byte 0x{data[exc.start]:02X} at line {line}, column"
            f" {column} (byte offset {exc.start}) cannot be decoded; save the file as UTF-8",
            file=str(file),
            line=line,
        ) from None


def _compose(file: Path, text: str) -> yaml.Node | None:
    """The document's node graph; aliases of collections are refused before any expansion."""
    try:
        return yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        raise ConfigError(f"not valid YAML: {exc.problem}", file=str(file), line=line) from None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        raise ConfigError(
            f"not valid YAML: the control character {_code_point(exc.character)} is not allowed"
            " in YAML",
            file=str(file),
            line=line,
        ) from None
    except RecursionError:
        raise ConfigError(
            "not valid YAML for ebbtide: values are nested too deeply", file=str(file)
        ) from None


def _code_point(character: int | str) -> str:
    return f"U+{character if isinstance(character, int) else ord(character):04X}"


class _Loader(yaml.SafeLoader):
    """Refuses an alias (`*name`) of a mapping or a list.

    Each such alias copies a whole collection, and aliases of aliases multiply: a file of a few
    lines can stand for billions of values (the "billion laughs"). The workspace does not need
    them, and an alias of a single value (text, number) stays allowed.
    """

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            if isinstance(self.anchors.get(event.anchor), yaml.CollectionNode):
                raise yaml.composer.ComposerError(
                    None,
                    None,
                    f"the alias *{event.anchor} repeats a whole mapping or list, which ebbtide"
                    " does not expand (anchors of collections can blow a small file up to"
                    " billions of values): write the values out where they are needed",
                    event.start_mark,
                )
        return super().compose_node(parent, index)


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
            key = str(_scalar(key_node, doc.file))
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
    value = _scalar(node, doc.file)
    return substitute(value, path) if isinstance(value, str) else value


def _scalar(node: yaml.Node, file: Path | None = None) -> Any:
    try:
        return yaml.SafeLoader(stream="").construct_object(node, deep=True)
    except (yaml.YAMLError, ValueError, TypeError) as exc:
        # A tag ebbtide does not read (`!!python/…`), or a value its tag or form does not
        # fit: `2021-02-30` reads as a date, `!!int abc`.
        problem = exc.problem if isinstance(exc, yaml.MarkedYAMLError) else str(exc)
        raise ConfigError(
            f"the value {node.value!r} cannot be read: {problem}; quote it to keep it as text",
            file=str(file) if file else None,
            line=node.start_mark.line + 1,
        ) from None


def dotted(path: KeyPath) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out
