"""Poison records and limits: an oversized record fails alone, a batch refused whole is split to
find its bad record, and rate limits and Retry-After hold across concurrent requests and mappings.

Arrival times come from the servers on 127.0.0.1 (time.monotonic() on arrival).
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from ebbtide.demo.receiver import Receiver
from ebbtide.errors import ErrorClass
from ebbtide.services.advice import recommended_action
from ebbtide.values import RunRecord, RunStatus
from tests.integration.workspace_kit import Kit, ScriptedServer, hook, mapping, max_in_window

# Loopback jitter between the limiter's send slot and the server's arrival stamp.
# Arrivals are stamped by the receiver, not by the limiter: on a busy machine a request can
# reach it this much later than it was sent. Sharing the limit still shows: two mappings each
# with a window of their own would send about twice the limit within the first instant.
JITTER_S = 0.4


# -- poison records -----------------------------------------------------------------------------


def test_oversized_record_fails_alone_as_payload_too_large_and_its_batch_loads(
    receiver: Receiver, kit: Kit
) -> None:
    destinations = {"hook": hook(batch_size=10, max_record_bytes=500)}
    service = kit.build(receiver.url, rows=20, destinations=destinations)
    kit.sql("UPDATE users SET email = repeat('x', 2000) || '@example.com' WHERE id = 7")
    run = service.run("users_mirror")

    assert run.status is RunStatus.PARTIAL_SUCCESS, run.error
    assert (run.loaded_new, run.failed) == (19, 1)
    assert run.failed_by_class == {"payload_too_large": 1}
    assert sorted(receiver.keys()) == [k for k in range(1, 21) if k != 7]
    assert 7 not in receiver.keys(accepted_only=False)  # never sent
    [failure] = service.state.failures(run.id)
    assert (failure.key, failure.error_class) == ("7", ErrorClass.PAYLOAD_TOO_LARGE)
    assert "500 bytes" in failure.message
    assert failure.payload is not None and failure.payload.startswith('{"op":"added","key":7')
    action = recommended_action(service.workspace, "users_mirror", failure.error_class, "")
    assert "destinations.hook.batch_size" in action


def poison_server(*positions: int) -> tuple[ScriptedServer, list[Any]]:
    """400 for any batch holding a poison key: the records at `positions` of the first batch.

    Choosing them from the first request lets the test place them where it wants in the
    batch, whatever order the engine sends records in.
    """
    poison: list[Any] = []

    def answer(number: int, records: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
        if not poison:
            poison.extend(records[p]["key"] for p in positions)
        if any(r["key"] in poison for r in records):
            return 400, {"error": "the batch holds an invalid record"}
        return 200, {}

    return ScriptedServer(answer), poison


def isolate(kit: Kit, *positions: int) -> tuple[RunRecord, ScriptedServer, list[Any]]:
    server, poison = poison_server(*positions)
    with server:
        destinations = {"hook": hook(batch_size=100, concurrency=1)}
        run = kit.build(server.url, rows=100, destinations=destinations).run("users_mirror")
    return run, server, poison


@pytest.mark.parametrize("position", [0, 37, 99], ids=["first", "middle", "last"])
def test_batch_refused_whole_is_split_to_isolate_its_one_bad_record_in_8_requests(
    kit: Kit, position: int
) -> None:
    run, server, [bad] = isolate(kit, position)

    assert run.status is RunStatus.PARTIAL_SUCCESS, run.error
    assert (run.loaded_new, run.failed, run.failed_by_class) == (99, 1, {"validation": 1})
    assert sorted(server.accepted) == [k for k in range(1, 101) if k != bad]  # each once
    [failure] = kit.services[0].state.failures(run.id)
    assert failure.key == str(bad) and failure.http_status == 400
    extra = server.requests - 1
    assert extra <= 8, f"{extra} extra requests to isolate one record in 100: {server.arrivals}"


def test_batch_with_several_bad_records_loads_all_the_others(kit: Kit) -> None:
    run, server, poison = isolate(kit, 3, 50, 51, 98)

    assert run.status is RunStatus.PARTIAL_SUCCESS, run.error
    assert (run.loaded_new, run.failed) == (96, 4)
    assert sorted(server.accepted) == sorted(set(range(1, 101)) - set(poison))
    failed = {f.key for f in kit.services[0].state.failures(run.id)}
    assert failed == {str(k) for k in poison}


# -- rate limits --------------------------------------------------------------------------------


def arrivals_of(receiver: Receiver) -> list[float]:
    return [e.at for e in receiver.exchanges]


def test_rate_limit_holds_every_one_second_window_to_five_requests(
    receiver: Receiver, kit: Kit
) -> None:
    limited = hook(batch_size=1, concurrency=4, rate_limit={"requests": 5, "per": "1s"})
    service = kit.build(receiver.url, rows=11, destinations={"hook": limited})
    run = service.run("users_mirror")

    assert run.status is RunStatus.SUCCESS, run.error
    arrivals = arrivals_of(receiver)
    assert len(arrivals) == 11
    assert max_in_window(arrivals, 1.0, slack_s=JITTER_S) <= 5
    assert max(arrivals) - min(arrivals) >= 2.0 - JITTER_S  # 11 requests need 3 windows


def sync_at_once(kit: Kit, names: list[str], *, open_in_threads: bool) -> dict[str, RunRecord]:
    """Run mappings at the same moment, each from its own thread with its own SyncService."""
    start = threading.Barrier(len(names), timeout=10)
    services = {name: None if open_in_threads else kit.service() for name in names}
    runs: dict[str, RunRecord] = {}
    errors: list[BaseException] = []

    def sync(name: str) -> None:
        try:
            service = services[name] or kit.service()
            start.wait()
            runs[name] = service.run(name)
        except BaseException as error:  # noqa: BLE001 - reported by the caller's assertion
            errors.append(error)

    threads = [threading.Thread(target=sync, args=(name,), daemon=True) for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    return runs


def test_two_mappings_syncing_to_one_destination_at_once_share_its_rate_limit(
    receiver: Receiver, kit: Kit
) -> None:
    limited = hook(batch_size=1, concurrency=4, rate_limit={"requests": 5, "per": "1s"})
    kit.build(
        receiver.url,
        rows=6,
        destinations={"hook": limited},
        mappings={"users_a": mapping("upsert"), "users_b": mapping("upsert")},
    )
    runs = sync_at_once(kit, ["users_a", "users_b"], open_in_threads=False)

    assert {name: run.status for name, run in runs.items()} == {
        "users_a": RunStatus.SUCCESS,
        "users_b": RunStatus.SUCCESS,
    }
    assert {e.mapping for e in receiver.exchanges} == {"users_a", "users_b"}
    arrivals = arrivals_of(receiver)
    assert len(arrivals) == 12
    assert max_in_window(arrivals, 1.0, slack_s=JITTER_S) <= 5


def test_two_threads_may_open_services_on_one_workspace_at_once(
    receiver: Receiver, kit: Kit
) -> None:
    # Each SyncService opens (and migrates) the state store: two at once must not collide.
    kit.build(
        receiver.url,
        rows=6,
        mappings={"users_a": mapping("upsert"), "users_b": mapping("upsert")},
    )
    for _ in range(3):  # the collision is a race: give it a few chances
        runs = sync_at_once(kit, ["users_a", "users_b"], open_in_threads=True)
        assert {run.status for run in runs.values()} == {RunStatus.SUCCESS}


@pytest.mark.parametrize("rate_limit", [None, {"requests": 1000, "per": "1s"}])
def test_after_429_with_retry_after_no_request_arrives_before_it_passes(
    receiver: Receiver, kit: Kit, rate_limit: dict[str, Any] | None
) -> None:
    concurrency = 4
    destination = hook(batch_size=1, concurrency=concurrency)
    if rate_limit:
        destination["rate_limit"] = rate_limit
    service = kit.build(receiver.url, rows=100, destinations={"hook": destination})
    receiver.delay_s = 0.02
    receiver.fail_status, receiver.retry_after, receiver.fail_first = 429, 1, 1
    run = service.run("users_mirror")

    assert run.status is RunStatus.SUCCESS, run.error
    [limited] = [e for e in receiver.exchanges if e.status == 429]
    later = [e.at - limited.at for e in receiver.exchanges if e.at > limited.at]
    # Requests already on their way when the 429 was answered may still land just after it.
    in_flight = [t for t in later if t < 0.2]
    assert len(in_flight) <= 2 * concurrency
    assert not [t for t in later if 0.2 <= t < 1.0], sorted(later)
    assert max(later) >= 1.0  # the run went on after the pause
    retry = [
        e
        for e in receiver.exchanges
        if e.idempotency_key == limited.idempotency_key and e.status == 200
    ]
    assert len(retry) == 1 and retry[0].at - limited.at >= 1.0


def test_a_batch_refused_for_its_size_loads_every_record_that_fits_alone(kit: Kit) -> None:
    # The receiver takes at most 3 records a request and answers 413 above that: no record is
    # at fault, so none may fail (the last of a halving is tried alone, not presumed bad).
    def answer(number: int, records: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
        return (413, {"error": "request too large"}) if len(records) > 3 else (200, {})

    with ScriptedServer(answer) as server:
        destinations = {"hook": hook(batch_size=8, concurrency=1)}
        run = kit.build(server.url, rows=20, destinations=destinations).run("users_mirror")
    assert run.status is RunStatus.SUCCESS, run.error
    assert run.failed == 0 and sorted(server.accepted) == list(range(1, 21))
