"""What a destination declares to run the conformance suite against its emulator.

Each emulator module under tests/emulators/ defines a `CASE`: how to configure the destination
against the emulator, which action to sync with which fields, how to read back what the
emulator holds, and the API's limits. The suite (tests/conformance/test_destinations.py)
syncs the model below through the real engine and checks the same promises of every one.

The model, `users(id, email, name, plan, score)`, has ids 1..n; the key text of id 7 is "7".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.emulators.base import Emulator, Seen

__all__ = ["DestinationCase", "Seen"]

CREDENTIAL_VARIABLE = "CONFORMANCE_CREDENTIAL"


@dataclass(frozen=True)
class DestinationCase:
    type: str
    # A fresh emulator, given the credential it accepts: `emulator(credential=…)`.
    emulator: Callable[..., Emulator]
    # The destination's settings against the emulator at `url`, its credential written as
    # `${CONFORMANCE_CREDENTIAL}` (batch_size, concurrency and rate_limit are the suite's).
    settings: Callable[[str], dict[str, Any]]
    action: str
    # The mapping's fields over the model's columns (id, email, name, plan, score).
    fields: dict[str, Any]
    # Key text → the email the destination holds for it (deleted keys absent).
    held: Callable[[Any], dict[str, Any]]
    # How many records a request to one of `record_paths` carried.
    records_in: Callable[[Seen], int]
    record_paths: frozenset[str]
    max_batch_size: int  # the API's records per request
    max_request_bytes: int | None = None  # the API's bytes per request
    max_record_bytes: int | None = None  # the API's bytes per record
    deletes: bool = True  # the action deletes records in mirror mode
    declares_fields: bool = True  # the action lists the fields it accepts
    http: bool = True  # speaks HTTP: rate limits, status codes, echoes
    rejects: bool = True  # can refuse a record (a file takes everything)
    # The setting that names where records go, when the emulator decides it (a table).
    table_setting: str | None = None
    mapping_extra: dict[str, Any] = field(default_factory=dict)  # more mapping settings
