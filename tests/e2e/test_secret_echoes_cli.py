"""A destination that echoes what it was sent: nothing secret or sensitive comes out of ebbtide.

The hostile receiver repeats each record's data and every request header (Basic credentials
from the URL's password, a Bearer token) raw, JSON-escaped, percent-encoded and in base64, in
per-record refusals and in whole-batch 400 and 401 bodies. Everything ebbtide keeps or shows
is then searched for any form of them: every column of every row of the SQLite state store,
the output of `runs show`, `runs failed`, `records failed`, `sync plan` (with and without
`--json`), the alerts log, and the Slack and webhook alerts received on 127.0.0.1.
"""

from __future__ import annotations

import base64
import json
import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pytest

from tests.hostile_receiver import HostileReceiver, Seen
from tests.integration.alert_servers import HttpEndpoints
from tests.integration.workspace_kit import warehouse_sql, write_workspace

PASSWORD = "pw-Échappé.9f8e7d"  # in the URL: the client sends it as `Basic base64(...)`
TOKEN = "tok-bearer-5c4b3a29"
SLACK_PATH = "/services/T1/B2/slack-path-secret-0a1b2c"
ROWS = 6
_HEX = re.compile(r"%[0-9A-F]{2}")
_BASE64_WORD = re.compile(r"[A-Za-z0-9+/_-]{8,}=*")
# Sensitive values with characters every encoding changes: non-ASCII, '+', '/', '@'.
EMAIL_SQL = "'usér' || i || '+tag/x@example.com'"


def email(i: int) -> str:
    return f"usér{i}+tag/x@example.com"


def forms(secret: str) -> set[str]:
    """How the receiver, or any other, may have written it back."""
    encoded = {
        secret,
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        quote(secret, safe=""),
        quote(secret),
        quote_plus(secret),
        base64.b64encode(secret.encode()).decode().rstrip("="),
        base64.urlsafe_b64encode(secret.encode()).decode().rstrip("="),
    }
    return encoded | {_HEX.sub(lambda m: m[0].lower(), e) for e in encoded}


def decoded_leaks(text: str) -> list[str]:
    """Secrets inside base64 words of `text`, whatever the word's alignment."""
    basic = base64.b64encode(f"etl:{PASSWORD}".encode("latin-1")).decode()
    secrets = [PASSWORD, TOKEN, basic, *(email(i) for i in range(1, ROWS + 1))]
    found = set()
    for word in _BASE64_WORD.findall(text):
        word = word.replace("-", "+").replace("_", "/").rstrip("=")
        for shift in range(4):
            part = word[shift:]
            part = part[: len(part) - len(part) % 4]
            decoded = base64.b64decode(part).decode("utf-8", "replace")
            found |= {s for s in secrets if s in decoded or quote(s, safe="") in decoded}
    return sorted(found)


def forbidden() -> set[str]:
    basic = base64.b64encode(f"etl:{PASSWORD}".encode("latin-1")).decode()
    values = [PASSWORD, TOKEN, basic, SLACK_PATH, *(email(i) for i in range(1, ROWS + 1))]
    return {f for value in values for f in forms(value)}


def leaks(text: str) -> list[str]:
    return sorted(f for f in forbidden() if f in text) + decoded_leaks(text)


@dataclass
class Setup:
    root: Path
    env: dict[str, str]
    receiver: HostileReceiver
    endpoints: HttpEndpoints

    def cli(self, *args: str, codes: tuple[int, ...] = (0, 1, 3)) -> str:
        done = self.run(*args)
        assert done.returncode in codes, done.stdout + done.stderr
        return done.stdout + done.stderr

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "ebbtide", "-w", str(self.root), *args],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "COLUMNS": "300", **self.env},
        )

    def sync(self, name: str) -> dict[str, Any]:
        done = self.run("sync", "run", name, "--json")
        [run] = json.loads(done.stdout)
        return dict(run)


