"""``/api/drafts``: create, list, read, edit and project drafts; approve them with an operator token.

A tenant token works on its own tenant's drafts; an admin token names the tenant with ``?tenant=``. Creating,
editing and projecting change no domain state (a projection commits nothing), so a viewer token may do them;
approving executes the command and needs an operator (or admin) token, which may also ask for an approval code to
type into the Prefect UI's review form. Who created or approved is the token's subject, never a field of the body:
a body naming an ``approver`` is refused (422 naming the field). Errors use the app's one error handler.
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from commandlog.auth.tokens import PermissionDeniedError, Principal
from commandlog.drafts.review import issue_approval_code
from commandlog.drafts.service import DraftService
from commandlog.web.auth import require_role
from storage.drafts import DraftRow

router = APIRouter(prefix="/api/drafts", tags=["drafts"])


class NewDraft(BaseModel):
    """A draft to create."""

    cmd_class: str = Field(description="Registered command class, e.g. `billing.RenameCustomer`.")
    body: dict[str, Any] = Field(description="The command body as a JSON map.")


class DraftEdit(BaseModel):
    """An edit: the version you edited, and the body (whole, or only the fields to change with `merge`)."""

    version: int = Field(ge=1, description="The version you are editing; an older one is answered with 409.")
    body: dict[str, Any] = Field(description="The new body, or the fields to change when `merge` is true.")
    merge: bool = Field(True, description="Change only the given top-level fields (true) or replace the body.")


class DraftApproval(BaseModel):
    """An approval of the projection you reviewed; the approver recorded is the token's subject."""

    model_config = ConfigDict(extra="forbid")  # an "approver" in the body is refused, not silently dropped

    comment: str | None = Field(None, max_length=2000)
    fingerprint: str | None = Field(None, description="Fingerprint of the projection you reviewed.")


def _tenant(principal: Principal, tenant: str | None) -> str:
    if principal.is_admin:
        if not tenant:
            raise PermissionDeniedError("tenant: an admin token must name the tenant (?tenant=…)")
        return tenant
    if tenant is not None and tenant != principal.tenant_id:
        raise PermissionDeniedError("tenant: this token may only use its own tenant's drafts")
    return principal.own_tenant


def _drafts(request: Request) -> DraftService:
    return DraftService(request.app.state.bus)


def _json(d: DraftRow) -> dict[str, Any]:
    out = {k: getattr(d, k) for k in DraftRow.__dataclass_fields__}
    return {k: (str(v) if isinstance(v, uuid.UUID) else v.isoformat() if hasattr(v, "isoformat") else v)
            for k, v in out.items()}


TenantQuery = Query(None, description="Admin tokens only: the tenant.")


@router.post("", status_code=201, summary="Create a draft (validated; errors name the field)")
async def create(request: Request, new: NewDraft, tenant: str | None = TenantQuery,
                 principal: Principal = Depends(require_role("viewer"))):
    """A new open draft of `cmd_class` with `body`."""
    d = await run_in_threadpool(_drafts(request).create, _tenant(principal, tenant), principal.actor,
                                cmd_class=new.cmd_class, body=new.body)
    return JSONResponse(_json(d), status_code=201)


@router.get("", summary="The tenant's drafts, most recently changed first")
async def list_drafts(request: Request, tenant: str | None = TenantQuery,
                      status: Literal["open", "executed", "rejected", "discarded"] | None = None,
                      limit: int = Query(50, ge=1, le=1000),
                      principal: Principal = Depends(require_role("viewer"))) -> dict:
    """Drafts of the caller's tenant (read under row-level security)."""
    rows = await run_in_threadpool(_drafts(request).list, _tenant(principal, tenant), status=status, limit=limit)
    return {"drafts": [_json(d) for d in rows]}


@router.get("/{draft_uuid}", summary="One draft")
async def get(request: Request, draft_uuid: uuid.UUID, tenant: str | None = TenantQuery,
              principal: Principal = Depends(require_role("viewer"))) -> dict:
    """The draft with its body, version, status and last projection."""
    return _json(await run_in_threadpool(_drafts(request).get, draft_uuid, tenant_id=_tenant(principal, tenant)))


@router.patch("/{draft_uuid}", summary="Edit a draft (optimistic concurrency on `version`)")
async def patch(request: Request, draft_uuid: uuid.UUID, change: DraftEdit, tenant: str | None = TenantQuery,
                principal: Principal = Depends(require_role("viewer"))):
    """The edited draft; 422 (draft unchanged) for an invalid body, 409 naming the current version when stale."""
    d = await run_in_threadpool(_drafts(request).edit, draft_uuid, tenant_id=_tenant(principal, tenant),
                                body=change.body, expected_version=change.version, merge=change.merge)
    return _json(d)


@router.post("/{draft_uuid}/projection", summary="Project a draft (commits nothing)")
async def project(request: Request, draft_uuid: uuid.UUID, tenant: str | None = TenantQuery,
                  principal: Principal = Depends(require_role("viewer"))):
    """Its would-be result, events, before/after diff of its subjects, and the fingerprint to approve with."""
    p = await run_in_threadpool(_drafts(request).project, draft_uuid, tenant_id=_tenant(principal, tenant),
                                actor=principal.actor)
    return p.to_json()


@router.post("/{draft_uuid}/approval", summary="Approve a draft: execute it exactly once (operator)")
async def approve(request: Request, draft_uuid: uuid.UUID, approval: DraftApproval, tenant: str | None = TenantQuery,
                  principal: Principal = Depends(require_role("operator"))):
    """Executes the projected version; 409 when already executed (naming the command) or the projection is stale."""
    a = await run_in_threadpool(_drafts(request).approve, draft_uuid, tenant_id=_tenant(principal, tenant),
                                approver=principal.actor, comment=approval.comment, fingerprint=approval.fingerprint)
    return a.to_json()


@router.post("/{draft_uuid}/approval-code", status_code=201,
             summary="A single-use code to approve this draft version in the Prefect UI (operator)")
async def approval_code(request: Request, draft_uuid: uuid.UUID, tenant: str | None = TenantQuery,
                        principal: Principal = Depends(require_role("operator"))) -> dict:
    """`{approval_code, draft_uuid, draft_version, subject, expires_at}`: type the code into the draft-approval form;
    the decision is recorded as this token's subject. Good once, for the current version, for 15 minutes."""
    issued = await run_in_threadpool(issue_approval_code, _drafts(request), principal, draft_uuid,
                                     tenant_id=_tenant(principal, tenant))
    return issued.to_json()
