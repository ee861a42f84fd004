"""Domain errors mapped to HTTP status codes, in one place; every error answer is ``{"error": type, "detail": msg}``.

Features with their own errors add them to ``STATUS_BY_ERROR`` (the most specific class found in an error's MRO
wins; anything else under ``CommandLogError`` is a 400).
"""

from __future__ import annotations

import logging
import math

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from commandlog.errors import (
    CommandLogError,
    CommandRejectedError,
    ConfigurationError,
    JsonNestingError,
    NoHandlerError,
    UnknownCommandError,
    UnstorableValueError,
)
from commandlog.monitor.ratelimit import RateLimitedError
from commandlog.auth.tokens import AuthenticationError, PermissionDeniedError
from storage.errors import DatabaseUnavailableError, StorageError, TenantIsolationError

log = logging.getLogger(__name__)

STATUS_BY_ERROR: dict[type[Exception], int] = {
    AuthenticationError: 401,
    PermissionDeniedError: 403,
    TenantIsolationError: 403,
    UnknownCommandError: 404,
    CommandRejectedError: 422,
    UnstorableValueError: 422,
    JsonNestingError: 422,
    RateLimitedError: 429,
    NoHandlerError: 501,
    ConfigurationError: 500,
    DatabaseUnavailableError: 503,
    StorageError: 500,
    CommandLogError: 400,
}


def status_for(error: Exception) -> int:
    """The HTTP status for ``error``: its nearest class in ``STATUS_BY_ERROR``."""
    for cls in type(error).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls]
    return 500


def response(error: Exception) -> JSONResponse:
    """The answer to ``error``: ``{"error", "detail", "errors"?}`` with its status (and Retry-After on 429)."""
    status = status_for(error)
    body: dict = {"error": type(error).__name__, "detail": str(error)}
    if isinstance(field_errors := getattr(error, "errors", None), list):
        body["errors"] = field_errors
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
    if isinstance(error, RateLimitedError):
        headers["Retry-After"] = str(max(1, math.ceil(error.retry_after)))
    return JSONResponse(body, status_code=status, headers=headers or None)


async def _handle(request: Request, error: Exception) -> JSONResponse:
    if status_for(error) >= 500:
        log.error("%s %s failed: %s", request.method, request.url.path, error, exc_info=error)
    return response(error)


def install(app: FastAPI) -> None:
    """Register the one handler for our error tree (CommandLogError and StorageError) on ``app``."""
    app.add_exception_handler(CommandLogError, _handle)
    app.add_exception_handler(StorageError, _handle)
