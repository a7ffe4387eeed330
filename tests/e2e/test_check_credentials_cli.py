"""`ebbtide validate --check-credentials` against a vendor emulator: the account endpoint is
called with the credential from the environment; a refusal exits 1 naming the setting to fix,
and the credential never appears. A credential written literally in ebbtide.yml is refused."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.e2e.test_cli import ebbtide
from tests.emulators.hubspot import HubSpotEmulator

TOKEN = "pat-na1-check-credentials-not-real-7741"


@pytest.fixture
def emulator() -> Iterator[HubSpotEmulator]:
    with HubSpotEmulator(credential=TOKEN) as running:
        yield running


def workspace(root: Path, url: str, token: str = "${HUBSPOT_TOKEN}") -> Path:
    root.mkdir()
    doc = {
        "sources": {"warehouse": {"type": "duckdb", "path": "warehouse.duckdb"}},
        "destinations": {
            "crm": {"type": "hubspot", "token": token, "base_url": url},
            "archive": {"type": "file", "path": "out.jsonl"},
        },
    }
    (root / "ebbtide.yml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return root


def test_good_credentials_are_confirmed_by_the_account_endpoint(
    tmp_path: Path, emulator: HubSpotEmulator
) -> None:
    root = workspace(tmp_path / "ws", emulator.url)
    done = ebbtide(root, "validate", "--check-credentials", env={"HUBSPOT_TOKEN": TOKEN})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "✓ destination crm (hubspot)" in done.stdout
    assert "- destination archive (file): no credential check" in done.stdout
    assert emulator.requests_to("/account-info/v3/details")  # it did ask the vendor

    as_json = ebbtide(
        root, "validate", "--check-credentials", "--json", env={"HUBSPOT_TOKEN": TOKEN}
    )
    checks = {c["destination"]: c for c in json.loads(as_json.stdout)["credentials"]}
    assert checks["crm"]["ok"] is True and checks["archive"]["ok"] is None


def test_refused_credentials_exit_1_naming_the_setting_never_the_token(
    tmp_path: Path, emulator: HubSpotEmulator
) -> None:
    root = workspace(tmp_path / "ws", emulator.url)
    wrong = "pat-na1-revoked-token-0000"
    done = ebbtide(root, "validate", "--check-credentials", env={"HUBSPOT_TOKEN": wrong})
    assert done.returncode == 1
    assert "✗ destination crm (hubspot)" in done.stdout
    assert "`destinations.crm.token`" in done.stdout
    assert wrong not in done.stdout + done.stderr


def test_a_credential_written_in_the_file_is_refused_with_its_line(
    tmp_path: Path, emulator: HubSpotEmulator
) -> None:
    root = workspace(tmp_path / "ws", emulator.url, token=TOKEN)
    done = ebbtide(root, "validate", "--offline")
    assert done.returncode != 0
    assert "destinations.crm.token" in done.stderr and "${CRM_TOKEN}" in done.stderr
    lines = (root / "ebbtide.yml").read_text().splitlines()
    line = next(n for n, text in enumerate(lines, 1) if text.strip().startswith("token:"))
    assert f"ebbtide.yml:{line}: destinations.crm.token" in done.stderr, done.stderr
    assert TOKEN not in done.stdout + done.stderr
    assert not emulator.seen  # nothing was called
