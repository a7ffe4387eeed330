"""Bearer tokens: every /api/v1 route needs one; a POST needs a `write` one.

Messages say what is wrong, never echo the token.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPBearer

from ebbtide.server.api.context import Services, TokenHolder
from ebbtide.server.api.errors import ApiError

# Declares the scheme in the OpenAPI document; the header is read (and explained) below.
bearer = HTTPBearer(auto_error=False, description="`ebbtide tokens create --scope read|write`")
CHALLENGE = {"WWW-Authenticate": "Bearer"}


def caller(request: Request, found: Services, _: object = Depends(bearer)) -> TokenHolder:
    """The holder of the request's token, or 401 saying what is missing or wrong."""
    header = request.headers.get("authorization")
    if not header:
        raise ApiError(
            401,
            "missing Authorization header: send `Authorization: Bearer <token>` with a token"
            " from `ebbtide tokens create`",
            CHALLENGE,
        )
    scheme, _sep, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "the Authorization header must read `Bearer <token>`", CHALLENGE)
    holder = found.verify_token(token.strip())
    if holder is None:
        raise ApiError(
            401,
            "invalid token: this state store knows no such API token (mistyped, or created"
            " for another workspace)",
            CHALLENGE,
        )
    return holder


Caller = Annotated[TokenHolder, Depends(caller)]


def writer(holder: Caller) -> TokenHolder:
    """The caller, when its token may change things; 403 for a read token."""
    if holder.scope != "write":
        raise ApiError(
            403,
            f"this token's scope is {holder.scope}: changing things needs a write token"
            " (`ebbtide tokens create --scope write`)",
        )
    return holder


Writer = Annotated[TokenHolder, Depends(writer)]
