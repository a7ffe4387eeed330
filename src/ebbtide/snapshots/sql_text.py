"""Quoting for the DuckDB SQL that ebbtide writes, and the model's SQL made ready to wrap."""

from __future__ import annotations


def quote(identifier: str) -> str:
    """An identifier, whatever characters the model's column names hold."""
    return '"' + identifier.replace('"', '""') + '"'


def literal(text: str) -> str:
    """A string literal."""
    return "'" + text.replace("'", "''") + "'"


def bare_query(query: str) -> str:
    """A model's SQL without its closing semicolon, to be wrapped as a subquery."""
    return query.strip().rstrip(";").strip()
