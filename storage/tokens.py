"""The ``api_token`` table: insert, look up and revoke token rows (hashes only; the plain token is never stored)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Literal

from storage.postgres import Database
from storage.rows import one_row

Role = Literal["viewer", "operator", "admin"]
"""A token's role, as the CHECK constraints of ``api_token.role`` and ``ws_ticket.role`` allow it."""


@dataclass(frozen=True, kw_only=True)
class TokenRow:
    """One stored api token."""

    token_id: str
    """Public id, the prefix of the plain token (12 hex digits)."""
    secret_sha256: bytes
    """SHA-256 of the token's secret part."""
    tenant_id: str | None
    """The tenant the token is bound to; None for admin tokens."""
    role: Role
    """``viewer``, ``operator`` or ``admin``."""
    subject: str
    """Who the token stands for (``alice@acme``, or ``token:<token_id>``): the actor it is recorded as."""
    created_at: dt.datetime
    """When the token was created."""
    expires_at: dt.datetime | None
    """When the token stops working; None for never."""
    revoked_at: dt.datetime | None
    """When the token was revoked; None while it is valid."""


_COLUMNS = "token_id, secret_sha256, tenant_id, role, subject, created_at, expires_at, revoked_at"


def insert_token(db: Database, *, token_id: str, secret_sha256: bytes, tenant_id: str | None, role: str, subject: str,
                 expires_at: dt.datetime | None = None) -> TokenRow:
    """Store a new token row and return it."""
    with db.connection() as conn:
        row = one_row(conn.execute(
            f"INSERT INTO api_token (token_id, secret_sha256, tenant_id, role, subject, expires_at) "
            f"VALUES (%s, %s, %s, %s, %s, %s) RETURNING {_COLUMNS}",
            (token_id, secret_sha256, tenant_id, role, subject, expires_at),
        ))
    return _row(row)


def find_token(db: Database, token_id: str) -> TokenRow | None:
    """The token row with ``token_id``, or None."""
    with db.connection() as conn:
        row = conn.execute(f"SELECT {_COLUMNS} FROM api_token WHERE token_id = %s", (token_id,)).fetchone()
    return _row(row) if row else None


def revoke_token(db: Database, token_id: str) -> bool:
    """Mark a token revoked; True if a valid token was revoked."""
    with db.connection() as conn:
        cur = conn.execute("UPDATE api_token SET revoked_at = now() WHERE token_id = %s AND revoked_at IS NULL",
                           (token_id,))
        return cur.rowcount == 1


def _row(row: tuple[Any, ...]) -> TokenRow:
    token_id, secret, tenant_id, role, subject, created_at, expires_at, revoked_at = row
    return TokenRow(token_id=token_id, secret_sha256=bytes(secret), tenant_id=tenant_id, role=role, subject=subject,
                    created_at=created_at, expires_at=expires_at, revoked_at=revoked_at)
