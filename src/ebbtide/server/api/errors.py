"""Every error the API answers is JSON `{"error": "..."}` meant for a person."""

from __future__ import annotations

from collections.abc import Mapping

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from ebbtide.errors import (
    ConflictError,
    EbbtideError,
    MappingBusyError,
    StorageError,
    UsageError,
)


class ApiError(Exception):
    """Answer `status` with `message`."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, dict(headers or {})


def install_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(ConflictError, _conflict)
    app.add_exception_handler(MappingBusyError, _conflict)
    app.add_exception_handler(UsageError, _not_found)
    app.add_exception_handler(EbbtideError, _ebbtide_error)
    app.add_exception_handler(RequestValidationError, _invalid)


async def _api_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, ApiError)
    return JSONResponse({"error": error.message}, error.status, headers=error.headers)


async def _not_found(request: Request, error: Exception) -> JSONResponse:
    # A usage error names what does not exist: a mapping, a run.
    return JSONResponse({"error": str(error)}, 404)


async def _conflict(request: Request, error: Exception) -> JSONResponse:
    # Not now, or not in this state: the message says what would make it possible.
    return JSONResponse({"error": str(error)}, 409)


async def _ebbtide_error(request: Request, error: Exception) -> JSONResponse:
    status = 503 if isinstance(error, StorageError) else 500
    return JSONResponse({"error": str(error)}, status)


async def _invalid(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    problems = [f"{'.'.join(str(part) for part in e['loc'])}: {e['msg']}" for e in error.errors()]
    return JSONResponse(
        {
            "error": f"invalid request: {'; '.join(problems)}",
            "detail": jsonable_encoder(error.errors()),
        },
        422,
    )
