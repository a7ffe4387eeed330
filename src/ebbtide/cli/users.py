"""`ebbtide users create|list|set-role|disable|enable|set-password`: who may log in to the web
UI of `ebbtide serve`, and what they may do there."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

import typer

from ebbtide.cli import render
from ebbtide.cli.context import JsonFlag, err, out
from ebbtide.cli.context import workspace as current_workspace
from ebbtide.enums import Role
from ebbtide.errors import UsageError

if TYPE_CHECKING:
    from ebbtide.state.users import User, UserBook

users_app = typer.Typer(help="Users of the web UI.", no_args_is_help=True)

Email = Annotated[str, typer.Argument(help="The person's email address (their login).")]


@contextmanager
def _book() -> Iterator[UserBook]:
    # argon2 hashes one password when `ebbtide.state.users` is imported: only here.
    from ebbtide.state.store import SqlStateStore
    from ebbtide.state.users import UserBook

    workspace = current_workspace()
    state = SqlStateStore(workspace.spec.state, workspace.root)
    try:
        yield UserBook(state.engine)
    finally:
        state.dispose()


def _password(from_stdin: bool) -> str:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise UsageError("--password-stdin: standard input held no password")
        return password
    first: str = typer.prompt("Password", hide_input=True)
    again: str = typer.prompt("Repeat the password", hide_input=True)
    if first != again:
        raise UsageError("the two passwords differ: nothing was changed")
    return first


PasswordStdin = Annotated[
    bool, typer.Option("--password-stdin", help="Read the password from standard input.")
]


@users_app.command("create")
def create(
    email: Email,
    role: Annotated[
        Role,
        typer.Option(
            "--role", help="admin: everything; editor: sync, reset, replay, pause; viewer: reads."
        ),
    ] = Role.VIEWER,
    password_stdin: PasswordStdin = False,
) -> None:
    """Create a user; asks for the password (or reads it with --password-stdin)."""
    password = _password(password_stdin)
    with _book() as book:
        user = book.create(email, role, password)
    err.print(f"user {user.email} ({user.role.value}) created: they can log in now.")


@users_app.command("list")
def list_users(json_output: JsonFlag = False) -> None:
    """Every user: email, role, and whether they are disabled."""
    with _book() as book:
        found = book.listed()
    rows = [_row(user) for user in found]
    if json_output:
        render.print_json(out, rows)
        return
    for row in rows:
        state = "disabled" if row["disabled"] else ""
        out.print(f"{row['email']}  {row['role']:6}  {state}", markup=False, highlight=False)


@users_app.command("set-role")
def set_role(
    email: Email, role: Annotated[Role, typer.Argument(help="admin, editor or viewer.")]
) -> None:
    """Change what a user may do; their open sessions must log in again."""
    with _book() as book:
        user = book.set_role(email, role)
    err.print(f"{user.email} is now {user.role.value}.")


@users_app.command("disable")
def disable(email: Email) -> None:
    """Refuse the user's logins and end their sessions (the history keeps their name)."""
    with _book() as book:
        user = book.set_disabled(email, True)
    err.print(f"{user.email} is disabled: they can no longer log in.")


@users_app.command("enable")
def enable(email: Email) -> None:
    """Let a disabled user log in again."""
    with _book() as book:
        user = book.set_disabled(email, False)
    err.print(f"{user.email} can log in again.")


@users_app.command("set-password")
def set_password(email: Email, password_stdin: PasswordStdin = False) -> None:
    """Give a user a new password (and unlock a locked account)."""
    password = _password(password_stdin)
    with _book() as book:
        user = book.set_password(email, password)
    err.print(f"{user.email} has a new password; their open sessions must log in again.")


def _row(user: User) -> dict[str, object]:
    return {
        "email": user.email,
        "role": user.role.value,
        "disabled": user.disabled,
        "created_at": user.created_at.isoformat(),
    }
