"""Bearer-token authentication for the web app: ``current_principal`` and the ``require_role`` dependency factory.

Every ``/api`` route except the health check depends on one of these. Tokens are made with ``create_token``
(also ``cmdlog token create``); see ``commandlog.tokens`` for the format and what is stored.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from commandlog.tokens import (
    AuthenticationError,
    PermissionDeniedError,
    Principal,
    Role,
    authenticate,
    create_token,
)

__all__ = ["Principal", "Role", "create_token", "current_principal", "require_role"]

_bearer = HTTPBearer(auto_error=False, description="A token from `cmdlog token create`.")


def current_principal(request: Request,
                      credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> Principal:
    """The caller of this request, from its ``Authorization: Bearer <token>`` header (401 when absent or invalid)."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise AuthenticationError("missing bearer token")
    return authenticate(request.app.state.db, credentials.credentials)


def require_role(role: Role) -> Callable[..., Principal]:
    """A dependency that admits principals of ``role`` or higher (operator satisfies viewer, admin satisfies all)."""

    def dependency(principal: Principal = Depends(current_principal)) -> Principal:
        if not principal.satisfies(role):
            raise PermissionDeniedError(f"this request needs the {role} role; the token has {principal.role}")
        return principal

    dependency.__name__ = f"require_{role}"
    return dependency
