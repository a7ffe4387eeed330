"""A real `ebbtide serve` for the browser to visit: its workspace, its users, its receiver.

The workspace is the end-to-end tests' (tests/e2e/harness.py: a DuckDB warehouse of users and
one mirror mapping, `users`, to a webhook), scheduled `manual` so that nothing runs unless a
test asks. The webhook is an in-process `Receiver`, so a test can make it refuse keys or hold
its answers while the sync runs in serve. Alerts go to a local SMTP server (aiosmtpd).

Users are made the way an admin makes them, with `ebbtide users create --password-stdin`;
the syncs a scenario merely needs as a setting are asked through the REST API with a token
(the scenario under test goes through the pages), and every wait is for serve's log line of
the finished run.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import httpx

from ebbtide.demo.receiver import Receiver
from tests.e2e.harness import MAPPING, Processes, Serve, Workspace, wait_until
from tests.integration.alert_servers import SmtpServer

PASSWORD = "correct horse battery staple"
ADMIN = "admin@example.com"
VIEWER = "viewer@example.com"
SENDER = "ebbtide@example.com"
# Generous: the suite runs beside other tests on two cores, and under busy loops.
TIMEOUT_S = 120


def alerts_yaml(smtp: SmtpServer) -> str:
    """The `alerts:` section: email through the local SMTP server, no subscriptions (a
    scenario signs up on the settings page)."""
    return (
        "alerts:\n"
        f"  email: {{host: 127.0.0.1, port: {smtp.port}, from: {SENDER}, tls: none}}\n"
        "  timeout_s: 30\n"
    )


@dataclass
class Site:
    """One serve process and everything around it; `url` is where its pages are."""

    workspace: Workspace
    receiver: Receiver
    smtp: SmtpServer
    serve: Serve
    url: str
    token: str = field(repr=False)  # a write token of the REST API, for setting scenes
    _api: httpx.Client | None = field(default=None, repr=False)

    # -- people ----------------------------------------------------------------------------

    # -- the REST API, for what a scenario needs as a setting --------------------------------

    @property
    def api(self) -> httpx.Client:
        if self._api is None:
            headers = {"Authorization": f"Bearer {self.token}"}
            self._api = httpx.Client(base_url=self.url, headers=headers, timeout=TIMEOUT_S)
        return self._api

    def runs(self) -> list[dict[str, Any]]:
        """The mapping's runs, newest first."""
        answer = self.api.get("/api/v1/runs", params={"mapping": MAPPING})
        assert answer.status_code == 200, answer.text
        runs: list[dict[str, Any]] = answer.json()
        return runs

    def run(self, run_id: int) -> dict[str, Any]:
        answer = self.api.get(f"/api/v1/runs/{run_id}")
        assert answer.status_code == 200, answer.text
        run: dict[str, Any] = answer.json()
        return run

    def ask_sync(self) -> None:
        asked = self.api.post(f"/api/v1/mappings/{MAPPING}/sync")
        assert asked.status_code == 202, asked.text

    def sync(self) -> tuple[int, str]:
        """One sync asked through the API and run by serve: (run id, status)."""
        before = len(self.serve.finished())
        self.ask_sync()
        return self.wait_finished(before + 1)

    def wait_finished(self, n: int) -> tuple[int, str]:
        """The `n`th run serve finished (1-based): (run id, status)."""
        return self.serve.wait_finished(n)[n - 1]

    def sent_by(self, run_id: int) -> list[dict[str, Any]]:
        """The records one run delivered, as the receiver saw them."""
        prefix = f"{run_id}-"
        return [r for r in self.receiver.records if str(r["idempotency_key"]).startswith(prefix)]

    # -- the warehouse ---------------------------------------------------------------------

    def warehouse(self, *statements: str) -> None:
        """Change the model's rows between syncs (serve reads the warehouse only while one
        runs)."""
        with duckdb.connect(str(self.workspace.root / "warehouse.duckdb")) as con:
            for statement in statements:
                con.execute(statement)

    def close(self) -> None:
        if self._api is not None:
            self._api.close()


def open_site(
    root: Path, processes: Processes, receiver: Receiver, smtp: SmtpServer, rows: int
) -> Site:
    """A workspace of `rows` users under `root`, an admin and a viewer, and serve running."""
    workspace = Workspace.create(root / "ws", receiver.url, rows=rows)
    workspace.configure(schedule="manual", more=alerts_yaml(smtp))
    # The first command makes the state store; then serve starts while the rest run (each is
    # a Python start-up of a second or more).
    created(create_user(workspace, ADMIN, "admin"), ADMIN, "admin")
    serve = Serve(workspace, processes, "serve")
    viewer = create_user(workspace, VIEWER, "viewer")
    token = cli(workspace, "tokens", "create", "--scope", "write", "--name", "setup", "--json")
    url = serve.api_url()
    created(viewer, VIEWER, "viewer")
    out, err = token.communicate(timeout=TIMEOUT_S)
    assert token.returncode == 0, err
    return Site(workspace, receiver, smtp, serve, url, json.loads(out)["token"])


def cli(workspace: Workspace, *args: str) -> subprocess.Popen[str]:
    """`ebbtide <args>` started, its input and output piped."""
    return subprocess.Popen(
        workspace.cli_args(*args),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=workspace.env,
    )


def create_user(workspace: Workspace, email: str, role: str) -> subprocess.Popen[str]:
    """`ebbtide users create EMAIL --role ROLE --password-stdin`, as an admin types it."""
    return cli(workspace, "users", "create", email, "--role", role, "--password-stdin")


def created(process: subprocess.Popen[str], email: str, role: str) -> None:
    """The password given on standard input; the user made, the password never echoed."""
    out, err = process.communicate(f"{PASSWORD}\n", timeout=TIMEOUT_S)
    assert process.returncode == 0, err
    assert f"user {email} ({role}) created" in err
    assert PASSWORD not in out + err


__all__ = ["ADMIN", "PASSWORD", "VIEWER", "Site", "open_site", "wait_until"]