def _workspace(root: Path, receiver: HostileReceiver, endpoints: HttpEndpoints) -> None:
    port = receiver.origin.rsplit(":", 1)[1]
    basic_url = f"http://etl:${{HOOK_PASSWORD}}@127.0.0.1:{port}/ingest"
    common = {"batch_size": 3, "concurrency": 1, "timeout_s": 30}
    destinations = {
        "basic": {"type": "webhook", "url": basic_url, **common},
        "bearer": {
            "type": "webhook",
            "url": receiver.url(),
            "headers": {"Authorization": "Bearer ${HOOK_TOKEN}"},
            **common,
        },
    }
    mappings = {
        name: {
            "model": "users",
            "destination": destination,
            "action": "upsert",
            "mode": "upsert",
            "fields": {"email": "email", "plan": "plan", "ltv": "ltv"},
            "sensitive": ["email"],
        }
        for name, destination in {
            "rejected_basic": "basic",
            "split_bearer": "bearer",
            "refused_basic": "basic",
            "refused_bearer": "bearer",
        }.items()
    }
    write_workspace(root, destinations=destinations, mappings=mappings)
    alerts = {
        "subscriptions": [
            {"slack": {"webhook_url": "${SLACK_URL}", "channel": "#data"}},
            {"webhook": {"url": endpoints.url("/alerts")}},
        ]
    }
    text = (root / "ebbtide.yml").read_text() + "alerts: " + json.dumps(alerts) + "\n"
    (root / "ebbtide.yml").write_text(text)
    warehouse_sql(
        root,
        f"CREATE TABLE users AS SELECT i::BIGINT AS id, {EMAIL_SQL} AS email,"
        f" 'free' AS plan, i * 1.5 AS ltv FROM range(1, {ROWS + 1}) t(i)",
    )


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    with HostileReceiver() as receiver, HttpEndpoints() as endpoints:
        root = tmp_path / "ws"
        root.mkdir()
        _workspace(root, receiver, endpoints)
        env = {
            "HOOK_PASSWORD": PASSWORD,
            "HOOK_TOKEN": TOKEN,
            "SLACK_URL": endpoints.url(SLACK_PATH),
        }
        yield Setup(root, env, receiver, endpoints)


def _headers_first(seen: Seen) -> tuple[int, str, str]:
    """A 401 whose body starts with the credentials (a body excerpt keeps its beginning)."""
    auth = seen.headers.get("Authorization", "")
    records = json.dumps(seen.records(), ensure_ascii=False)
    body = " ".join([auth, json.dumps(auth), quote(auth, safe=""), records, json.dumps(records)])
    return 401, f"unauthorized: {body}", "text/plain"


def state_rows(root: Path) -> str:
    """Every value of every row of every table of the state store, as text."""
    with sqlite3.connect(root / ".ebbtide" / "state.db") as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return "\n".join(
            repr(row) for table in tables for row in db.execute(f'SELECT * FROM "{table}"')
        )


def test_echoed_data_and_credentials_never_leave_in_any_form(setup: Setup) -> None:
    receiver = setup.receiver
    receiver.extra_modes["headers_first"] = _headers_first
    runs: dict[str, dict[str, Any]] = {}
    for name, mode, status in [
        ("rejected_basic", "echo_reject", 0),
        ("split_bearer", "echo_error", 400),
        ("refused_basic", "headers_first", 0),
        ("refused_bearer", "headers_first", 0),
    ]:
        receiver.mode, receiver.echo_status = mode, status or 500
        runs[name] = setup.sync(name)
        assert runs[name]["status"] == "failed", runs[name]

    # The receiver did get the secrets, in every form: the test would pass vacuously otherwise.
    echoed = [s for s in receiver.seen if s.path == "/ingest"]
    assert any(s.headers.get("Authorization", "").startswith("Basic ") for s in echoed)
    assert any(s.headers.get("Authorization") == f"Bearer {TOKEN}" for s in echoed)
    stored = state_rows(setup.root)
    assert "refused: [raw]" in stored and "unauthorized: " in stored

    shown = {"state store": stored}
    # Each view in full for one mapping, and as JSON (the same data) for the others: every
    # CLI call is a new process, and a busy machine has two cores.
    for name, run in runs.items():
        run_id = str(run["id"])
        for flags in ((), ("--json",)) if name == "rejected_basic" else (("--json",),):
            shown[f"runs failed {name} {flags}"] = setup.cli("runs", "failed", run_id, *flags)
            shown[f"records failed {name} {flags}"] = setup.cli("records", "failed", name, *flags)
        for flags in ((), ("--json",)):
            shown[f"runs show {name} {flags}"] = setup.cli("runs", "show", run_id, *flags)
    for flags in ((), ("--json",)):
        shown[f"sync plan {flags}"] = setup.cli("sync", "plan", "rejected_basic", *flags)
    shown["alerts log"] = setup.cli("alerts", "log", "--json")
    alerts = setup.endpoints.to(SLACK_PATH) + setup.endpoints.to("/alerts")
    assert len(alerts) == 2 * len(runs)  # one failure alert per mapping, each channel
    shown |= {f"alert {i}": post.text for i, post in enumerate(alerts)}

    assert {where: leaks(text) for where, text in shown.items() if leaks(text)} == {}
    # What was refused is still told: the messages are masked, not dropped.
    assert "***" in shown["runs failed rejected_basic ()"]
    assert "unauthorized" in shown["runs show refused_basic ()"]
    assert '"email": "***"' in shown["sync plan ('--json',)"]
