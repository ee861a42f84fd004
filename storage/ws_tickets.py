"""The ``ws_ticket`` table: store a short-lived WebSocket ticket (hash only) and redeem it at most once."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from storage.postgres import Database
from storage.tokens import Role


@dataclass(frozen=True, kw_only=True)
class TicketGrant:
    """Who a redeemed ticket stands for: the token it was issued to."""

    token_id: str
    """Id of the bearer token that asked for the ticket."""
    tenant_id: str | None
    """That token's tenant (None for admin)."""
    role: Role
    """That token's role."""


def insert_ticket(db: Database, *, ticket_sha256: bytes, token_id: str, tenant_id: str | None, role: str,
                  expires_at: dt.datetime) -> None:
    """Store a ticket; expired ones are swept in the same transaction so the table stays small."""
    with db.connection() as conn:
        conn.execute("DELETE FROM ws_ticket WHERE expires_at < now() - interval '1 hour'")
        conn.execute("INSERT INTO ws_ticket (ticket_sha256, token_id, tenant_id, role, expires_at) "
                     "VALUES (%s, %s, %s, %s, %s)", (ticket_sha256, token_id, tenant_id, role, expires_at))


def redeem_ticket(db: Database, ticket_sha256: bytes) -> TicketGrant | None:
    """Mark the ticket used and return its grant; None when unknown, expired or already used (atomic)."""
    with db.connection() as conn:
        row = conn.execute(
            "UPDATE ws_ticket SET used_at = now() WHERE ticket_sha256 = %s AND used_at IS NULL "
            "AND expires_at > now() RETURNING token_id, tenant_id, role", (ticket_sha256,)).fetchone()
    return TicketGrant(token_id=row[0], tenant_id=row[1], role=row[2]) if row else None
