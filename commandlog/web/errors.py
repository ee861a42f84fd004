"""Domain errors mapped to HTTP status codes and WebSocket close codes, in one place.

Every HTTP error answer is ``{"error": type, "detail": msg, "errors"?: [{field, message}]}`` with the status of
``STATUS_BY_ERROR`` (the most specific class found in an error's MRO wins; anything else under ``CommandLogError``
is a 400), sent by the one handler ``install`` registers on the app: routers just raise. A WebSocket is closed
with the code of ``CLOSE_CODE_BY_ERROR`` (``close_code_for``). A feature's new error gets its line here.
"""

from __future__ import annotations

import logging
import math

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from commandlog.auth.tokens import AuthenticationError, PermissionDeniedError
from commandlog.drafts.errors import (
    ApprovalCodeError,
    DraftConflictError,
    DraftNotFoundError,
    DraftNotOpenError,
    DraftValidationError,
    ProjectionRequiredError,
    StaleProjectionError,
)
from commandlog.errors import (
    CommandLogError,
    CommandRejectedError,
    ConfigurationError,
    JsonNestingError,
    NoHandlerError,
    UnknownCommandError,
    UnstorableValueError,
)
from commandlog.journal.entries import InvalidFilterError
from commandlog.journal.stats import StatsBusyError
from commandlog.monitor.filters import ActivityFilterError
from commandlog.monitor.frontend_actions import ActionTooLargeError, FrontendActionError
from commandlog.monitor.ratelimit import RateLimitedError
from storage.drafts import ApprovalLockTimeoutError
from storage.errors import DatabaseUnavailableError, StorageError, TenantIsolationError
from storage.journal_stats import StatsTimeoutError

log = logging.getLogger(__name__)


class BodyTooLargeError(CommandLogError):
    """The request body is larger than the route accepts; ``errors`` name the body."""

    def __init__(self, limit: int, *, length: int | None = None) -> None:
        self.limit = limit
        size = f"{length} bytes" if length is not None else "more than that"
        self.errors = [{"field": "body", "message": f"request is {size}, over the limit of {limit} bytes"}]
        super().__init__(f"body: request is {size}, over the limit of {limit} bytes")


STATUS_BY_ERROR: dict[type[Exception], int] = {
    AuthenticationError: 401,
    PermissionDeniedError: 403,
    TenantIsolationError: 403,
    UnknownCommandError: 404,
    DraftNotFoundError: 404,
    DraftConflictError: 409,
    DraftNotOpenError: 409,
    ProjectionRequiredError: 409,
    StaleProjectionError: 409,
    ApprovalLockTimeoutError: 409,
    BodyTooLargeError: 413,
    ActionTooLargeError: 413,
    CommandRejectedError: 422,
    UnstorableValueError: 422,
    JsonNestingError: 422,
    DraftValidationError: 422,
    ApprovalCodeError: 422,
    FrontendActionError: 422,
    ActivityFilterError: 422,
    RateLimitedError: 429,
    NoHandlerError: 501,
    ConfigurationError: 500,
    DatabaseUnavailableError: 503,
    StatsTimeoutError: 503,
    StatsBusyError: 503,
    StorageError: 500,
    CommandLogError: 400,
}


CLOSE_CODE_BY_ERROR: dict[type[Exception], int] = {
    AuthenticationError: 4401,
    PermissionDeniedError: 4403,
    RateLimitedError: 4429,
    ActivityFilterError: 4400,
    InvalidFilterError: 4400,
}
"""WebSocket close codes (4000 + the HTTP status) of the errors a socket is refused with before it streams."""


def close_code_for(error: Exception) -> int:
    """The close code for ``error``: its nearest class in ``CLOSE_CODE_BY_ERROR`` (4400 when none is listed)."""
    return next((CLOSE_CODE_BY_ERROR[cls] for cls in type(error).__mro__ if cls in CLOSE_CODE_BY_ERROR), 4400)


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
