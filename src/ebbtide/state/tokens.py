"""API tokens in the state store: the token is printed once, only its SHA-256 is kept.

A token is 32 random bytes, URL-safe base64. Looking one up by its hash needs no secret
comparison in Python: a leaked database gives hashes of random tokens, which cannot be reversed.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

# In `ebbtide.enums`, so that the CLI offers it without SQLAlchemy; named here as before.
from ebbtide.enums import TokenScope as TokenScope
from ebbtide.state.schema import api_tokens


@dataclass(frozen=True)
class ApiToken:
    """A token as the state store knows it: never the token itself."""

    id: int
    name: str | None
    scope: TokenScope
    created_at: datetime

    @property
    def label(self) -> str:
        """Who calls, as the history records it (a sync request's actor)."""
        return self.name or f"token {self.id}"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenBook:
    """Creates, checks and lists the `api_tokens` table."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def create(self, scope: TokenScope, name: str | None = None) -> tuple[str, ApiToken]:
        """A new token: returned once, here; the state store keeps its hash."""
        token = secrets.token_urlsafe(32)
        now = datetime.now(UTC)
        with self.engine.begin() as conn:
            result = conn.execute(
                api_tokens.insert().values(
                    name=name, scope=scope.value, token_sha256=token_hash(token), created_at=now
                )
            )
            (token_id,) = result.inserted_primary_key or (0,)
        return token, ApiToken(int(token_id), name, scope, now)

    def verify(self, token: str) -> ApiToken | None:
        """The token's record, or None when no token with that hash exists."""
        query = sa.select(api_tokens).where(
            api_tokens.c.token_sha256 == token_hash(token), api_tokens.c.revoked_at.is_(None)
        )
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return _token(row) if row is not None else None

    def revoke(self, token_id: int) -> bool:
        """Refuse the token from now on (kept, so the history still names it); False when
        there is no such token, or it was revoked already."""
        with self.engine.begin() as conn:
            changed = conn.execute(
                api_tokens.update()
                .where(api_tokens.c.id == token_id, api_tokens.c.revoked_at.is_(None))
                .values(revoked_at=datetime.now(UTC))
            ).rowcount
        return bool(changed == 1)

    def listed(self) -> list[ApiToken]:
        """Tokens that are valid, oldest first."""
        query = sa.select(api_tokens).where(api_tokens.c.revoked_at.is_(None))
        with self.engine.connect() as conn:
            return [_token(row) for row in conn.execute(query.order_by(api_tokens.c.id))]


def _token(row: Any) -> ApiToken:
    return ApiToken(row.id, row.name, TokenScope(row.scope), row.created_at)
