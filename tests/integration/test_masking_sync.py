"""Masking inside a real sync: a huge record over `max_record_bytes` whose sensitive value is
one long word fails alone, fast, and is stored masked (it once held a sync for 11 minutes)."""

from __future__ import annotations

import time

from ebbtide.demo.receiver import Receiver
from tests.integration.workspace_kit import Kit, hook, mapping

BIG = 5_000_000


def test_a_5_mb_sensitive_value_over_the_record_limit_fails_alone_and_fast(
    kit: Kit, receiver: Receiver
) -> None:
    service = kit.build(
        receiver.url,
        rows=20,
        destinations={"hook": hook(max_record_bytes=100_000)},
        mappings={"users": mapping("upsert", sensitive=["email"])},
    )
    # One long alphanumeric word behind a scheme: what a URL-password pattern rescans from
    # every letter, and a value far larger than any automaton should hold whole.
    kit.sql(f"UPDATE users SET email = 'a://' || repeat('a', {BIG}) || '@x' WHERE id = 7")
    started = time.perf_counter()
    run = service.run("users")
    elapsed = time.perf_counter() - started
    assert (run.loaded_new, run.failed) == (19, 1)
    [failure] = service.state.failures(run.id)
    assert failure.error_class == "payload_too_large"
    assert "aaaa" not in (failure.payload or "") and "aaaa" not in failure.message
    assert elapsed < 120, f"the sync took {elapsed:.0f} s"  # linear: a few seconds
