"""A reviewer's decision on a draft: the markdown they read, and applying what they chose.

Used by the ``draft-approval`` flow (its tasks wrap these) and usable without Prefect. A decision is approve or
reject, with an approval code (``commandlog.auth.approval_codes``: it names the operator, never the form), a comment,
and optionally an edited body (JSON text): an edit is saved and asks for a new review instead of deciding; an
approval whose projection went stale asks for a new review too. Every decision spends its code first (once, for the
reviewed version), so a refused code changes nothing and the review goes on.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import asdict, dataclass
from typing import Any, Literal

from commandlog.auth.approval_codes import CODE_TTL, IssuedCode, check_may_approve, issue_code, redeem_approval_code
from commandlog.auth.tokens import Principal
from commandlog.drafts.bodies import to_json_map
from commandlog.drafts.errors import (
    ApprovalCodeError,
    DraftAlreadyExecutedError,
    DraftConflictError,
    DraftExecutionError,
    DraftNotOpenError,
    DraftValidationError,
    ProjectionRequiredError,
    StaleProjectionError,
)
from commandlog.drafts.projection import Projection
from commandlog.drafts.service import DraftService
from commandlog.redaction import WITHHELD, redact
from storage.drafts import DraftRow

ReviewOutcome = Literal["approved", "rejected", "already_executed", "closed", "edited", "review_again"]
FINAL: frozenset[str] = frozenset({"approved", "rejected", "already_executed", "closed"})


@dataclass(frozen=True, kw_only=True)
class ReviewResult:
    """What applying a decision did; ``outcome`` in ``FINAL`` ends the review."""

    outcome: ReviewOutcome
    """What happened."""
    message: str
    """One sentence for the reviewer (shown in the next review when the review goes on)."""
    draft_uuid: str
    """The draft."""
    cmd_uuid: str | None = None
    """The command the draft executed as (approved, already_executed)."""
    decided_by: str | None = None
    """Who decided."""

    def summary(self) -> str:
        """One line for the flow run's log and final state:
        ``draft <uuid> approved by <who> and executed as cmd <uuid>``."""
        if self.outcome == "approved":
            return f"draft {self.draft_uuid} approved by {self.decided_by} and executed as cmd {self.cmd_uuid}"
        if self.outcome == "rejected":
            return f"draft {self.draft_uuid} rejected by {self.decided_by}"
        return f"draft {self.draft_uuid} {self.outcome.replace('_', ' ')}: {self.message}"

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready map (the flow's return value), with the ``summary`` line."""
        return asdict(self) | {"summary": self.summary()}


def apply_decision(drafts: DraftService, draft_uuid: uuid.UUID, *, decision: Literal["approve", "reject"],
                   approval_code: str, comment: str = "", edited_body: str = "", reviewed_version: int,
                   reviewed_fingerprint: str) -> ReviewResult:
    """Apply one reviewer decision on what they reviewed (``reviewed_version`` / ``reviewed_fingerprint``), as the
    operator ``approval_code`` was issued to; a refused code asks for a new review and changes nothing."""
    d = str(draft_uuid)
    body = None
    if edited_body.strip():  # checked before the code is spent: a typo in the JSON costs no code
        try:
            body = json.loads(edited_body)
        except json.JSONDecodeError as e:
            return ReviewResult(outcome="review_again", draft_uuid=d,
                                message=f"The edited body is not valid JSON ({e}); nothing was changed.")
    try:
        approver = redeem_approval_code(drafts.db, approval_code, draft_uuid=uuid.UUID(d),
                                        draft_version=reviewed_version).subject
    except ApprovalCodeError as e:
        return ReviewResult(outcome="review_again", draft_uuid=d, message=f"Not done: {e}")
    try:
        if body is not None:
            draft = drafts.get(draft_uuid)
            drafts.edit(draft_uuid, tenant_id=draft.tenant_id, body=body, expected_version=reviewed_version)
            return ReviewResult(outcome="edited", draft_uuid=d, message=f"{approver} edited the body; this is the "
                                "projection of the new version (its approval needs a new code).")
        if decision == "reject":
            drafts.reject(draft_uuid, rejecter=approver, comment=comment or None)
            return ReviewResult(outcome="rejected", draft_uuid=d, decided_by=approver,
                                message=f"Rejected by {approver}" + (f": {comment}" if comment else "."))
        approval = drafts.approve(draft_uuid, approver=approver, comment=comment or None,
                                  fingerprint=reviewed_fingerprint)
        return ReviewResult(outcome="approved", draft_uuid=d, cmd_uuid=str(approval.cmd_uuid), decided_by=approver,
                            message=f"Approved by {approver}; executed as {approval.cmd_uuid}.")
    except DraftAlreadyExecutedError as e:
        return ReviewResult(outcome="already_executed", draft_uuid=d, cmd_uuid=str(e.cmd_uuid), message=str(e))
    except DraftNotOpenError as e:
        return ReviewResult(outcome="closed", draft_uuid=d, message=str(e))
    except (DraftValidationError, DraftConflictError, StaleProjectionError, ProjectionRequiredError,
            DraftExecutionError) as e:
        return ReviewResult(outcome="review_again", draft_uuid=d, message=f"Not done: {e}")


