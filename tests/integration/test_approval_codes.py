"""Approval codes against real Postgres, written as the attack: a forged, used, expired, other-draft, other-version,
viewer-token or revoked-token code approves nothing; a valid one works once and names its operator; of many
concurrent redemptions exactly one wins. Decisions go through ``apply_decision``, what the draft-approval flow runs."""

from __future__ import annotations

import datetime as dt
import secrets
import threading

import pytest

from commandlog.auth.approval_codes import _digest, _normalise, redeem_approval_code
from commandlog.auth.tokens import PermissionDeniedError, authenticate, create_token, revoke_token
from commandlog.drafts.errors import ApprovalCodeError
from commandlog.drafts.review import apply_decision, issue_approval_code
from commandlog.drafts.service import DraftService
from examples.billing import commands as c
from storage import approval_codes as store


@pytest.fixture
def drafts(bus) -> DraftService:
    return DraftService(bus)


@pytest.fixture
def draft(bus, ctx, tenant, drafts):
    bus.execute(c.CreateCustomer(customer_id=9, name="Blue Bakery", email="b@blue.example"), ctx)
    d = drafts.create(tenant, "alice", c.RenameCustomer(customer_id=9, name="Nova Labs"))
    drafts.project(d.draft_uuid)
    return drafts.get(d.draft_uuid)


def _operator(db, tenant, subject=None):
    return authenticate(db, create_token(db, tenant=tenant, role="operator", subject=subject or f"op@{tenant}"))


def _decide(drafts, draft, code, *, decision="approve", edited_body=""):
    return apply_decision(drafts, draft.draft_uuid, decision=decision, approval_code=code, edited_body=edited_body,
                          reviewed_version=draft.version, reviewed_fingerprint=draft.projection_fingerprint)


def _log(db, draft_uuid):
    with db.connection() as conn:
        return conn.execute("SELECT status, actor_id FROM command_log WHERE draft_uuid = %s", (draft_uuid,)).fetchall()


def test_a_valid_code_approves_once_as_its_operator_and_a_reuse_approves_nothing(drafts, db, tenant, draft):
    code = issue_approval_code(drafts, _operator(db, tenant), draft.draft_uuid, tenant_id=tenant).code

    first = _decide(drafts, draft, code.lower())  # typed in lower case, still the same code
    again = _decide(drafts, draft, code)

    assert (first.outcome, first.decided_by) == ("approved", f"op@{tenant}")
    assert again.outcome == "review_again" and "approval_code: this code was already used" in again.message
    assert _log(db, draft.draft_uuid) == [("succeeded", f"op@{tenant}")]
    assert drafts.get(draft.draft_uuid).decided_by == f"op@{tenant}"


@pytest.mark.parametrize("forged", ["ceo@acme", "AAAA-BBBB-CCCC", "", "0000-0000-0000-0000"])
def test_a_forged_code_approves_nothing(drafts, db, draft, forged):
    result = _decide(drafts, draft, forged)
    assert result.outcome == "review_again" and "approval_code:" in result.message
    assert drafts.get(draft.draft_uuid).status == "open" and _log(db, draft.draft_uuid) == []


def test_an_expired_code_approves_nothing(drafts, db, tenant, draft):
    code = issue_approval_code(drafts, _operator(db, tenant), draft.draft_uuid, tenant_id=tenant).code
    with db.connection() as conn:  # no clock to wait for: the row is moved into the past
        conn.execute("UPDATE draft_approval_code SET expires_at = now() - interval '1 second' "
                     "WHERE code_sha256 = %s", (_digest(_normalise(code)),))
    result = _decide(drafts, draft, code)
    assert result.outcome == "review_again" and "this code has expired" in result.message
    assert _log(db, draft.draft_uuid) == []


def test_a_code_for_another_draft_or_an_older_version_approves_nothing(drafts, db, tenant, draft):
    operator = _operator(db, tenant)
    other = drafts.create(tenant, "alice", c.RenameCustomer(customer_id=9, name="Other"))
    other_code = issue_approval_code(drafts, operator, other.draft_uuid, tenant_id=tenant).code
    result = _decide(drafts, draft, other_code)
    assert result.outcome == "review_again" and f"this code is for draft {other.draft_uuid} version 1" in result.message

    old_code = issue_approval_code(drafts, operator, draft.draft_uuid, tenant_id=tenant).code
    drafts.edit(draft.draft_uuid, tenant_id=tenant, body={"name": "Prime"}, expected_version=1, merge=True)
    drafts.project(draft.draft_uuid)
    edited = drafts.get(draft.draft_uuid)
    result = _decide(drafts, edited, old_code)
    assert result.outcome == "review_again" and "version 1, not for draft" in result.message
    assert _log(db, draft.draft_uuid) == []
    assert _decide(drafts, edited, old_code).outcome == "review_again"  # not spent by the refusals either


