"""`ebbtide init`: a new workspace, optionally with the demo warehouse and mappings."""

from __future__ import annotations

from pathlib import Path

from ebbtide.config.workspace import WORKSPACE_FILE
from ebbtide.errors import EbbtideError

STARTER = """\
# ebbtide workspace: sources, models, destinations and mappings. Keep it in Git;
# secrets come from the environment (or a .env file beside this one) as ${VAR}.
state: sqlite:///.ebbtide/state.db

sources:
  warehouse: {type: duckdb, path: warehouse.duckdb}

models:
  users:
    source: warehouse
    primary_key: id
    file: models/users.sql

destinations:
  archive: {type: file, path: out/users.jsonl}

mappings:
  users_to_archive:
    model: users
    destination: archive
    action: append
    mode: mirror
    fields: {email: email, full_name: name}
    schedule: manual
"""

DEMO = """\
# The ebbtide demo: a sample warehouse synced to a JSONL file and to a local webhook.
# DEMO_HOOK_URL and DEMO_HOOK_TOKEN come from .env (make demo overrides the URL).
state: sqlite:///.ebbtide/state.db

sources:
  warehouse: {type: duckdb, path: warehouse.duckdb}

models:
  users:
    source: warehouse
    primary_key: id
    file: models/users.sql
  orders:
    source: warehouse
    primary_key: order_id
    table: orders

destinations:
  archive: {type: file, path: out/users.jsonl}
  crm_hook:
    type: webhook
    url: "${DEMO_HOOK_URL}"
    headers: {Authorization: "Bearer ${DEMO_HOOK_TOKEN}"}
    batch_size: 200
    concurrency: 4

mappings:
  users_to_archive:
    model: users
    destination: archive
    action: append
    mode: mirror
    fields: {email: email, full_name: name, plan: plan}
  users_to_crm:
    model: users
    destination: crm_hook
    action: upsert
    mode: mirror
    fields:
      email: email
      full_name: name
      plan: plan
      ltv: ltv
      address: {object: address}            # the whole object, as the model has it
      city: address.city                     # one property of it, as a plain field
      source: {value: ebbtide}               # the same static value on every record
      updated_at: updated_at
    schedule: 15m
  orders_to_crm:
    model: orders
    destination: crm_hook
    action: send
    mode: upsert
    fields:
      user_id: user_id
      status: status
      lines:                                 # chosen properties of each item, renamed
        array: items
        properties: {sku: sku, name: product_name, qty: quantity, price: price}
      placed_at: placed_at
    schedule: "0 * * * *"
"""

USERS_SQL = "select id, email, name, plan, ltv, updated_at, address from users\n"
GITIGNORE = ".ebbtide/\n.env\nout/\n"
DEMO_ENV = "DEMO_HOOK_URL=http://127.0.0.1:8787/ingest\nDEMO_HOOK_TOKEN=demo-token-not-a-secret\n"


def init_workspace(directory: Path, *, demo: bool = False) -> list[Path]:
    """Write a new workspace into `directory`; refuses to overwrite an existing one."""
    directory.mkdir(parents=True, exist_ok=True)
    if (directory / WORKSPACE_FILE).exists():
        raise EbbtideError(f"{directory / WORKSPACE_FILE} already exists; nothing was changed")
    files = {
        directory / WORKSPACE_FILE: DEMO if demo else STARTER,
        directory / "models" / "users.sql": USERS_SQL,
        directory / ".gitignore": GITIGNORE,
    }
    if demo:
        files[directory / ".env"] = DEMO_ENV
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    created = list(files)
    if demo:
        from ebbtide.demo.warehouse import build_warehouse

        build_warehouse(directory / "warehouse.duckdb")
        created.append(directory / "warehouse.duckdb")
    return created
