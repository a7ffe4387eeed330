"""The benchmark's ebbtide workspace: the users model mirrored to a webhook."""

from __future__ import annotations

from pathlib import Path

MAPPING = "users_to_hook"
BATCH_SIZE = 500
CONCURRENCY = 4

WORKSPACE = """\
state: sqlite:///.ebbtide/state.db
sources:
  warehouse: {{type: duckdb, path: warehouse.duckdb}}
models:
  users:
    source: warehouse
    primary_key: id
    table: users
destinations:
  hook:
    type: webhook
    url: "{url}"
    batch_size: {batch_size}
    concurrency: {concurrency}
mappings:
  {mapping}:
    model: users
    destination: hook
    action: upsert
    mode: mirror
    fields:
      email: email
      name: name
      plan: plan
      ltv: ltv
      updated_at: updated_at
"""


def write_workspace(root: Path, url: str) -> Path:
    """Write `ebbtide.yml` in `root`; returns where the warehouse goes, beside it."""
    root.mkdir(parents=True, exist_ok=True)
    text = WORKSPACE.format(
        url=url, batch_size=BATCH_SIZE, concurrency=CONCURRENCY, mapping=MAPPING
    )
    (root / "ebbtide.yml").write_text(text, encoding="utf-8")
    return root / "warehouse.duckdb"