def test_a_viewer_token_gets_no_code_and_a_code_stored_for_one_approves_nothing(drafts, db, tenant, draft):
    viewer = authenticate(db, create_token(db, tenant=tenant, role="viewer", subject=f"v@{tenant}"))
    with pytest.raises(PermissionDeniedError, match="operator"):
        issue_approval_code(drafts, viewer, draft.draft_uuid, tenant_id=tenant)
    raw = "".join(secrets.choice("VWXYZ") for _ in range(12))  # as if written for a viewer token by a bug or by hand
    store.insert_code(db, code_sha256=_digest(raw), draft_uuid=draft.draft_uuid, draft_version=draft.version,
                      tenant_id=tenant, token_id=viewer.token_id, subject=viewer.actor, ttl=dt.timedelta(minutes=5))
    result = _decide(drafts, draft, raw)
    assert result.outcome == "review_again" and "issued to a viewer token" in result.message
    assert _log(db, draft.draft_uuid) == []


def test_a_code_whose_token_was_revoked_approves_nothing(drafts, db, tenant, draft):
    operator = _operator(db, tenant)
    code = issue_approval_code(drafts, operator, draft.draft_uuid, tenant_id=tenant).code
    revoke_token(db, operator.token_id)
    result = _decide(drafts, draft, code)
    assert result.outcome == "review_again" and "revoked" in result.message
    assert _log(db, draft.draft_uuid) == []


def test_another_tenants_operator_gets_no_code(drafts, db, tenant, draft):
    from commandlog.drafts.errors import DraftNotFoundError

    stranger = _operator(db, tenant + "-x")
    with pytest.raises(DraftNotFoundError):
        issue_approval_code(drafts, stranger, draft.draft_uuid, tenant_id=stranger.tenant_id)


def test_a_reject_or_an_edit_is_recorded_as_the_codes_operator(drafts, db, tenant, draft):
    operator = _operator(db, tenant, f"carol@{tenant}")
    code = issue_approval_code(drafts, operator, draft.draft_uuid, tenant_id=tenant).code
    edited = _decide(drafts, draft, code, edited_body='{"customer_id": 9, "name": "Prime"}')
    assert edited.outcome == "edited" and edited.message.startswith(f"carol@{tenant} edited")
    drafts.project(draft.draft_uuid)
    v2 = drafts.get(draft.draft_uuid)
    code = issue_approval_code(drafts, operator, draft.draft_uuid, tenant_id=tenant).code
    rejected = _decide(drafts, v2, code, decision="reject")
    assert (rejected.outcome, drafts.get(draft.draft_uuid).decided_by) == ("rejected", f"carol@{tenant}")


def test_concurrent_redemptions_of_one_code_exactly_one_wins(drafts, db, tenant, draft):
    code = issue_approval_code(drafts, _operator(db, tenant), draft.draft_uuid, tenant_id=tenant).code
    barrier, grants, refusals = threading.Barrier(12), [], []

    def redeem() -> None:
        barrier.wait()
        try:
            grants.append(redeem_approval_code(db, code, draft_uuid=draft.draft_uuid, draft_version=draft.version))
        except ApprovalCodeError as e:
            refusals.append(str(e))

    threads = [threading.Thread(target=redeem) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(grants) == 1 and grants[0].subject == f"op@{tenant}"
    assert len(refusals) == 11 and all("already used" in r for r in refusals)


def test_a_token_has_a_subject_by_default_and_a_bad_subject_is_named(db, tenant):
    from commandlog.auth.tokens import TokenError

    token = create_token(db, tenant=tenant, role="viewer")
    principal = authenticate(db, token)
    assert principal.actor == principal.subject == f"token:{principal.token_id}"
    with pytest.raises(TokenError, match="^subject: "):
        create_token(db, tenant=tenant, role="viewer", subject="has spaces")
