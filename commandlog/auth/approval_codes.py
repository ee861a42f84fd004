"""Approval codes: how a person approving in the Prefect UI proves they are an operator.

The open-source Prefect server records nobody's identity on a resume, and anyone who reaches its API could type any
name into a form. So the draft-approval form asks for a code instead: an operator token asks for one
(``cmdlog draft approval-code``, ``POST /api/drafts/{uuid}/approval-code``), the person types it into the form, and
the flow redeems it. A code reads ``ABCD-EFGH-JKMN`` (12 Crockford base-32 symbols, 60 random bits); only its
SHA-256 is stored, with the draft and the draft version it is good for, the token (and so the subject) it was issued
to, and an expiry (``CODE_TTL``). Redeeming it is atomic and happens once: the recorded approver is the token's
subject. A code for another draft or version (an edit makes a new version), an expired or used code, or one whose
token was revoked or may not approve is refused with the reason.

This module knows codes, not drafts: ``commandlog.drafts.review.issue_approval_code`` checks the draft is open and
calls ``issue_code`` (drafts depend on auth, never the reverse).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
import uuid
from dataclasses import dataclass

from commandlog.auth.tokens import PermissionDeniedError, Principal
from commandlog.errors import CommandLogError
from storage import approval_codes as store
from storage.approval_codes import CodeGrant
from storage.postgres import Database

__all__ = ["CODE_TTL", "ApprovalCodeError", "CodeGrant", "IssuedCode", "check_may_approve", "issue_code",
           "redeem_approval_code"]

CODE_TTL = dt.timedelta(minutes=15)
"""How long a code may wait before it is used."""
_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base 32: no I, L, O, U
_CODE = re.compile(r"^[0-9A-HJKMNP-TV-Z]{12}$")
_TYPOS = str.maketrans({"O": "0", "I": "1", "L": "1"})


class ApprovalCodeError(CommandLogError):
    """An approval code cannot be used for this decision; the message says why (the field is ``approval_code``)."""

    field = "approval_code"

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"approval_code: {reason}")


@dataclass(frozen=True, kw_only=True)
class IssuedCode:
    """A new code (shown once) and what it is good for."""

    code: str
    """The code to type into the form, ``ABCD-EFGH-JKMN``."""
    draft_uuid: uuid.UUID
    """The draft it approves (or rejects, or edits)."""
    draft_version: int
    """The draft version it is good for."""
    subject: str
    """Who will be recorded as the approver."""
    expires_at: dt.datetime
    """When it stops working."""

    def to_json(self) -> dict:
        """A JSON-ready map."""
        return {"approval_code": self.code, "draft_uuid": str(self.draft_uuid), "draft_version": self.draft_version,
                "subject": self.subject, "expires_at": self.expires_at.isoformat()}


def check_may_approve(principal: Principal) -> None:
    """Refuse a token that may not decide on drafts (codes are issued to operator and admin tokens only)."""
    if not principal.satisfies("operator"):
        raise PermissionDeniedError(f"approval codes are issued to operator tokens; this token has {principal.role}")


def issue_code(db: Database, principal: Principal, *, draft_uuid: uuid.UUID, draft_version: int, tenant_id: str,
               ttl: dt.timedelta = CODE_TTL) -> IssuedCode:
    """A code for ``draft_uuid`` at ``draft_version`` (of ``tenant_id``), issued to ``principal`` (an operator or
    admin token); the caller has checked that this version is open for a decision."""
    check_may_approve(principal)
    raw = "".join(secrets.choice(_ALPHABET) for _ in range(12))
    expires = store.insert_code(db, code_sha256=_digest(raw), draft_uuid=draft_uuid, draft_version=draft_version,
                                tenant_id=tenant_id, token_id=principal.token_id, subject=principal.actor, ttl=ttl)
    return IssuedCode(code="-".join(raw[i:i + 4] for i in range(0, 12, 4)), draft_uuid=draft_uuid,
                      draft_version=draft_version, subject=principal.actor, expires_at=expires)


def redeem_approval_code(db: Database, code: str, *, draft_uuid: uuid.UUID, draft_version: int) -> CodeGrant:
    """Use ``code`` for ``draft_uuid`` at ``draft_version``, once; the grant names the operator to record.

    Raises ApprovalCodeError saying why when the code cannot be used (then it stays as it was, unless it was used).
    """
    raw = _normalise(code)
    if not _CODE.match(raw):
        raise ApprovalCodeError("not an approval code (12 letters and digits, like ABCD-EFGH-JKMN); ask for one "
                                "with `cmdlog draft approval-code <draft> --token <operator token>`")
    digest = _digest(raw)
    grant = store.redeem_code(db, digest, draft_uuid=draft_uuid, draft_version=draft_version)
    if grant is not None:
        return grant
    row = store.find_code(db, digest)
    if row is None:
        raise ApprovalCodeError("unknown code (mistyped, or never issued)")
    if row.used_at is not None:
        raise ApprovalCodeError(f"this code was already used (at {row.used_at:%Y-%m-%d %H:%M:%S %Z}); "
                                "ask for a new one")
    if row.draft_uuid != draft_uuid or row.draft_version != draft_version:
        raise ApprovalCodeError(f"this code is for draft {row.draft_uuid} version {row.draft_version}, not for draft "
                                f"{draft_uuid} version {draft_version} (an edit makes a new version); ask for a new "
                                "one")
    if row.expired:
        raise ApprovalCodeError(f"this code has expired (codes last {int(CODE_TTL.total_seconds() // 60)} minutes); "
                                "ask for a new one")
    if row.role not in ("operator", "admin"):
        raise ApprovalCodeError(f"this code was issued to a {row.role} token; only operator tokens may decide")
    if not row.token_valid:
        raise ApprovalCodeError("the token this code was issued to was revoked or has expired")
    raise ApprovalCodeError("this code was already used; ask for a new one")  # a concurrent redemption won


def _normalise(code: str) -> str:
    return "".join(ch for ch in str(code or "").upper() if ch not in "- \t").translate(_TYPOS)


def _digest(raw: str) -> bytes:
    return hashlib.sha256(raw.encode()).digest()
