"""``GET /api/journal/stats``: the Activity view's figures (``commandlog.journal.stats.activity``) over HTTP.

The tenant is the token's, always: a tenant token gets its own tenant's figures (read under row-level security from
Postgres, or from its own lake partitions), an admin token the figures of every tenant from the lean global log.
There is no ``tenant`` parameter; one given (in any case: ``Tenant``, ``TENANT_ID``) is refused rather than ignored,
so a client never believes it chose.

Limits: each Postgres statement runs under ``CMDLOG_STATS_TIMEOUT`` (``Settings.stats_timeout_s``, 10 s), and at
most ``LAKE_GATE.slots`` lake windows are computed at once per process (each opens a DuckDB of up to 1 GB); a
request waits ``LAKE_GATE.wait_s`` for a slot. Either limit answers 503 (``commandlog.web.errors``).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool

from commandlog.auth.tokens import PermissionDeniedError, Principal
from commandlog.journal import stats
from commandlog.journal.stats import LakeGate
from commandlog.web.auth import require_role

router = APIRouter(prefix="/api", tags=["journal"])
LAKE_GATE = LakeGate(slots=2, wait_s=5.0)
"""The process's lake slots for this endpoint (``commandlog.journal.stats.LakeGate``)."""
REFUSED_PARAMETERS = frozenset({"tenant", "tenant_id", "tenant-id", "tenantid"})


@router.get("/journal/stats", summary="Activity figures of the token's tenant over a window")
async def get_stats(
    request: Request,
    principal: Principal = Depends(require_role("viewer")),
    since: str | None = Query(None, description="Window start, ISO 8601 (naive means UTC); floored to the bucket. "
                                                "Default: 24 hours (hour buckets) or 30 days (day buckets) before "
                                                "`until`."),
    until: str | None = Query(None, description="Window end (exclusive), ISO 8601; ceiled to the bucket. Default: "
                                                "now."),
    bucket: str = Query("hour", description="`hour` or `day`; at most 1000 buckets per window."),
    top: int = Query(10, description="How many of the busiest actors to list (1-50)."),
    source: str = Query("auto", description="`auto` (Postgres for windows starting in the last 48 hours, else the "
                                            "lake plus the rows not exported yet), `postgres` or `lake`."),
) -> dict[str, Any]:
    """Commands per bucket by class, failed commands and failure rate per bucket, p95 duration per class and
    bucket, every class's totals and the top actors. The tenant comes from the token alone."""
    if any(name.strip().lower() in REFUSED_PARAMETERS for name in request.query_params):
        raise PermissionDeniedError("tenant: the figures are always the token's own tenant's; remove the parameter")
    tenant = None if principal.is_admin else principal.own_tenant
    settings = request.app.state.settings
    result = await run_in_threadpool(
        stats.activity, request.app.state.db, tenant=tenant, since=since, until=until, bucket=bucket, top=top,
        source=source, lake_uri=settings.lake, timeout_s=settings.stats_timeout_s, lake_gate=LAKE_GATE)
    return result.to_json()
