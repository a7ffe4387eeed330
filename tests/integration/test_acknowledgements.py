"""A record is loaded only on the destination's word for it, matched exactly to that record.

Every sync runs the real engine (DuckDB warehouse and snapshot, the webhook destination) against
the hostile receiver on 127.0.0.1. An answer that names a key in another form, an unknown key,
a key twice, or a 2xx body that is not the protocol's, leaves the whole batch unacknowledged:
retried in the run, failed, kept out of the snapshot, and sent again by the next sync.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from ebbtide.destinations import http
from ebbtide.services.sync import SyncService
from ebbtide.values import RunStatus
from tests.hostile_receiver import HostileReceiver
from tests.integration.workspace_kit import (
    TOKEN,
    USERS_SQL,
    Kit,
    hook,
    mapping,
    users_table,
    write_workspace,
)

ROWS = 6  # one batch
ATTEMPTS = 5  # what the engine's backoff allows a retriable batch
INT_KEYS = list(range(1, ROWS + 1))
STRING_SQL = "select id::VARCHAR AS id, email, plan, ltv from users"


@pytest.fixture
def receiver() -> Iterator[HostileReceiver]:
    with HostileReceiver() as running:
        yield running


def build(
    kit: Kit, receiver: HostileReceiver, *, sql: str = USERS_SQL, key: str | list[str] = "id"
) -> SyncService:
    kit.monkeypatch.setenv("HOOK_URL", receiver.url())
    kit.monkeypatch.setenv("HOOK_TOKEN", TOKEN)
    write_workspace(
        kit.root, destinations={"hook": hook()}, mappings={"users": mapping("mirror")}, sql=sql
    )
    config = kit.root / "ebbtide.yml"
    doc = yaml.safe_load(config.read_text())
    doc["models"]["users"]["primary_key"] = key
    config.write_text(yaml.safe_dump(doc, sort_keys=False))
    users_table(kit.root, ROWS)
    return kit.service()


def first_key(receiver: HostileReceiver) -> Any:
    """The key of the first record the receiver got: the one the bent answers speak of."""
    return receiver.requests_to("/ingest")[0].records()[0]["key"]


def assert_nothing_acknowledged(service: SyncService, receiver: HostileReceiver, says: str) -> None:
    """One run: every record failed, the batch retried, the failure says why."""
    run = service.run("users")
    assert run.status is RunStatus.FAILED, run.error
    assert (run.loaded_new, run.failed) == (0, ROWS)
    assert run.failed_by_class == {"server_error": ROWS}
    posts = receiver.requests_to("/ingest")
    assert len(posts) == ATTEMPTS  # retried within the run …
    assert len({p.headers["Idempotency-Key"] for p in posts}) == 1  # … as the same batch
    messages = {f.message for f in service.state.failures(run.id)}
    assert len(messages) == 1, messages
    assert says in messages.pop()


def assert_next_sync_sends_everything(
    service: SyncService, receiver: HostileReceiver, keys: list[Any]
) -> None:
    """Nothing went into the snapshot: a well-behaved receiver now gets every record."""
    receiver.mode = "accept"
    receiver.forget()
    run = service.run("users")
    assert run.status is RunStatus.SUCCESS, run.error
    assert (run.loaded_new, run.retried) == (ROWS, ROWS)
    assert sorted(receiver.keys_received(), key=str) == sorted(keys, key=str)


def composite_keys() -> list[dict[str, Any]]:
    return [{"id": i, "plan": "pro" if i % 3 == 0 else "free"} for i in INT_KEYS]


# -- keys in another form --------------------------------------------------------------------


def test_an_integer_key_echoed_as_a_string_loads_nothing(
    kit: Kit, receiver: HostileReceiver
) -> None:
    service = build(kit, receiver)
    receiver.mode = "key_as_string"
    run = service.run("users")
    key = first_key(receiver)
    assert (run.status, run.loaded_new, run.failed) == (RunStatus.FAILED, 0, ROWS)
    says = f'names key "{key}" which is not in the batch (sent as {key})'
    assert all(says in f.message for f in service.state.failures(run.id))
    assert_next_sync_sends_everything(service, receiver, INT_KEYS)


@pytest.mark.parametrize(
    ("mode", "sql", "key", "says"),
    [
        ("key_as_number", STRING_SQL, "id", 'which is not in the batch (sent as "'),
        ("key_extra", USERS_SQL, ["id", "plan"], '"extra":1} which is not in the batch'),
        ("key_missing_property", USERS_SQL, ["id", "plan"], "which is not in the batch"),
        ("unknown_key", USERS_SQL, "id", 'names key "no such key in this batch" which'),
        ("duplicate_key", USERS_SQL, "id", "twice"),
    ],
)
def test_an_answer_naming_a_key_no_record_was_sent_with_loads_nothing(
    kit: Kit,
    receiver: HostileReceiver,
    mode: str,
    sql: str,
    key: str | list[str],
    says: str,
) -> None:
    service = build(kit, receiver, sql=sql, key=key)
    receiver.mode = mode
    assert_nothing_acknowledged(service, receiver, says)
    expected: list[Any] = INT_KEYS
    if sql == STRING_SQL:
        expected = [str(i) for i in INT_KEYS]
    elif isinstance(key, list):
        expected = composite_keys()
    assert_next_sync_sends_everything(service, receiver, expected)


def test_a_composite_key_echoed_with_its_members_reordered_names_that_record(
    kit: Kit, receiver: HostileReceiver
) -> None:
    # JSON objects have no order: the same members are the same key.
    service = build(kit, receiver, key=["id", "plan"])
    receiver.mode = "key_reordered"
    run = service.run("users")
    refused = first_key(receiver)
    assert list(refused) == ["id", "plan"]  # sent in the declared order, echoed reversed
    assert run.status is RunStatus.PARTIAL_SUCCESS, run.error
    assert (run.loaded_new, run.failed) == (ROWS - 1, 1)
    (failure,) = service.state.failures(run.id)
    assert (failure.code, failure.error_class) == ("HOSTILE", "validation")
    assert json.loads(failure.key) == refused


def test_an_exact_echo_refuses_only_the_record_it_names(
    kit: Kit, receiver: HostileReceiver
) -> None:
    service = build(kit, receiver, sql=STRING_SQL)
    receiver.mode = "reject"
    receiver.reject("3")
    run = service.run("users")
    assert (run.status, run.loaded_new, run.failed) == (RunStatus.PARTIAL_SUCCESS, ROWS - 1, 1)
    assert [f.key for f in service.state.failures(run.id)] == ['"3"']


# -- 2xx bodies that are not the protocol's ----------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "says"),
    [
        ("garbage_html", "(it is not JSON: '<html><body>OK</body></html>')"),
        ("garbage_results_not_list", '("results" is not a list'),
        ("garbage_item_without_key", '(result 1 is not an object with a "key"'),
        ("garbage_truncated", "(it is not JSON"),
        ("garbage_not_object", "(it is not a JSON object"),
        ("garbage_wrong_types", '(result 1 has no "ok": true or false'),
        ("garbage_bytes", "(it is not JSON"),
    ],
)
def test_a_2xx_body_not_of_the_protocol_loads_nothing_and_says_why(
    kit: Kit, receiver: HostileReceiver, mode: str, says: str
) -> None:
    service = build(kit, receiver)
    receiver.mode = mode
    assert_nothing_acknowledged(service, receiver, says)
    assert_next_sync_sends_everything(service, receiver, INT_KEYS)


def test_an_empty_2xx_body_accepts_the_whole_batch(kit: Kit, receiver: HostileReceiver) -> None:
    service = build(kit, receiver)
    run = service.run("users")
    assert (run.status, run.loaded_new, run.failed) == (RunStatus.SUCCESS, ROWS, 0)
    assert len(receiver.requests_to("/ingest")) == 1


def test_an_answer_larger_than_any_batch_needs_loads_nothing(
    kit: Kit, receiver: HostileReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The limit is lowered so that the test need not send 64 MiB; the body is valid JSON that
    # would accept everything, had it been read whole.
    monkeypatch.setattr(http, "MAX_ANSWER_BYTES", 10_000)
    receiver.extra_modes["padded"] = lambda seen: (
        200,
        json.dumps({"results": [], "padding": "x" * 20_000}),
        "application/json",
    )
    service = build(kit, receiver)
    receiver.mode = "padded"
    assert_nothing_acknowledged(service, receiver, "(it is larger than 10,000 bytes")
    assert_next_sync_sends_everything(service, receiver, INT_KEYS)
