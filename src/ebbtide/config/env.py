"""`${VAR}` substitution from the environment and a `.env` file, remembering what is secret."""

from __future__ import annotations

import io
import os
import re
from collections.abc import Mapping
from pathlib import Path

from dotenv import dotenv_values

from ebbtide.config.located_yaml import KeyPath, read_utf8

_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class EnvSubstitution:
    """Replaces `${VAR}` in string values; every substituted value is treated as a secret."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ
        self.secrets: set[str] = set()
        self.missing: list[tuple[str, KeyPath]] = []

    @classmethod
    def for_workspace(cls, root: Path) -> EnvSubstitution:
        """The process environment over the values of `.env` beside the workspace file."""
        dotenv_file = root / ".env"
        text = read_utf8(dotenv_file) if dotenv_file.is_file() else ""
        from_file = dotenv_values(stream=io.StringIO(text))
        merged = {k: v for k, v in from_file.items() if v is not None}
        merged.update(os.environ)
        return cls(merged)

    def __call__(self, value: str, path: KeyPath) -> str:
        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in self.environ:
                self.missing.append((name, path))
                return ""
            resolved = self.environ[name]
            if resolved:
                self.secrets.add(resolved)
            return resolved

        return _VARIABLE.sub(replace, value)
