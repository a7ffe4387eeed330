"""`ebbtide validate` on mappings of objects, arrays and dotted paths (issue 4), as a person runs
it: a subprocess on a workspace whose webhook destination declares the fields it accepts.

The model is a real DuckDB warehouse with STRUCT and LIST<STRUCT> columns; validate queries it
for no rows to check paths and types, unless `--offline`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

WORKSPACE = """\
sources:
  warehouse: {type: duckdb, path: warehouse.duckdb}
models:
  orders:
    source: warehouse
    primary_key: id
    sql: SELECT id, customer, product, products FROM orders
destinations:
  hook:
    type: webhook
    url: http://127.0.0.1:9/ingest
    fields:
      - {name: email, type: string, required: true}
      - name: item
        type: object
        properties: [{name: title, required: true}, {name: country}, {name: buyer}]
      - name: lines
        type: array
        properties: [{name: name}, {name: time}]
      - {name: city, type: string}
      - {name: total, type: number}
      - {name: tier}
mappings:
  orders_to_hook:
    model: orders
    destination: hook
    action: upsert
    fields:
      email: customer
      item:
        object: product
        properties: {title: name, country: brand.country, buyer: {column: customer}}
      lines:
        array: products
        properties: {name: productName, time: purchaseTime}
      city: product.brand.country
      total: {value: 10}
      tier: {value: pro}
"""
ORDERS = """
CREATE TABLE orders AS SELECT
    1::BIGINT AS id, 'ada@example.com' AS customer,
    {'name': 'jacket', 'brand': {'name': 'Acme', 'country': 'SE'}} AS product,
    [{'productName': 'jacket', 'purchaseTime': '2021-12-17 23:43:47.102'}] AS products
"""


def ebbtide(workspace: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ebbtide", "-w", str(workspace), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "400"},
    )


def said(done: subprocess.CompletedProcess[str]) -> str:
    """stderr on one line: a long message may be wrapped by the terminal renderer."""
    assert "Traceback" not in done.stderr
    return " ".join(done.stderr.split())


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    root.mkdir()
    with duckdb.connect(str(root / "warehouse.duckdb")) as con:
        con.execute(ORDERS)
    (root / "ebbtide.yml").write_text(WORKSPACE)
    return root


def edit(workspace: Path, old: str, new: str) -> int:
    """Replace `old` by `new` in ebbtide.yml; the line `new` starts on."""
    config = workspace / "ebbtide.yml"
    text = config.read_text()
    assert text.count(old) == 1, old
    config.write_text(text.replace(old, new))
    return text[: text.index(old)].count("\n") + 1


def line_of(workspace: Path, path: str) -> int:
    """The line of the last key of a dotted path (`…fields:` or `…properties:`)."""
    key = path.rstrip(":").split(".")[-1]
    lines = (workspace / "ebbtide.yml").read_text().splitlines()
    mappings = lines.index("mappings:")
    return next(
        i for i, text in enumerate(lines, 1) if i > mappings and text.strip().startswith(f"{key}:")
    )


def test_validate_accepts_objects_arrays_paths_and_values_that_fit(workspace: Path) -> None:
    done = ebbtide(workspace, "validate", "--json")

    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert (summary["ok"], summary["mappings"]) == (True, 1)
    assert Path(summary["file"]) == workspace / "ebbtide.yml"


def test_validate_names_a_property_the_destination_does_not_accept_and_the_close_one(
    workspace: Path,
) -> None:
    line = edit(workspace, "{title: name, country:", "{title: name, cuntry:")

    done = ebbtide(workspace, "validate")

    assert done.returncode == 2
    message = said(done)
    assert f"ebbtide.yml:{line}: mappings.orders_to_hook.fields.item.properties.cuntry:" in message
    assert "mapping 'orders_to_hook': field 'item'" in message
    assert "accepts no property 'cuntry'" in message
    assert "did you mean 'country'?" in message


def test_validate_catches_a_path_to_a_property_the_struct_lacks_but_offline_does_not(
    workspace: Path,
) -> None:
    line = edit(workspace, "city: product.brand.country", "city: product.brand.cuntry")

    done = ebbtide(workspace, "validate")
    offline = ebbtide(workspace, "validate", "--offline")

    assert done.returncode == 2
    message = said(done)
    assert f"ebbtide.yml:{line}: mappings.orders_to_hook.fields.city:" in message
    assert "field 'city': product.brand has no property 'cuntry'" in message
    assert "did you mean 'country'?" in message
    assert offline.returncode == 0, offline.stderr  # it does not query the model


@pytest.mark.parametrize(
    ("old", "new", "path", "says"),
    [
        pytest.param(
            "      email: customer\n",
            "",
            "mappings.orders_to_hook.fields:",
            "action 'upsert' requires field(s) email",
            id="required-field",
        ),
        pytest.param(
            "{title: name, country:",
            "{country:",
            "mappings.orders_to_hook.fields.item.properties:",
            "field 'item': the destination requires property(ies) title",
            id="required-property",
        ),
    ],
)
def test_validate_refuses_a_mapping_that_leaves_a_required_field_unmapped(
    workspace: Path, old: str, new: str, path: str, says: str
) -> None:
    edit(workspace, old, new)

    done = ebbtide(workspace, "validate")

    assert done.returncode == 2
    message = said(done)
    assert f"ebbtide.yml:{line_of(workspace, path)}: {path}" in message
    assert says in message


def test_validate_refuses_a_struct_column_mapped_to_a_number_field(workspace: Path) -> None:
    line = edit(workspace, "total: {value: 10}", "total: product")

    done = ebbtide(workspace, "validate")

    assert done.returncode == 2
    message = said(done)
    assert f"ebbtide.yml:{line}: mappings.orders_to_hook.fields.total:" in message
    assert "field 'total': product is a struct, which cannot be sent as a number" in message


def test_validate_names_file_and_line_of_a_column_the_model_lacks(workspace: Path) -> None:
    line = edit(workspace, "total: {value: 10}", "total: totl")

    done = ebbtide(workspace, "validate")

    message = said(done)
    assert "model 'orders' has no column 'totl'" in message
    assert done.returncode == 2
    assert f"ebbtide.yml:{line}: mappings.orders_to_hook.fields.total:" in message
