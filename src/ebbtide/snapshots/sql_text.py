"""Quoting for the DuckDB SQL that ebbtide writes."""

from __future__ import annotations


def quote(identifier: str) -> str:
    """An identifier, whatever characters the model's column names hold."""
    return '"' + identifier.replace('"', '""') + '"'


def literal(text: str) -> str:
    """A string literal."""
    return "'" + text.replace("'", "''") + "'"
