"""Short-lived, single-use WebSocket tickets: a browser trades its bearer token for one, then opens the socket.

A ticket reads ``wst_<secret>``; only its SHA-256 is stored (``ws_ticket``), for ``TICKET_TTL``. Redeeming it
re-checks the token it was issued to, so a token revoked in the meantime cannot open a socket.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets

from commandlog.auth.tokens import AuthenticationError, Principal, principal_of
from storage import tokens as token_store
from storage import ws_tickets as store
from storage.postgres import Database

TICKET_TTL = dt.timedelta(seconds=30)
"""How long a ticket may wait before it is used."""
_TICKET = re.compile(r"^wst_[A-Za-z0-9_-]{20,128}$")


def issue_ticket(db: Database, principal: Principal, *, ttl: dt.timedelta = TICKET_TTL) -> tuple[str, dt.datetime]:
    """A new ticket for ``principal`` and when it expires."""
    ticket = "wst_" + secrets.token_urlsafe(32)
    expires = dt.datetime.now(dt.UTC) + ttl
    store.insert_ticket(db, ticket_sha256=_digest(ticket), token_id=principal.token_id,
                        tenant_id=principal.tenant_id, role=principal.role, expires_at=expires)
    return ticket, expires


def redeem_ticket(db: Database, ticket: str | None) -> Principal:
    """The principal of a valid, unused ticket (now used); AuthenticationError otherwise."""
    if not ticket or not _TICKET.match(ticket):
        raise AuthenticationError("missing or malformed ticket")
    grant = store.redeem_ticket(db, _digest(ticket))
    if grant is None:
        raise AuthenticationError("invalid, expired or already used ticket")
    principal = Principal(token_id=grant.token_id, tenant_id=grant.tenant_id, role=grant.role)
    return principal_of(check_token_still_valid(db, principal))


def check_token_still_valid(db: Database, principal: Principal) -> token_store.TokenRow:
    """The principal's token row; AuthenticationError when it was revoked or has expired since it was presented."""
    row = token_store.find_token(db, principal.token_id)
    if row is None or row.revoked_at is not None:
        raise AuthenticationError("token revoked")
    if row.expires_at is not None and row.expires_at <= dt.datetime.now(dt.UTC):
        raise AuthenticationError("token expired")
    return row


def _digest(ticket: str) -> bytes:
    return hashlib.sha256(ticket.encode()).digest()
