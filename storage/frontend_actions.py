"""The ``frontend_action`` table: insert a batch of reported actions, read a tenant's actions back (under RLS)."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row

from storage.postgres import Database

INSERT = """
INSERT INTO frontend_action (action_uuid, tenant_id, actor_id, action, payload, correlation_id, occurred_at, retention)
SELECT * FROM unnest(%s::uuid[], %s::text[], %s::text[], %s::text[], %s::jsonb[], %s::uuid[], %s::timestamptz[],
                     %s::text[])
ON CONFLICT DO NOTHING
RETURNING action_uuid"""

_COLUMNS = "action_uuid, tenant_id, actor_id, action, payload, correlation_id, occurred_at"


@dataclass(frozen=True, kw_only=True)
class FrontendActionRow:
    """One frontend action, as stored."""

    action_uuid: uuid.UUID
    """Its id (time-ordered; a client may choose it so that a retried batch is stored once)."""
    tenant_id: str
    """The tenant of the token that reported it."""
    actor_id: str
    """Who acted in the frontend."""
    action: str
    """Dotted action name, e.g. ``invoice.opened``."""
    payload_json: str
    """The payload as JSON text (at most 16 KiB)."""
    correlation_id: uuid.UUID | None
    """Links the action to the commands it triggered."""
    occurred_at: dt.datetime
    """When it happened in the frontend."""
    retention: str = "short_lived"
    """Retention class of the row."""


def insert_actions(conn: psycopg.Connection, rows: list[FrontendActionRow]) -> set[uuid.UUID]:
    """Insert ``rows`` in one statement on ``conn``; returns the ids actually inserted (a repeated id is skipped)."""
    if not rows:
        return set()
    cols = [[getattr(r, f) for r in rows] for f in ("action_uuid", "tenant_id", "actor_id", "action", "payload_json",
                                                    "correlation_id", "occurred_at", "retention")]
    return {r[0] for r in conn.execute(INSERT, cols).fetchall()}


def tenant_actions(db: Database, tenant_id: str, *, correlation_id: uuid.UUID | None = None,
                   since: dt.datetime | None = None,
                   limit: int = 100) -> list[dict[str, Any]]:
    """A tenant's actions, newest first, read through its row-level-security session."""
    where: list[str] = ["tenant_id = %s"]
    params: list[object] = [tenant_id]
    if correlation_id is not None:
        where.append("correlation_id = %s")
        params.append(correlation_id)
    if since is not None:
        where.append("occurred_at >= %s")
        params.append(since)
    params.append(limit)
    sql = (f"SELECT {_COLUMNS} FROM frontend_action WHERE {' AND '.join(where)} "
           "ORDER BY occurred_at DESC, action_uuid DESC LIMIT %s")
    with db.tenant_session(tenant_id) as conn, conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(sql, params).fetchall()


def all_actions_since(db: Database, since: dt.datetime, *, tenant_id: str | None = None,
                      limit: int = 1000) -> list[dict]:
    """Actions of every tenant (or one) since ``since``, oldest first, without payloads (admin backfill)."""
    where: list[str] = ["occurred_at >= %s"]
    params: list[object] = [since]
    if tenant_id is not None:
        where.append("tenant_id = %s")
        params.append(tenant_id)
    params.append(limit)
    sql = (f"SELECT action_uuid, tenant_id, actor_id, action, NULL::jsonb AS payload, correlation_id, occurred_at "
           f"FROM frontend_action WHERE {' AND '.join(where)} ORDER BY occurred_at, action_uuid LIMIT %s")
    with db.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(sql, params).fetchall()
