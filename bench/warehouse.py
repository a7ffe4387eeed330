"""The benchmark warehouse: one `users` table from a single CREATE TABLE AS, cached by size."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb

# Bump when the table's shape changes, so a cached warehouse of the old shape is not reused.
SHAPE_VERSION = 1

USERS = """
CREATE TABLE users AS
SELECT i::BIGINT AS id,
       'user' || i || '@example.com' AS email,
       'User ' || i AS name,
       ['free', 'starter', 'pro', 'enterprise'][1 + i % 4] AS plan,
       ((i * 37) % 1000000 / 100)::DECIMAL(12, 2) AS ltv,
       TIMESTAMP '2026-01-01' + to_seconds(i) AS updated_at
FROM range({rows}) t(i)
"""

# 1% of rows updated, another 0.5% deleted: disjoint, so 1.5% of the model changes.
UPDATE_1PCT = (
    "UPDATE users SET ltv = ltv + 1, updated_at = updated_at + INTERVAL 1 DAY WHERE id % 100 = 0"
)
DELETE_HALF_PCT = "DELETE FROM users WHERE id % 200 = 1"


def cached_warehouse(cache_dir: Path, rows: int) -> Path:
    """A pristine warehouse of `rows` users, built once and kept in `cache_dir`."""
    path = cache_dir / f"users-v{SHAPE_VERSION}-{rows}.duckdb"
    if path.is_file():
        return path
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    with duckdb.connect(str(partial)) as con:
        con.execute(USERS.format(rows=rows))
    partial.rename(path)  # a build cut short never passes for a finished one
    return path


def copy_warehouse(source: Path, target: Path) -> None:
    """A private copy for one size's scenarios, which change it."""
    shutil.copyfile(source, target)


def change_warehouse(path: Path) -> tuple[int, int]:
    """Update 1% and delete 0.5% of the users; returns (updated, deleted)."""
    with duckdb.connect(str(path)) as con:
        updated = con.execute(UPDATE_1PCT).fetchone()
        deleted = con.execute(DELETE_HALF_PCT).fetchone()
    return int(updated[0]) if updated else 0, int(deleted[0]) if deleted else 0
