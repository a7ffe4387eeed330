"""Users of the web UI: email, role, an argon2 hash of the password, and the lockout that
follows repeated failed logins.

A wrong password and an unknown email get the same answer, after the same work (a hash is
verified either way), so the login form does not tell which addresses have accounts.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

# In `ebbtide.enums`, so that the CLI offers it without argon2; named here as before.
from ebbtide.enums import Role as Role
from ebbtide.errors import ConflictError, UsageError
from ebbtide.state.schema import server_keys, users

# Failed logins in a row that lock an account, and for how long.
MAX_FAILED_LOGINS = 5
LOCKOUT = timedelta(minutes=15)
MIN_PASSWORD_LENGTH = 10

_hasher = PasswordHasher()


@cache
def _unknown_user_hash() -> str:
    """Verified against when the email is unknown, so that both answers take as long.

    Made on the first login, not at import (a hash takes a quarter of a second, which every
    command importing this module paid); every login asks for it, known email or not, so the
    first answer takes as long either way too."""
    return _hasher.hash(secrets.token_urlsafe(16))


@dataclass(frozen=True)
class User:
    id: int
    email: str
    role: Role
    created_at: datetime
    disabled: bool
    session_epoch: int


@dataclass(frozen=True)
class LoginOutcome:
    """A login attempt: the user when it succeeded, otherwise why not."""

    user: User | None
    locked_until: datetime | None = None  # set when the account is locked


def normal_email(email: str) -> str:
    found = email.strip().lower()
    if "@" not in found or found.startswith("@") or found.endswith("@") or " " in found:
        raise UsageError(f"{email!r} is not an email address")
    return found


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UsageError(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")


class UserBook:
    """The `users` table."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def create(self, email: str, role: Role, password: str) -> User:
        address = normal_email(email)
        check_password(password)
        now = datetime.now(UTC)
        try:
            with self.engine.begin() as conn:
                result = conn.execute(
                    users.insert().values(
                        email=address,
                        role=role.value,
                        password_hash=_hasher.hash(password),
                        created_at=now,
                        failed_logins=0,
                        session_epoch=0,
                    )
                )
                (user_id,) = result.inserted_primary_key or (0,)
        except sa.exc.IntegrityError:
            raise ConflictError(f"a user {address} exists already") from None
        return User(int(user_id), address, role, now, False, 0)

    def get(self, user_id: int) -> User | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(users).where(users.c.id == user_id)).first()
        return _user(row) if row is not None else None

    def by_email(self, email: str) -> User | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(users).where(users.c.email == email.strip().lower())
            ).first()
        return _user(row) if row is not None else None

    def listed(self) -> list[User]:
        with self.engine.connect() as conn:
            return [_user(row) for row in conn.execute(sa.select(users).order_by(users.c.email))]

    def log_in(self, email: str, password: str, now: datetime) -> LoginOutcome:
        """Check a password; count a failure, and lock the account after too many."""
        address = email.strip().lower()
        unknown_user_hash = _unknown_user_hash()
        with self.engine.begin() as conn:
            row = conn.execute(
                sa.select(users).where(users.c.email == address).with_for_update()
            ).first()
            if row is None or row.disabled_at is not None:
                _verifies(unknown_user_hash, password)
                return LoginOutcome(None)
            if row.locked_until is not None and _aware(row.locked_until) > now:
                return LoginOutcome(None, _aware(row.locked_until))
            if _verifies(row.password_hash, password):
                conn.execute(
                    users.update()
                    .where(users.c.id == row.id)
                    .values(failed_logins=0, locked_until=None)
                )
                return LoginOutcome(_user(row))
            failed = row.failed_logins + 1
            locked = now + LOCKOUT if failed >= MAX_FAILED_LOGINS else None
            conn.execute(
                users.update()
                .where(users.c.id == row.id)
                .values(failed_logins=0 if locked else failed, locked_until=locked)
            )
            return LoginOutcome(None, locked)

    def set_role(self, email: str, role: Role) -> User:
        return self._change(email, role=role.value)

    def set_disabled(self, email: str, disabled: bool) -> User:
        return self._change(email, disabled_at=datetime.now(UTC) if disabled else None)

    def set_password(self, email: str, password: str) -> User:
        check_password(password)
        return self._change(email, password_hash=_hasher.hash(password), locked_until=None)

    def _change(self, email: str, **values: Any) -> User:
        address = email.strip().lower()
        with self.engine.begin() as conn:
            changed = conn.execute(
                users.update()
                .where(users.c.email == address)
                .values(session_epoch=users.c.session_epoch + 1, **values)
            ).rowcount
        found = self.by_email(address) if changed else None
        if found is None:
            raise UsageError(f"no user {address} (`ebbtide users list`)")
        return found


def session_key(engine: sa.Engine) -> str:
    """The key that signs session cookies, made on first use and shared by every serve
    process of the state store."""
    with engine.connect() as conn:
        found = conn.execute(
            sa.select(server_keys.c.value).where(server_keys.c.name == "session")
        ).scalar()
    if found is not None:
        return str(found)
    try:
        with engine.begin() as conn:
            conn.execute(
                server_keys.insert().values(
                    name="session", value=secrets.token_urlsafe(48), created_at=datetime.now(UTC)
                )
            )
    except sa.exc.IntegrityError:
        pass  # another process made it first: use theirs
    return session_key(engine)


def _verifies(hashed: str, password: str) -> bool:
    try:
        return _hasher.verify(hashed, password)
    except (VerificationError, InvalidHashError):
        return False


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _user(row: Any) -> User:
    return User(
        id=row.id,
        email=row.email,
        role=Role(row.role),
        created_at=row.created_at,
        disabled=row.disabled_at is not None,
        session_epoch=row.session_epoch,
    )