def issue_approval_code(drafts: DraftService, principal: Principal, draft_uuid: uuid.UUID | str, *,
                        tenant_id: str | None, ttl: dt.timedelta = CODE_TTL) -> IssuedCode:
    """A code for the open draft's current version, issued to ``principal`` (an operator or admin token).

    ``tenant_id`` is the tenant the caller may act for (None for an admin acting on any tenant's draft).
    """
    check_may_approve(principal)  # first: a token that may not decide learns nothing about the draft
    draft = drafts.get(draft_uuid, tenant_id=tenant_id)
    if draft.status == "executed":
        raise DraftAlreadyExecutedError(draft.draft_uuid, draft.executed_as_cmd_uuid)
    if draft.status != "open":
        raise DraftNotOpenError(draft.draft_uuid, draft.status)
    return issue_code(drafts.db, principal, draft_uuid=draft.draft_uuid, draft_version=draft.version,
                      tenant_id=draft.tenant_id, ttl=ttl)


def review_markdown(drafts: DraftService, draft: DraftRow, projection: Projection, *, note: str | None = None) -> str:
    """The reviewer's page: the body (secrets withheld), the projected outcome and the before/after diff."""
    command = drafts.command_of(draft)
    excluded = type(command).body_excluded()  # e.g. a card token: never shown outside the tenant's own data
    body = {"(body excluded)": WITHHELD} if excluded else redact(command, to_json_map(command))
    out = [f"# Draft `{draft.draft_uuid}`", "",
           f"**{draft.cmd_class}** (draft version {draft.version}) for tenant **{draft.tenant_id}**, "
           f"created by {draft.created_by}. Subjects: {', '.join(draft.subjects) or 'none'}.", ""]
    if note:
        out += [f"> {note}", ""]
    out += ["## Body (sensitive fields withheld)", "", "```json", json.dumps(body, indent=2, ensure_ascii=False),
            "```", "", f"## Projected outcome: {projection.status}", ""]
    if projection.status == "succeeded":
        out += [f"Result: `{json.dumps(projection.result, ensure_ascii=False)}`", ""]
    else:
        out += [f"Would fail: **{projection.error_type}**: {projection.error_message}", ""]
    if projection.events:
        out += ["| event | payload |", "|---|---|"]
        out += [f"| {e['event_type']} | `{_cell(e['payload'])}` |" for e in projection.events]
        out.append("")
    out += ["## Changes (before → after)", ""]
    if projection.before is None:
        out += ["No subject loader is registered for this domain: no before/after state to show.", ""]
    else:
        out += ["| subject | change | field | before | after |", "|---|---|---|---|---|"]
        for entry in projection.diff:
            rows = entry["fields"] or [{"path": "", "before": "", "after": ""}]
            out += [f"| {entry['subject']} | {entry['change']} | {f['path']} | {_cell(f['before'])} | "
                    f"{_cell(f['after'])} |" for f in rows]
        out.append("")
    out += [f"Projection fingerprint: `{projection.fingerprint}`", "",
            "Approve to execute exactly this version, reject with a comment, or paste an edited body (JSON) to "
            "see a new projection first.", "",
            f"Every decision needs an **approval code** for version {draft.version}, issued to your operator token: "
            f"`cmdlog draft approval-code {draft.draft_uuid} --token <your token>` or "
            f"`POST /api/drafts/{draft.draft_uuid}/approval-code`. It is recorded as you; it works once, for 15 "
            "minutes."]
    return "\n".join(out)


def _cell(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text.replace("|", "\\|").replace("\n", " ")[:200]
