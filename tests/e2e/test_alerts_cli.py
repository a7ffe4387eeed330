"""Alerts as a person uses them: `ebbtide alerts …`, `ebbtide notifications` and `ebbtide sync
run` as subprocesses, against real servers on 127.0.0.1 (the receiver as the destination,
aiosmtpd as the SMTP server, HTTP endpoints playing Slack and a webhook)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from ebbtide.demo.receiver import Receiver
from tests.integration.alert_servers import HttpEndpoints, SilentServer, SmtpServer, closed_port
from tests.integration.workspace_kit import TOKEN, hook, mapping, users_table, write_workspace

ROWS = 20
SENDER = "ebbtide@example.com"
ANN, BOB, OPS = "ann@example.com", "bob@example.com", "ops@example.com"
SLACK_PATH = "/services/T0001/B0002/slack-secret-path-cli-4242"
HOOK_PATH = "/alerts/hook"


@pytest.fixture
def down() -> Iterator[Receiver]:
    """A destination refusing the credentials: every sync to it fails (exit 1)."""
    with Receiver() as running:
        running.status_for_all = 401
        yield running


@pytest.fixture
def picky() -> Iterator[Receiver]:
    """A destination refusing two records: every first sync to it partly succeeds (exit 3)."""
    with Receiver() as running:
        for key in (1, 2):
            running.reject(key, code="INVALID_EMAIL", message="email: not a valid address")
        yield running


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    with SmtpServer() as server:
        yield server


@pytest.fixture
def endpoints() -> Iterator[HttpEndpoints]:
    with HttpEndpoints() as server:
        yield server


def smtp_spec(port: int) -> dict[str, Any]:
    return {"host": "127.0.0.1", "port": port, "from": SENDER, "tls": "none"}


def make_workspace(root: Path, alerts: dict[str, Any] | None = None) -> Path:
    """Mappings `broken` (to ${DOWN_URL}) and `partly` (to ${PICKY_URL}), then `alerts:`."""
    root.mkdir(parents=True)
    write_workspace(
        root,
        destinations={
            "down": hook(batch_size=ROWS, url="${DOWN_URL}"),
            "picky": hook(batch_size=ROWS, url="${PICKY_URL}"),
        },
        mappings={
            "broken": mapping("mirror", destination="down"),
            "partly": mapping("mirror", destination="picky"),
        },
    )
    if alerts is not None:
        config = root / "ebbtide.yml"
        doc = yaml.safe_load(config.read_text())
        doc["alerts"] = alerts
        config.write_text(yaml.safe_dump(doc, sort_keys=False))
    users_table(root, ROWS)
    return root


class Cli:
    """`python -m ebbtide -w ROOT …` with the environment its ${VAR}s need."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root, self.env = root, env

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "ebbtide", "-w", str(self.root), *args],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "COLUMNS": "300", "HOOK_TOKEN": TOKEN, **self.env},
        )
        assert "Traceback" not in done.stderr, done.stderr
        return done

    def json(self, *args: str) -> Any:
        done = self(*args, "--json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)


@pytest.fixture
def cli_env(down: Receiver, picky: Receiver, endpoints: HttpEndpoints) -> dict[str, str]:
    return {
        "DOWN_URL": down.url,
        "PICKY_URL": picky.url,
        "SLACK_URL": endpoints.url(SLACK_PATH),
        "ALERT_HOOK_URL": endpoints.url(HOOK_PATH),
    }


def line_of(config: Path, text: str) -> int:
    return next(i for i, line in enumerate(config.read_text().splitlines(), 1) if text in line)


# -- alerts never change a sync ------------------------------------------------------------


def test_sync_exit_code_and_run_are_unchanged_when_alert_channels_fail(
    tmp_path: Path, cli_env: dict[str, str], endpoints: HttpEndpoints
) -> None:
    endpoints.status[SLACK_PATH] = 500
    failing = {
        "email": smtp_spec(closed_port()),
        "subscriptions": [
            {"email": ANN, "channels": ["email", "in_app"]},
            {"slack": {"webhook_url": "${SLACK_URL}", "channel": "#data"}},
            {"webhook": {"url": "${ALERT_HOOK_URL}"}},
        ],
    }
    plain = Cli(make_workspace(tmp_path / "plain"), cli_env)
    alerted = Cli(make_workspace(tmp_path / "alerted", failing), cli_env)

    counts = ("status", "extracted", "added", "loaded_new", "failed")
    for name, exit_code in (("broken", 1), ("partly", 3)):
        without = plain("sync", "run", name, "--json")
        with_alerts = alerted("sync", "run", name, "--json")
        assert (without.returncode, with_alerts.returncode) == (exit_code, exit_code)
        [run_without] = json.loads(without.stdout)
        [run_with] = json.loads(with_alerts.stdout)
        assert [run_with[k] for k in counts] == [run_without[k] for k in counts]

    log = alerted.json("alerts", "log")
    assert {(d["mapping"], d["event"]) for d in log} == {
        ("broken", "failed"),
        ("partly", "partial_success"),
    }
    for entry in log:
        expected = {"email": (False, 3), "slack": (False, 3), "webhook": (True, 1)}
        if entry["channel"] in expected:
            assert (entry["delivered"], entry["attempts"]) == expected[entry["channel"]], entry
        else:
            assert (entry["channel"], entry["delivered"], entry["target"]) == ("in_app", True, ANN)
    assert len(log) == 8
    assert len(endpoints.to(SLACK_PATH)) == 6  # three attempts per alert
    assert [p.json["mapping"] for p in endpoints.to(HOOK_PATH)] == ["broken", "partly"]
    assert "slack-secret-path" not in json.dumps(log)
    text_log = alerted("alerts", "log")
    assert text_log.returncode == 0 and "failed after 3" in text_log.stdout


def test_sync_with_alert_channels_that_hang_keeps_its_exit_code_and_logs_what_timed_out(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    with SilentServer() as silent:
        alerts = {
            "email": smtp_spec(silent.port),
            "timeout_s": 0.5,
            "subscriptions": [
                {"email": ANN},
                {"slack": {"webhook_url": "${HUNG_SLACK_URL}", "channel": "#data"}},
            ],
        }
        env = {**cli_env, "HUNG_SLACK_URL": silent.url(SLACK_PATH)}
        hung = Cli(make_workspace(tmp_path / "hung", alerts), env)
        done = hung("sync", "run", "broken")
        assert silent.saw(6), "three attempts on each channel"
    assert done.returncode == 1  # as without alerts: the destination refused the credentials

    where = f"127.0.0.1:{silent.port}"
    expected = {
        "email": f"Email: no answer from {where} within 0.5 s",
        "slack": f"Slack: no answer from {where} within 0.5 s",
    }
    log = hung.json("alerts", "log")
    assert {e["channel"]: (e["delivered"], e["attempts"], e["error"]) for e in log} == {
        channel: (False, 3, error) for channel, error in expected.items()
    }
    for error in expected.values():
        assert error in done.stderr
    assert "TimeoutError" not in done.stderr


# -- subscriptions -------------------------------------------------------------------------


def test_subscribe_then_list_emails_and_unsubscribe(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    alerts = {
        "email": smtp_spec(closed_port()),
        "subscriptions": [
            {"email": OPS, "statuses": ["failed"]},
            {"email": "inapp@example.com", "channels": ["in_app"]},
            {"slack": {"webhook_url": "${SLACK_URL}", "channel": "#data"}},
        ],
    }
    cli = Cli(make_workspace(tmp_path / "ws", alerts), cli_env)
    statuses = ("--status", "failed", "--status", "recovered")
    done = cli("alerts", "subscribe", "--email", ANN, *statuses, "--mapping", "broken")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("subscription 1: ann@example.com hears about failed, recovered")
    done = cli("alerts", "subscribe", "--email", BOB, "--channel", "in_app")
    assert done.returncode == 0, done.stderr

    listed = cli.json("alerts", "list")
    assert listed == [
        {
            "id": "ebbtide.yml",
            "to": OPS,
            "statuses": ["failed"],
            "mappings": None,
            "channels": ["email"],
        },
        {
            "id": "ebbtide.yml",
            "to": "inapp@example.com",
            "statuses": ["failed", "partial_success"],
            "mappings": None,
            "channels": ["in_app"],
        },
        {
            "id": "ebbtide.yml",
            "to": "slack #data",
            "statuses": ["failed", "partial_success"],
            "mappings": None,
            "channels": ["slack"],
        },
        {
            "id": "1",
            "to": ANN,
            "statuses": ["failed", "recovered"],
            "mappings": ["broken"],
            "channels": ["email"],
        },
        {
            "id": "2",
            "to": BOB,
            "statuses": ["failed", "partial_success"],
            "mappings": None,
            "channels": ["in_app"],
        },
    ]
    assert cli.json("alerts", "emails") == [ANN, OPS]
    assert cli("alerts", "emails").stdout.split() == [ANN, OPS]

    assert cli("alerts", "unsubscribe", "1").returncode == 0
    assert cli.json("alerts", "emails") == [OPS]
    removed = cli("alerts", "unsubscribe", "--email", BOB)
    assert removed.returncode == 0 and "removed 1 subscription(s)" in removed.stdout
    assert [s["id"] for s in cli.json("alerts", "list")] == ["ebbtide.yml"] * 3

    missing = cli("alerts", "unsubscribe", "1")
    assert missing.returncode == 2 and "no such subscription" in missing.stderr


def test_subscribe_refuses_unknown_mapping_and_email_without_smtp_server(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    cli = Cli(make_workspace(tmp_path / "ws", {}), cli_env)
    typo = cli("alerts", "subscribe", "--email", ANN, "--channel", "in_app", "--mapping", "brokn")
    assert typo.returncode == 2
    assert "brokn" in typo.stderr and "broken" in typo.stderr
    no_smtp = cli("alerts", "subscribe", "--email", ANN)
    assert no_smtp.returncode == 2 and "add alerts.email" in no_smtp.stderr
    assert cli.json("alerts", "list") == []
    in_app = cli("alerts", "subscribe", "--email", ANN, "--channel", "in_app")
    assert in_app.returncode == 0, in_app.stderr


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (("--email", "not-an-address", "--channel", "in_app"), "is not an email address"),
        (("--email", ANN, "--channel", "slack"), "delivered by email or in_app"),
    ],
)
def test_subscribe_with_an_invalid_subscription_says_why(
    tmp_path: Path, cli_env: dict[str, str], args: tuple[str, ...], reason: str
) -> None:
    cli = Cli(make_workspace(tmp_path / "ws", {"email": smtp_spec(closed_port())}), cli_env)
    done = cli("alerts", "subscribe", *args)
    assert done.returncode == 2
    assert reason in done.stderr, done.stderr
    assert "errors.pydantic.dev" not in done.stderr


def test_person_subscribed_by_cli_gets_the_email_and_in_app_notifications(
    tmp_path: Path, cli_env: dict[str, str], smtp: SmtpServer
) -> None:
    alerts = {"email": smtp_spec(smtp.port), "base_url": "http://ebbtide.local:8000"}
    cli = Cli(make_workspace(tmp_path / "ws", alerts), cli_env)
    args = ("alerts", "subscribe", "--email", ANN, "--channel", "email", "--channel", "in_app")
    assert cli(*args).returncode == 0
    assert cli("sync", "run", "broken").returncode == 1
    [run] = cli.json("runs", "list")

    [mail] = smtp.mails
    assert mail.rcpt_tos == [ANN]
    assert mail.subject == f"[ebbtide] broken failed (run {run['id']})"
    assert f"Run: http://ebbtide.local:8000/runs/{run['id']}" in mail.body

    [note] = cli.json("notifications", "--email", ANN)
    assert (note["run_id"], note["mapping"], note["event"], note["read"]) == (
        run["id"],
        "broken",
        "failed",
        False,
    )
    assert note["title"] == mail.subject and "Recommended action:" in note["body"]
    assert cli.json("notifications", "--email", BOB) == []

    shown = cli.json("notifications", "--email", ANN, "--unread", "--mark-read")
    assert [n["id"] for n in shown] == [note["id"]]
    assert cli.json("notifications", "--email", ANN, "--unread") == []
    [kept] = cli.json("notifications", "--email", ANN)
    assert (kept["id"], kept["read"]) == (note["id"], True)
    text = cli("notifications", "--email", ANN, "--unread")
    assert text.returncode == 0 and "no unread notifications" in text.stdout


# -- alerts test ---------------------------------------------------------------------------


def test_alerts_test_email_delivers_a_sample_to_every_email_subscription(
    tmp_path: Path, cli_env: dict[str, str], smtp: SmtpServer
) -> None:
    alerts = {
        "email": smtp_spec(smtp.port),
        "subscriptions": [{"email": [ANN, BOB]}, {"email": OPS, "channels": ["in_app"]}],
    }
    cli = Cli(make_workspace(tmp_path / "ws", alerts), cli_env)
    done = cli("alerts", "test", "email")
    assert done.returncode == 0, done.stderr
    assert "email → ann@example.com, bob@example.com: sent" in done.stdout
    [mail] = smtp.mails
    assert sorted(mail.rcpt_tos) == [ANN, BOB] and mail.mail_from == SENDER
    assert mail.subject == "[ebbtide] (test) test alert"
    assert "nothing failed" in mail.body
    [entry] = cli.json("alerts", "log")
    assert (entry["event"], entry["run_id"], entry["delivered"]) == ("test", None, True)
    assert cli.json("notifications", "--email", OPS) == []  # only the email channel


def test_alerts_test_email_exits_1_when_the_smtp_server_is_down(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    alerts = {"email": smtp_spec(closed_port()), "subscriptions": [{"email": ANN}]}
    cli = Cli(make_workspace(tmp_path / "ws", alerts), cli_env)
    done = cli("alerts", "test", "email")
    assert done.returncode == 1
    assert "failed" in done.stdout and "Connection" in done.stdout
    [entry] = cli.json("alerts", "log")
    assert (entry["channel"], entry["delivered"], entry["attempts"]) == ("email", False, 3)


def test_alerts_test_slack_posts_blocks_and_a_channel_without_subscription_is_refused(
    tmp_path: Path, cli_env: dict[str, str], endpoints: HttpEndpoints
) -> None:
    alerts = {"subscriptions": [{"slack": {"webhook_url": "${SLACK_URL}", "channel": "#ops"}}]}
    cli = Cli(make_workspace(tmp_path / "ws", alerts), cli_env)
    done = cli("alerts", "test", "slack")
    assert done.returncode == 0, done.stderr
    [post] = endpoints.to(SLACK_PATH)
    assert post.json["channel"] == "#ops"
    assert post.json["blocks"][0]["text"]["text"] == "[ebbtide] (test) test alert"
    nothing = cli("alerts", "test", "webhook")
    assert nothing.returncode == 2 and "no subscription delivers by webhook" in nothing.stderr


# -- the workspace -------------------------------------------------------------------------


def test_validate_names_file_and_line_of_a_subscription_to_an_unknown_mapping(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    alerts = {
        "email": smtp_spec(25),
        "subscriptions": [{"email": ANN, "mappings": ["partly", "brokn"]}],
    }
    root = make_workspace(tmp_path / "ws", alerts)
    cli = Cli(root, cli_env)
    done = cli("validate")
    assert done.returncode == 2
    line = line_of(root / "ebbtide.yml", "- brokn")
    assert (
        f"ebbtide.yml:{line}: alerts.subscriptions[0].mappings[1]: unknown mapping 'brokn'"
        " (did you mean 'broken'?)"
    ) in done.stderr
    assert cli("sync", "run", "partly").returncode == 2  # nothing runs on a broken workspace


def test_validate_refuses_an_email_subscription_without_smtp_server(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    root = make_workspace(tmp_path / "ws", {"subscriptions": [{"email": ANN}]})
    done = Cli(root, cli_env)("validate")
    assert done.returncode == 2
    line = line_of(root / "ebbtide.yml", "alerts:")
    assert f"ebbtide.yml:{line}:" in done.stderr
    assert "email subscriptions need the SMTP server: add alerts.email" in done.stderr


def test_validate_accepts_in_app_and_slack_subscriptions_without_smtp_server(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    alerts = {
        "remind_every": "30m",
        "subscriptions": [
            {"email": ANN, "channels": ["in_app"], "statuses": ["recovered"]},
            {"slack": {"webhook_url": "${SLACK_URL}", "channel": "#data"}},
        ],
    }
    done = Cli(make_workspace(tmp_path / "ws", alerts), cli_env)("validate")
    assert done.returncode == 0, done.stderr


def test_validate_names_the_line_of_a_bad_remind_every(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    root = make_workspace(tmp_path / "ws", {"remind_every": "soon"})
    done = Cli(root, cli_env)("validate")
    assert done.returncode == 2
    line = line_of(root / "ebbtide.yml", "remind_every")
    assert f"ebbtide.yml:{line}: alerts.remind_every:" in done.stderr
    assert "'soon' is not a duration" in done.stderr
