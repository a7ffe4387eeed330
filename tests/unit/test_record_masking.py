"""What ebbtide keeps of a record: sensitive values masked in every text about its batch."""

from __future__ import annotations

import json

from ebbtide.config.redact import MASK, Redactor
from ebbtide.engine.masking import (
    MAX_PAYLOAD_SAMPLE,
    batch_redactor,
    masked_record,
    payload_sample,
    sensitive_values,
)

SENSITIVE = frozenset({"email", "address", "score"})


def record(i: int, **data: object) -> str:
    return json.dumps({"op": "upsert", "key": i, "data": data})


def test_every_scalar_of_a_sensitive_object_or_array_is_a_value_to_mask() -> None:
    values = sensitive_values(
        json.loads(
            record(
                1,
                email="ann@example.com",
                address={"street": "1 Elm St", "tags": ["home", 7, None], "geo": {"lat": 1.5}},
                score=True,
                plan="pro",
            )
        ),
        SENSITIVE,
    )
    assert {"ann@example.com", "1 Elm St", "home", "7", "1.5", "true", "True"} <= values
    assert "pro" not in values  # not a sensitive field
    assert "None" not in values and "null" not in values


def test_a_number_is_masked_as_the_record_wrote_it_and_as_a_receiver_may_reprint_it() -> None:
    raw = record(1, score=12.50).replace("12.5", "12.50")
    redact = batch_redactor([raw], SENSITIVE, Redactor())
    assert redact("score 12.50 or 12.5 refused") == f"score {MASK} or {MASK} refused"


def test_a_message_about_one_record_is_masked_with_every_record_of_its_batch() -> None:
    batch = [record(1, email="ann@example.com"), record(2, email="bob@example.com")]
    redact = batch_redactor(batch, SENSITIVE, Redactor(["tok-123"]))
    message = "duplicate of ann%40example.com (bob@example.com), token tok-123"
    assert redact(message) == f"duplicate of {MASK} ({MASK}), token {MASK}"


def test_the_payload_sample_is_masked_before_it_is_cut() -> None:
    secret = "s3cr3t-" + "x" * 40
    filler = "y" * (MAX_PAYLOAD_SAMPLE - 60)
    record_json = record(1, note=filler + secret, email="ann@example.com")
    sample = payload_sample(record_json, SENSITIVE, Redactor([secret]))
    assert len(sample) <= MAX_PAYLOAD_SAMPLE
    assert "s3cr3t" not in sample  # a secret across the cut is not half shown
    assert "ann@example.com" not in sample


def test_a_plan_sample_masks_sensitive_fields_and_secrets_anywhere_else() -> None:
    sample = json.loads(
        record(1, email="ann@example.com", note="mail ann@example.com", key="k-9f8e")
    )
    shown = masked_record(sample, SENSITIVE, Redactor(["k-9f8e"]))
    assert shown["data"] == {"email": MASK, "note": f"mail {MASK}", "key": MASK}
    assert shown["key"] == 1
