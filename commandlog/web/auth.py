"""Bearer-token authentication for the web app: ``current_principal`` and the ``require_role`` dependency factory.

Every ``/api`` route except the health check depends on one of these. Tokens are made with ``create_token``
(also ``cmdlog token create``); see ``commandlog.auth.tokens`` for the format and what is stored.

Rate limits (``RequestLimits``, the monitor's ``RateLimiter``, answered 429 with ``Retry-After``): failed
authentications per client address (``CMDLOG_AUTH_FAILURE_RATE``, default ``1,20``: 20 failures, then one a second;
an address over it is refused before its token is even looked up), and every authenticated request per token
(``CMDLOG_API_RATE``, default ``20,100``) — journal, drafts, frontend actions, tickets alike.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.applications import Starlette

from commandlog.auth.tokens import (
    AuthenticationError,
    PermissionDeniedError,
    Principal,
    Role,
    authenticate,
    create_token,
)
from commandlog.monitor.ratelimit import RateLimiter

__all__ = ["Principal", "RequestLimits", "Role", "create_token", "current_principal", "request_limits",
           "require_role"]

_bearer = HTTPBearer(auto_error=False, description="A token from `cmdlog token create`.")


@dataclass(kw_only=True)
class RequestLimits:
    """The app's request budgets (``app.state.limits``); tests pass their own."""

    per_token: RateLimiter
    """Authenticated requests per token."""
    auth_failures: RateLimiter
    """Failed authentications per client address."""

    @classmethod
    def from_settings(cls, env: Mapping[str, str]) -> RequestLimits:
        """From ``CMDLOG_API_RATE`` and ``CMDLOG_AUTH_FAILURE_RATE`` in the mapping ``env``."""
        return cls(per_token=RateLimiter.from_setting(env, "CMDLOG_API_RATE", "20,100"),
                   auth_failures=RateLimiter.from_setting(env, "CMDLOG_AUTH_FAILURE_RATE", "1,20"))


def request_limits(app: Starlette) -> RequestLimits:
    """The app's RequestLimits (from its settings on first use)."""
    if getattr(app.state, "limits", None) is None:
        settings = getattr(app.state, "settings", None)
        app.state.limits = RequestLimits.from_settings(getattr(settings, "extra", None) or {})
    return app.state.limits


def current_principal(request: Request,
                      credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> Principal:
    """The caller of this request, from its ``Authorization: Bearer <token>`` header (401 when absent or invalid,
    429 when its address failed too often or its token made too many requests)."""
    limits = request_limits(request.app)
    client = request.client.host if request.client else "-"
    limits.auth_failures.ensure(client, who="this client")
    try:
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise AuthenticationError("missing bearer token")
        principal = authenticate(request.app.state.db, credentials.credentials)
    except AuthenticationError:
        limits.auth_failures.check(client, who="this client")  # the failure counts; one too many answers 429
        raise
    limits.per_token.check(principal.token_id)
    return principal


def require_role(role: Role) -> Callable[..., Principal]:
    """A dependency that admits principals of ``role`` or higher (operator satisfies viewer, admin satisfies all)."""

    def dependency(principal: Principal = Depends(current_principal)) -> Principal:
        if not principal.satisfies(role):
            raise PermissionDeniedError(f"this request needs the {role} role; the token has {principal.role}")
        return principal

    dependency.__name__ = f"require_{role}"
    return dependency
