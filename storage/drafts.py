"""The ``command_draft`` repository: rows in, rows out, every change conditional on the state it expects.

Each write is a single conditional statement (``… WHERE status = 'open' AND version = %s``) so two writers can never
both win; the caller learns from the returned row (or its absence) whether it did. ``approval_lock`` serialises the
approvals of one draft across processes with a Postgres advisory lock held on a dedicated connection.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import class_row

from storage.errors import OperationalError
from storage.locks import advisory_lock
from storage.rows import one_row


class ApprovalLockTimeoutError(OperationalError):
    """Another approval of the same draft held its lock for longer than the timeout."""


@dataclass(frozen=True, kw_only=True)
class DraftRow:
    """One ``command_draft`` row."""

    draft_uuid: uuid.UUID
    """Id of the draft."""
    tenant_id: str
    """Tenant it belongs to."""
    cmd_class: str
    """Registered command class of the body."""
    cmd_version: int
    """Schema version of the body."""
    cmd_body: dict[str, Any]
    """The command body as a JSON map (sensitive fields included: the table is tenant-scoped)."""
    subjects: list[str]
    """Entities the body touches."""
    version: int
    """Optimistic-concurrency version, bumped by every edit."""
    status: str
    """``open``, ``executed``, ``rejected`` or ``discarded``."""
    created_by: str
    """Who created it."""
    created_at: datetime
    """When it was created."""
    updated_at: datetime
    """When it last changed."""
    executed_at: datetime | None
    """When its command committed."""
    executed_as_cmd_uuid: uuid.UUID | None
    """The command it executed as."""
    projection: dict[str, Any] | None
    """The last projection (result, events, diff), or None."""
    projection_fingerprint: str | None
    """Hash of the subjects' state the last projection was based on."""
    projected_version: int | None
    """The draft version the last projection projected."""
    projected_at: datetime | None
    """When it was last projected."""
    decided_by: str | None
    """Who approved or rejected it."""
    decided_at: datetime | None
    """When it was approved or rejected."""
    decision_comment: str | None
    """The approver's or rejecter's comment."""


COLUMNS = ", ".join(DraftRow.__dataclass_fields__)
_LOCK_CLASS = 0x64726674  # 'drft': first half of the advisory lock key of a draft's approval


def insert(conn: psycopg.Connection, *, draft_uuid: uuid.UUID, tenant_id: str, cmd_class: str, cmd_version: int,
           body_json: str, subjects: list[str], created_by: str) -> DraftRow:
    """Insert a new open draft."""
    with conn.cursor(row_factory=class_row(DraftRow)) as cur:
        return one_row(cur.execute(
            f"INSERT INTO command_draft (draft_uuid, tenant_id, cmd_class, cmd_version, cmd_body, subjects, created_by)"
            f" VALUES (%s, %s, %s, %s, %s::jsonb, %s, %s) RETURNING {COLUMNS}",
            (draft_uuid, tenant_id, cmd_class, cmd_version, body_json, subjects, created_by)))


def get(conn: psycopg.Connection, draft_uuid: uuid.UUID, *, tenant_id: str | None = None) -> DraftRow | None:
    """The draft, or None (also when it belongs to another tenant than ``tenant_id``)."""
    sql = f"SELECT {COLUMNS} FROM command_draft WHERE draft_uuid = %s"
    params: tuple = (draft_uuid,)
    if tenant_id is not None:
        sql += " AND tenant_id = %s"
        params += (tenant_id,)
    with conn.cursor(row_factory=class_row(DraftRow)) as cur:
        return cur.execute(sql, params).fetchone()


def list_for_tenant(conn: psycopg.Connection, tenant_id: str, *, status: str | None = None,
                    limit: int = 50) -> list[DraftRow]:
    """The tenant's drafts, most recently changed first."""
    sql = f"SELECT {COLUMNS} FROM command_draft WHERE tenant_id = %s"
    params: tuple = (tenant_id,)
    if status is not None:
        sql += " AND status = %s"
        params += (status,)
    sql += " ORDER BY updated_at DESC, draft_uuid DESC LIMIT %s"
    with conn.cursor(row_factory=class_row(DraftRow)) as cur:
        return cur.execute(sql, (*params, limit)).fetchall()


