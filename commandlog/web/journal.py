"""``GET /api/journal``: the journal timeline over HTTP, with the journal's filters and keyset paging.

A viewer or operator token reads its own tenant's full entries (under Postgres row-level security); an admin token
reads the lean global rows and may narrow them with ``tenant``.
"""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from commandlog.auth.tokens import PermissionDeniedError, Principal
from commandlog.journal import entries as journal
from commandlog.web.auth import require_role

router = APIRouter(prefix="/api", tags=["journal"])


class JournalPage(BaseModel):
    """One page of the journal, newest first."""

    entries: list[dict] = Field(description="Entries with who, when, what, outcome and their domain events.")
    next_cursor: str | None = Field(description="Pass as `cursor` for the next (older) page; null on the last.")


@router.get("/journal", response_model=JournalPage, summary="Journal timeline (newest first)")
async def get_journal(
    request: Request,
    principal: Principal = Depends(require_role("viewer")),
    tenant: str | None = Query(None, description="Admin only: restrict to one tenant (others: must be their own)."),
    subject: str | None = Query(None, description="An entity the command touched, e.g. `invoice:42`."),
    actor: str | None = Query(None, description="Who ran the command."),
    cmd_class: str | None = Query(None, description="Registered command class, e.g. `billing.RenameCustomer`."),
    status: str | None = Query(None, description="`succeeded`, `failed` or `rejected`."),
    since: dt.datetime | None = Query(None, description="Started at or after (ISO 8601; naive means UTC)."),
    until: dt.datetime | None = Query(None, description="Started before (ISO 8601; naive means UTC)."),
    correlation_id: str | None = Query(None, description="Correlation UUID shared by related commands."),
    cursor: str | None = Query(None, description="`next_cursor` of the previous page."),
    limit: int = Query(50, ge=1, le=journal.MAX_LIMIT, description="Entries per page."),
) -> JournalPage:
    """A page of the caller's journal: its tenant's full entries, or the lean global rows for an admin token."""
    if principal.is_admin:
        scope_tenant, admin = tenant, True
    else:
        if tenant is not None and tenant != principal.tenant_id:
            raise PermissionDeniedError("tenant: this token may only read its own tenant")
        scope_tenant, admin = principal.own_tenant, False
    page = await run_in_threadpool(
        journal.timeline, request.app.state.db, tenant=scope_tenant, admin=admin, subject=subject, actor=actor,
        cmd_class=cmd_class,
        status=status, since=since, until=until, correlation_id=correlation_id, cursor=cursor, limit=limit,
        replica=True)
    return JournalPage(entries=page.entries, next_cursor=page.next_cursor)
