"""The soak's model: the harness's `users` table, changed at random between syncs."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

PLANS = ("free", "pro", "team", "enterprise")


@dataclass(frozen=True)
class Change:
    """One trial's change to the model: disjoint keys, so each is one record to send."""

    added: list[int]
    updated: list[int]
    deleted: list[int]

    @property
    def keys(self) -> set[int]:
        return {*self.added, *self.updated, *self.deleted}

    @property
    def size(self) -> int:
        return len(self.added) + len(self.updated) + len(self.deleted)


def change_model(warehouse: Path, rng: random.Random, trial: int, most: int) -> Change:
    """Adds, updates and deletes up to `most` rows each; every update changes the email."""
    with duckdb.connect(str(warehouse)) as con:
        ids = sorted(int(row[0]) for row in con.execute("SELECT id FROM users").fetchall())
        picked = rng.sample(ids, rng.randint(0, most) + rng.randint(1, most))
        cut = rng.randint(0, len(picked))
        change = Change(_new_ids(ids, rng.randint(0, most)), picked[:cut], picked[cut:])
        _apply(con, change, rng, trial)
    return change


def _new_ids(ids: list[int], count: int) -> list[int]:
    start = (ids[-1] if ids else 0) + 1
    return list(range(start, start + count))


def _apply(con: duckdb.DuckDBPyConnection, change: Change, rng: random.Random, trial: int) -> None:
    # One statement per kind: executemany runs a statement per row, slow on DuckDB.
    if change.added:
        con.execute(f"INSERT INTO users {_ROWS}", _columns(change.added, rng, trial))
    if change.updated:
        con.execute(
            f"UPDATE users SET email = u.email, plan = u.plan FROM ({_ROWS}) u"
            " WHERE users.id = u.id",
            _columns(change.updated, rng, trial),
        )
    if change.deleted:
        con.execute("DELETE FROM users WHERE id IN (SELECT unnest(?))", [change.deleted])


_ROWS = "SELECT unnest(?)::BIGINT AS id, unnest(?) AS email, unnest(?) AS plan"


def _columns(keys: list[int], rng: random.Random, trial: int) -> list[list[Any]]:
    emails = [f"user{k}.t{trial}@example.com" for k in keys]
    return [keys, emails, [rng.choice(PLANS) for _ in keys]]


def model_view(warehouse: Path) -> dict[int, dict[str, Any]]:
    """The rows as the mapping sends them (`fields: {email: email, plan: plan}`)."""
    with duckdb.connect(str(warehouse), read_only=True) as con:
        rows = con.execute("SELECT id, email, plan FROM users").fetchall()
    return {int(k): {"email": email, "plan": plan} for k, email, plan in rows}
