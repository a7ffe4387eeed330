"""`ebbtide tokens create|list|revoke`: API tokens for the REST API of `ebbtide serve`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from ebbtide.cli import render
from ebbtide.cli.context import JsonFlag, err, out
from ebbtide.cli.context import workspace as current_workspace
from ebbtide.enums import TokenScope
from ebbtide.errors import UsageError

if TYPE_CHECKING:
    from ebbtide.state.store import SqlStateStore
    from ebbtide.state.tokens import TokenBook

tokens_app = typer.Typer(help="API tokens for the REST API.", no_args_is_help=True)


def _book() -> tuple[TokenBook, SqlStateStore]:
    from ebbtide.state.store import SqlStateStore
    from ebbtide.state.tokens import TokenBook

    workspace = current_workspace()
    state = SqlStateStore(workspace.spec.state, workspace.root)
    return TokenBook(state.engine), state


@tokens_app.command("create")
def create(
    scope: Annotated[
        TokenScope, typer.Option("--scope", help="read: GET only; write: also sync, pause, resume.")
    ],
    name: Annotated[str | None, typer.Option("--name", help="Who or what uses it.")] = None,
    json_output: JsonFlag = False,
) -> None:
    """Create a token and print it once: the state store keeps only its hash."""
    book, state = _book()
    try:
        token, record = book.create(scope, name)
    finally:
        state.dispose()
    if json_output:
        render.print_json(
            out, {"id": record.id, "name": name, "scope": scope.value, "token": token}
        )
        return
    out.print(token, markup=False, highlight=False)
    err.print(
        f"token {record.id} ({escape(record.label)}, scope {scope.value}) created: it is shown"
        " only now. Send it as `Authorization: Bearer <token>`."
    )


@tokens_app.command("list")
def list_tokens(json_output: JsonFlag = False) -> None:
    """The tokens (never the tokens themselves): id, name, scope, created."""
    book, state = _book()
    try:
        tokens = book.listed()
    finally:
        state.dispose()
    rows = [
        {"id": t.id, "name": t.name, "scope": t.scope.value, "created_at": t.created_at.isoformat()}
        for t in tokens
    ]
    if json_output:
        render.print_json(out, rows)
        return
    for row in rows:
        out.print(
            f"{row['id']}  {row['scope']:5}  {row['created_at']}  {row['name'] or ''}",
            markup=False,
            highlight=False,
        )


@tokens_app.command("revoke")
def revoke(
    token_id: Annotated[int, typer.Argument(help="The token's id (`tokens list`).")],
) -> None:
    """Refuse a token from now on (401 at its next request)."""
    book, state = _book()
    try:
        revoked = book.revoke(token_id)
    finally:
        state.dispose()
    if not revoked:
        raise UsageError(f"no valid token {token_id} (see `ebbtide tokens list`)")
    out.print(f"token {token_id} revoked")
