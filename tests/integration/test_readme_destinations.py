"""The README's example of one mapping per destination is a valid workspace: every setting,
action and field in it is checked against the destinations' own declarations."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from ebbtide.config.workspace import load_workspace
from ebbtide.services.sync import SyncService
from ebbtide.services.workspace_services import check_mappings

README = Path(__file__).resolve().parents[2] / "README.md"
VARIABLES = (
    "SEGMENT_WRITE_KEY",
    "HUBSPOT_TOKEN",
    "SF_TOKEN",
    "BRAZE_API_KEY",
    "CIO_SITE_ID",
    "CIO_API_KEY",
    "MIXPANEL_TOKEN",
    "MIXPANEL_SECRET",
    "AMPLITUDE_API_KEY",
)


def example() -> dict[str, object]:
    section = README.read_text().split("## Destinations\n", 1)[1].split("\n## ", 1)[0]
    [block] = re.findall(r"```yaml\n(.*?)```", section, re.S)
    loaded = yaml.safe_load(block)
    assert isinstance(loaded, dict)
    return loaded


def test_the_readme_example_has_one_mapping_per_vendor_destination() -> None:
    doc = example()
    destinations = doc["destinations"]
    assert isinstance(destinations, dict) and isinstance(doc["mappings"], dict)
    types = {d["type"] for d in destinations.values()}
    assert types == {
        "segment",
        "hubspot",
        "salesforce",
        "braze",
        "customerio",
        "mixpanel",
        "amplitude",
    }
    used = {m["destination"] for m in doc["mappings"].values()}
    assert used == set(destinations)


def test_the_readme_example_validates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in VARIABLES:
        monkeypatch.setenv(name, f"{name.lower()}-value")
    doc = {
        "sources": {"warehouse": {"type": "duckdb", "path": "warehouse.duckdb"}},
        "models": {
            name: {"source": "warehouse", "primary_key": "id", "sql": "select 1 as id"}
            for name in ("users", "contacts", "orders")
        },
        **example(),
    }
    (tmp_path / "ebbtide.yml").write_text(yaml.safe_dump(doc, sort_keys=False))
    service = SyncService(load_workspace(tmp_path))
    try:
        check_mappings(service, offline=True)  # each mapping against its action's fields
    finally:
        service.state.dispose()
