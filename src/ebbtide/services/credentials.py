"""`ebbtide validate --check-credentials`: one cheap authenticated call per destination."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from ebbtide.config.workspace import Workspace
from ebbtide.destinations import DESTINATIONS
from ebbtide.errors import DestinationError, ErrorClass
from ebbtide.ports import AdapterContext


@dataclass(frozen=True)
class CredentialCheck:
    """What a destination's account endpoint said of its credentials."""

    destination: str
    type: str
    ok: bool | None  # None: the destination has no call that checks credentials
    message: str
    error_class: str | None = None


def check_credentials(workspace: Workspace) -> list[CredentialCheck]:
    """Each destination's credentials, checked against its API, secrets masked."""
    return asyncio.run(_check_all(workspace))


async def _check_all(workspace: Workspace) -> list[CredentialCheck]:
    checks = [_check(workspace, name) for name in workspace.destinations]
    return list(await asyncio.gather(*checks))


async def _check(workspace: Workspace, name: str) -> CredentialCheck:
    config = workspace.destinations[name]
    plugin = DESTINATIONS.get(config.type)
    if plugin.check is None:
        return CredentialCheck(name, config.type, None, "no credential check for this type")
    try:
        found = await plugin.check(config, AdapterContext(workspace.root))
    except DestinationError as error:
        advice = error.error_class.recommended_action
        settings = type(config).secret_settings
        if error.error_class in (ErrorClass.AUTH, ErrorClass.PERMISSION) and settings:
            advice = (
                f"Update `destinations.{name}.{settings[0]}` in {workspace.file.name} (or the"
                " environment variable it reads) with credentials the account accepts"
                f"{' for this action' if error.error_class is ErrorClass.PERMISSION else ''}."
            )
        message = workspace.redact.cut_off(f"{error.message} — {advice}")
        return CredentialCheck(name, config.type, False, message, str(error.error_class))
    return CredentialCheck(name, config.type, True, workspace.redact(found))