def _update(conn: psycopg.Connection, assignments: str, where: str, params: tuple) -> DraftRow | None:
    with conn.cursor(row_factory=class_row(DraftRow)) as cur:
        return cur.execute(
            f"UPDATE command_draft SET {assignments}, updated_at = now() WHERE {where} RETURNING {COLUMNS}",
            params).fetchone()


def update_body(conn: psycopg.Connection, draft_uuid: uuid.UUID, tenant_id: str, *, expected_version: int,
                body_json: str, cmd_version: int, subjects: list[str]) -> DraftRow | None:
    """Replace the body of an open draft at ``expected_version`` (bumps the version, forgets the projection)."""
    return _update(
        conn, "cmd_body = %s::jsonb, cmd_version = %s, subjects = %s, version = version + 1, projection = NULL, "
              "projection_fingerprint = NULL, projected_version = NULL, projected_at = NULL",
        "draft_uuid = %s AND tenant_id = %s AND status = 'open' AND version = %s",
        (body_json, cmd_version, subjects, draft_uuid, tenant_id, expected_version))


def save_projection(conn: psycopg.Connection, draft_uuid: uuid.UUID, *, version: int, projection_json: str,
                    fingerprint: str) -> DraftRow | None:
    """Record the projection of ``version``; None when the draft moved on (edited, decided) meanwhile."""
    with conn.cursor(row_factory=class_row(DraftRow)) as cur:
        # updated_at is left alone: projecting does not change the draft itself.
        return cur.execute(
            f"UPDATE command_draft SET projection = %s::jsonb, projection_fingerprint = %s, projected_version = %s, "
            f"projected_at = now() WHERE draft_uuid = %s AND status = 'open' AND version = %s RETURNING {COLUMNS}",
            (projection_json, fingerprint, version, draft_uuid, version)).fetchone()


def mark_executed(conn: psycopg.Connection, draft_uuid: uuid.UUID, *, version: int, cmd_uuid: uuid.UUID,
                  decided_by: str, comment: str | None) -> DraftRow | None:
    """Open draft at ``version`` → executed as ``cmd_uuid``; None when another caller got there first."""
    return _update(
        conn, "status = 'executed', executed_at = now(), executed_as_cmd_uuid = %s, decided_by = %s, "
              "decided_at = now(), decision_comment = %s",
        "draft_uuid = %s AND status = 'open' AND version = %s", (cmd_uuid, decided_by, comment, draft_uuid, version))


def mark_rejected(conn: psycopg.Connection, draft_uuid: uuid.UUID, tenant_id: str, *, decided_by: str,
                  comment: str | None) -> DraftRow | None:
    """Open draft → rejected with the rejecter and comment; None when it is not open."""
    return _update(conn, "status = 'rejected', decided_by = %s, decided_at = now(), decision_comment = %s",
                   "draft_uuid = %s AND tenant_id = %s AND status = 'open'",
                   (decided_by, comment, draft_uuid, tenant_id))


def mark_discarded(conn: psycopg.Connection, draft_uuid: uuid.UUID, tenant_id: str, *,
                   decided_by: str) -> DraftRow | None:
    """Open draft → discarded; None when it is not open."""
    return _update(conn, "status = 'discarded', decided_by = %s, decided_at = now()",
                   "draft_uuid = %s AND tenant_id = %s AND status = 'open'", (decided_by, draft_uuid, tenant_id))


@contextlib.contextmanager
def approval_lock(url: str, draft_uuid: uuid.UUID, *, timeout_s: float = 60.0) -> Iterator[None]:
    """Hold the draft's approval lock (one holder at a time, across processes) for the ``with`` block.

    A dedicated connection, not a pooled one (``storage.locks``): waiters must not starve the pool that the winner
    needs to execute. The lock is session-level and dies with the connection, so a crashed holder never leaves it
    taken.
    """
    with advisory_lock(url, (_LOCK_CLASS, str(draft_uuid)), wait=timeout_s, busy=lambda: ApprovalLockTimeoutError(
            f"draft {draft_uuid} is being approved by another caller (waited {timeout_s:g}s)")):
        yield
