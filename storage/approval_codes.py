"""The ``draft_approval_code`` table: store a code's hash for one draft version and redeem it at most once.

Redeeming is one conditional ``UPDATE … WHERE used_at IS NULL`` joined to the issuing token, so of two concurrent
redemptions exactly one gets a row back; ``explain`` then says why a code that matched nothing was refused.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from storage.postgres import Database
from storage.rows import one_row


@dataclass(frozen=True, kw_only=True)
class CodeGrant:
    """Who a redeemed code stands for: the operator token it was issued to."""

    token_id: str
    """Id of the token that asked for the code."""
    subject: str
    """That token's subject: the identity recorded as approver."""
    role: str
    """That token's role (``operator`` or ``admin``)."""


@dataclass(frozen=True, kw_only=True)
class CodeRow:
    """One stored code and the state of its token, for explaining a refusal."""

    draft_uuid: uuid.UUID
    """The draft it is good for."""
    draft_version: int
    """The draft version it is good for."""
    expired: bool
    """True once ``expires_at`` has passed (by the database's clock)."""
    used_at: dt.datetime | None
    """When it was redeemed; None while unused."""
    role: str
    """Role of the issuing token."""
    token_valid: bool
    """False when the issuing token was revoked or has expired since."""


def insert_code(db: Database, *, code_sha256: bytes, draft_uuid: uuid.UUID, draft_version: int, tenant_id: str,
                token_id: str, subject: str, ttl: dt.timedelta) -> dt.datetime:
    """Store a code valid for ``ttl`` from the database's ``now()``; returns when it expires. Codes expired for a
    day are swept in the same transaction."""
    with db.connection() as conn:
        conn.execute("DELETE FROM draft_approval_code WHERE expires_at < now() - interval '1 day'")
        return one_row(conn.execute(
            "INSERT INTO draft_approval_code (code_sha256, draft_uuid, draft_version, tenant_id, token_id, subject, "
            "expires_at) VALUES (%s, %s, %s, %s, %s, %s, now() + %s) RETURNING expires_at",
            (code_sha256, draft_uuid, draft_version, tenant_id, token_id, subject, ttl)))[0]


def redeem_code(db: Database, code_sha256: bytes, *, draft_uuid: uuid.UUID, draft_version: int) -> CodeGrant | None:
    """Mark the code used and return its grant, when it is unused, unexpired, for this draft version and its token
    is still a valid operator/admin token; None otherwise (atomic: concurrent callers, at most one grant)."""
    with db.connection() as conn:
        row = conn.execute(
            "UPDATE draft_approval_code c SET used_at = now() FROM api_token t "
            "WHERE c.code_sha256 = %s AND c.used_at IS NULL AND c.expires_at > now() "
            "AND c.draft_uuid = %s AND c.draft_version = %s AND t.token_id = c.token_id "
            "AND t.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > now()) "
            "AND t.role IN ('operator', 'admin') AND (t.tenant_id IS NULL OR t.tenant_id = c.tenant_id) "
            "RETURNING t.token_id, t.subject, t.role", (code_sha256, draft_uuid, draft_version)).fetchone()
    return CodeGrant(token_id=row[0], subject=row[1], role=row[2]) if row else None


def find_code(db: Database, code_sha256: bytes) -> CodeRow | None:
    """The stored code with its token's state, or None when no such code was issued."""
    with db.connection() as conn:
        row = conn.execute(
            "SELECT c.draft_uuid, c.draft_version, c.expires_at <= now(), c.used_at, t.role, "
            "t.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > now()) "
            "FROM draft_approval_code c JOIN api_token t USING (token_id) WHERE c.code_sha256 = %s",
            (code_sha256,)).fetchone()
    if row is None:
        return None
    return CodeRow(draft_uuid=row[0], draft_version=row[1], expired=row[2], used_at=row[3], role=row[4],
                   token_valid=row[5])
