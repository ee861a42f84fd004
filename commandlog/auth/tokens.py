"""Api tokens: create one (plain token shown once, only a hash stored) and turn a presented token into a Principal.

A token reads ``cl_<token_id>.<secret>``: the id finds the row, the secret's SHA-256 must match the stored hash
(compared in constant time). Roles are ordered ``viewer`` < ``operator`` < ``admin``; viewer and operator tokens
are bound to one tenant, admin tokens to none. Every token stands for a **subject** (``alice@acme``; by default
``token:<token_id>``): the identity recorded as the actor of what is done with it. Identities come from here, never
from a request body.

    CommandLogError
     └── TokenError                  a token cannot be created as asked (bad tenant or role)
     └── AuthenticationError         a presented token is missing, malformed, unknown, expired or revoked
     └── PermissionDeniedError       the token is valid but its role is too low for the request
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import TypeGuard, get_args

from commandlog.errors import CommandLogError
from storage import tokens as store
from storage.postgres import Database
from storage.tokens import Role

ROLES: tuple[str, ...] = get_args(Role)
PREFIX = "cl_"
_TOKEN = re.compile(r"^cl_([0-9a-f]{12})\.([A-Za-z0-9_-]{20,128})$")
_TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$")
_SUBJECT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@+-]{0,199}$")


class TokenError(CommandLogError):
    """A token cannot be created as asked."""


class AuthenticationError(CommandLogError):
    """The presented token is missing, malformed, unknown, expired or revoked."""


class PermissionDeniedError(CommandLogError):
    """The token is valid but its role does not allow the request."""


@dataclass(frozen=True, kw_only=True)
class Principal:
    """Who is calling: the token's id, the subject it stands for, its tenant (None for admin) and its role."""

    token_id: str
    """Public id of the token used."""
    tenant_id: str | None
    """The tenant the caller may see; None for admin tokens."""
    role: Role
    """``viewer``, ``operator`` or ``admin``."""
    subject: str | None = None
    """Who the token stands for (``alice@acme``); None only for principals built without a token row."""

    @property
    def actor(self) -> str:
        """The identity to record as actor or approver: the token's subject (``token:<id>`` when it has none)."""
        return self.subject or f"token:{self.token_id}"

    def satisfies(self, role: Role) -> bool:
        """True when this principal's role is ``role`` or higher (admin satisfies all)."""
        return ROLES.index(self.role) >= ROLES.index(role)

    @property
    def is_admin(self) -> bool:
        """True for admin tokens (global, lean rows)."""
        return self.role == "admin"

    @property
    def own_tenant(self) -> str:
        """The tenant a viewer or operator token is bound to; PermissionDeniedError for an admin token (none)."""
        if self.tenant_id is None:
            raise PermissionDeniedError("tenant: an admin token must name the tenant")
        return self.tenant_id


def is_role(value: str) -> TypeGuard[Role]:
    """True when ``value`` names a role."""
    return value in ROLES


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def create_token(db: Database, *, tenant: str | None, role: str, ttl: dt.timedelta | None = None,
                 subject: str | None = None) -> str:
    """Create a token for ``subject`` (default ``token:<id>``) and return the plain token (shown once; only its hash
    is stored)."""
    if not is_role(role):  # the CLI passes what was typed
        raise TokenError(f"role: must be one of {', '.join(ROLES)}, got {role!r}")
    if role == "admin" and tenant is not None:
        raise TokenError("tenant: an admin token is global; omit the tenant")
    if role != "admin" and (tenant is None or not _TENANT.match(tenant)):
        raise TokenError(f"tenant: a {role} token needs a tenant id (letters, digits, . _ : @ -), got {tenant!r}")
    if ttl is not None and ttl <= dt.timedelta(0):
        raise TokenError("ttl: must be positive")
    if subject is not None and not _SUBJECT.match(subject):
        raise TokenError(f"subject: who the token stands for, e.g. alice@acme (letters, digits, . _ : @ + -, at most "
                         f"200), got {subject!r}")
    expires = dt.datetime.now(dt.UTC) + ttl if ttl is not None else None
    token_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
    store.insert_token(db, token_id=token_id, secret_sha256=_digest(secret), tenant_id=tenant, role=role,
                       subject=subject or f"token:{token_id}", expires_at=expires)
    return f"{PREFIX}{token_id}.{secret}"


def authenticate(db: Database, token: str | None) -> Principal:
    """The Principal of a presented token; raises AuthenticationError for any token that is not valid now."""
    match = _TOKEN.match(token or "")
    if not match:
        raise AuthenticationError("missing or malformed bearer token")
    token_id, secret = match.groups()
    row = store.find_token(db, token_id)
    # Compare even when the row is missing, so timing does not tell which token ids exist.
    expected = row.secret_sha256 if row else b"\0" * 32
    if not hmac.compare_digest(expected, _digest(secret)) or row is None:
        raise AuthenticationError("invalid token")
    now = dt.datetime.now(dt.UTC)
    if row.revoked_at is not None:
        raise AuthenticationError("token revoked")
    if row.expires_at is not None and row.expires_at <= now:
        raise AuthenticationError("token expired")
    return principal_of(row)


def principal_of(row: store.TokenRow) -> Principal:
    """The Principal a stored token row stands for."""
    return Principal(token_id=row.token_id, tenant_id=row.tenant_id, role=row.role, subject=row.subject)


def revoke_token(db: Database, token_id: str) -> bool:
    """Revoke the token with ``token_id``; True if it was valid until now."""
    return store.revoke_token(db, token_id)
