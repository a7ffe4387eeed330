"""Recommended actions that point at the exact place in the workspace to fix."""

from __future__ import annotations

import re

from ebbtide.config.workspace import Workspace
from ebbtide.errors import ErrorClass


def recommended_action(
    workspace: Workspace, mapping: str, error_class: ErrorClass, message: str
) -> str:
    """What a person should do about a failure of `mapping`, naming files and keys."""
    spec = workspace.spec.mappings.get(mapping)
    if spec is None:
        return error_class.recommended_action
    name = spec.destination
    config = workspace.destinations.get(name)
    # The destination declares where its credentials are; one without any names its URL.
    settings = type(config).secret_settings if config is not None else ()
    secret_at = f"destinations.{name}.{settings[0] if settings else 'url'}"
    if error_class is ErrorClass.AUTH:
        return (
            f"The destination rejected the credentials: update them in `{secret_at}` of"
            f" {workspace.file.name} (or the environment variable it reads), then sync again."
        )
    if error_class is ErrorClass.PERMISSION:
        return (
            f"The credentials in `{secret_at}` are valid but lack permission for action"
            f" {spec.action!r}: grant the account access, then sync again."
        )
    if error_class is ErrorClass.VALIDATION:
        field = _field_named(message, list(spec.fields))
        if field is not None:
            return (
                f"The destination refused field {field!r} ({spec.fields[field].describe} of"
                f" model {spec.model!r}): fix the value in the warehouse, or change"
                f" `mappings.{mapping}.fields.{field}`. The record is retried with its latest"
                " data on the next sync."
            )
    if error_class is ErrorClass.MAPPING:
        field = _field_named(message, list(spec.fields))
        if field is not None:
            return (
                f"The value of field {field!r} ({spec.fields[field].describe} of model"
                f" {spec.model!r}) cannot be sent as the destination takes it: fix the row in"
                f" the model's SQL, or change `mappings.{mapping}.fields.{field}`. Nothing was"
                " sent for this record; it is retried with its latest data on the next sync."
            )
    if error_class is ErrorClass.RATE_LIMITED:
        return (
            f"The destination kept answering 429 after retries: lower"
            f" `destinations.{name}.concurrency` or set `destinations.{name}.rate_limit`."
        )
    if error_class is ErrorClass.PAYLOAD_TOO_LARGE:
        return (
            f"The payload is larger than the destination accepts: lower"
            f" `destinations.{name}.batch_size`, or map fewer or smaller fields in"
            f" `mappings.{mapping}.fields`."
        )
    moved = _REDIRECT.search(message) if error_class is ErrorClass.NOT_FOUND else None
    if moved is not None:
        return (
            f"The URL of destination {name!r} redirects to {moved.group(1)}: if that address is"
            f" right, set `destinations.{name}.url` to it in {workspace.file.name}, then sync"
            " again. Nothing was delivered; the records are sent on the next sync."
        )
    if error_class is ErrorClass.NOT_FOUND and spec.mode == "update":
        return (
            f"The destination has no record for this key and mapping {mapping!r} only updates:"
            " create the record there first, or use mode upsert."
        )
    return error_class.recommended_action


# As destinations/webhook.py words a redirect it did not follow.
_REDIRECT = re.compile(r"URL redirects to (\S+?);")


def _field_named(message: str, fields: list[str]) -> str | None:
    """The mapped field the destination's message names first ("email: not valid")."""
    found = []
    for field in fields:
        match = re.search(rf"(?<![\w.]){re.escape(field)}(?!\w)", message)
        if match:
            found.append((match.start(), -len(field), field))
    return min(found)[2] if found else None
