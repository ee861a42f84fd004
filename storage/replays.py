"""Replay storage: originals read from ``tenant_command_log``, replay requests and items (migration 0005).

Plain SQL over a psycopg connection; the caller owns the transaction. Item states: ``planned`` (selected),
``pending`` (a replay ``cmd_uuid`` assigned and committed before it runs), ``done`` (outcome known).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from storage.rows import one_row

SELECT_ORIGINALS = """
SELECT cmd_uuid, tenant_id, cmd_class, cmd_version, actor_id, correlation_id, status, error_type, error_message,
       started_at, cmd_body, result
  FROM tenant_command_log WHERE cmd_uuid = ANY(%s)
"""
SELECT_HEADS = """
SELECT cmd_uuid, tenant_id, cmd_class, cmd_version, actor_id, correlation_id, status, error_type, error_message,
       started_at, NULL, NULL
  FROM tenant_command_log WHERE cmd_uuid = ANY(%s)
"""


@dataclass(frozen=True, kw_only=True)
class OriginalRow:
    """An original command as the tenant log holds it (the full body, never the redacted global one)."""

    cmd_uuid: uuid.UUID
    """Id of the original."""
    tenant_id: str
    """Its tenant."""
    cmd_class: str
    """Registered class name."""
    cmd_version: int
    """Schema version of ``body``."""
    actor_id: str
    """Who ran it."""
    correlation_id: uuid.UUID
    """Its correlation."""
    status: str
    """``succeeded``, ``failed`` or ``rejected``."""
    error_type: str | None
    """Exception class of a failure."""
    error_message: str | None
    """Error message of a failure."""
    started_at: datetime
    """When it ran."""
    body: dict | None
    """Full body; None when never stored or purged."""
    result: Any
    """Recorded result (None on failure)."""


@dataclass(frozen=True, kw_only=True)
class ItemRow:
    """One ``replay_item`` row."""

    original_cmd_uuid: uuid.UUID
    """The original."""
    position: int
    """Order within the request (the originals' time order)."""
    state: str
    """``planned``, ``pending`` or ``done``."""
    replay_cmd_uuid: uuid.UUID | None
    """The replay's id once assigned."""
    outcome: str | None
    """``succeeded``, ``failed`` or ``not_replayable`` once done."""
    message: str | None
    """Error or refusal message."""


def load_originals(conn: psycopg.Connection, cmd_uuids: Sequence[uuid.UUID], *,
                   with_body: bool = True) -> dict[uuid.UUID, OriginalRow]:
    """The tenant-log rows of ``cmd_uuids`` (missing ids are absent); ``with_body=False`` leaves body and result
    out (None), for planning."""
    rows = conn.execute(SELECT_ORIGINALS if with_body else SELECT_HEADS, (list(cmd_uuids),)).fetchall()
    return {r[0]: _original(r) for r in rows}


def _original(r: tuple) -> OriginalRow:
    return OriginalRow(cmd_uuid=r[0], tenant_id=r[1], cmd_class=r[2], cmd_version=r[3], actor_id=r[4],
                       correlation_id=r[5], status=r[6], error_type=r[7], error_message=r[8], started_at=r[9],
                       body=r[10], result=r[11])


def select_uuids(conn: psycopg.Connection, *, tenant_id: str | None, cmd_class: str | None, status: str | None,
                 since: datetime | None, until: datetime | None, correlation_id: uuid.UUID | None,
                 include_replayed: bool, limit: int) -> list[uuid.UUID]:
    """Originals matching a filter, oldest first, at most ``limit``; replays themselves are never selected.

    Unless ``include_replayed``, an original that a replay already re-ran successfully is skipped.
    """
    where, params = _filter(tenant_id=tenant_id, cmd_class=cmd_class, status=status, since=since, until=until,
                            correlation_id=correlation_id, include_replayed=include_replayed)
    query = sql.SQL("SELECT t.cmd_uuid FROM tenant_command_log t WHERE {} ORDER BY t.started_at, t.cmd_uuid "
                    "LIMIT %s").format(where)
    rows = conn.execute(query, (*params, limit)).fetchall()
    return [r[0] for r in rows]


def count_selection(conn: psycopg.Connection, **filters: Any) -> int:
    """How many originals a filter matches (for the message when a selection exceeds its cap)."""
    where, params = _filter(**filters)
    query = sql.SQL("SELECT count(*) FROM tenant_command_log t WHERE {}").format(where)
    return one_row(conn.execute(query, params))[0]


def _filter(*, tenant_id: str | None, cmd_class: str | None, status: str | None, since: datetime | None,
            until: datetime | None, correlation_id: uuid.UUID | None,
            include_replayed: bool) -> tuple[sql.Composable, list]:
    clauses: list[sql.Composable] = [sql.SQL("t.replay_of IS NULL")]
    params: list[object] = []
    for column, value in (("tenant_id", tenant_id), ("cmd_class", cmd_class), ("status", status)):
        if value is not None:
            clauses.append(sql.SQL("t.{} = %s").format(sql.Identifier(column)))
            params.append(value)
    if correlation_id is not None:  # the keys from the global log's correlation index (migration 0021)
        clauses.append(sql.SQL("t.cmd_uuid IN (SELECT c.cmd_uuid FROM command_log c WHERE c.correlation_id = %s) "
                               "AND t.correlation_id = %s"))
        params += [correlation_id, correlation_id]
    if since is not None:
        clauses.append(sql.SQL("t.started_at >= %s"))
        params.append(since)
    if until is not None:
        clauses.append(sql.SQL("t.started_at < %s"))
        params.append(until)
    if not include_replayed:
        clauses.append(sql.SQL("NOT EXISTS (SELECT 1 FROM tenant_command_log r "
                               "WHERE r.replay_of = t.cmd_uuid AND r.status = 'succeeded')"))
    return sql.SQL(" AND ").join(clauses), params


def original_events(conn: psycopg.Connection, cmd_uuids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[dict]]:
    """The recorded domain events of each command, in emission order: ``{"type", "payload"}`` dicts."""
    rows = conn.execute("SELECT cmd_uuid, event_type, payload FROM domain_event WHERE cmd_uuid = ANY(%s) "
                        "ORDER BY cmd_uuid, occurred_at, event_uuid", (list(cmd_uuids),)).fetchall()
    events: dict[uuid.UUID, list[dict]] = {}
    for cmd_uuid, event_type, payload in rows:
        events.setdefault(cmd_uuid, []).append({"type": event_type, "payload": payload})
    return events


def create_request(conn: psycopg.Connection, request_id: uuid.UUID, *, mode: str, requested_by: str,
                   selection: dict) -> bool:
    """Insert the request; False when it already exists (a rerun)."""
    cur = conn.execute("INSERT INTO replay_request (request_id, mode, requested_by, selection) "
                       "VALUES (%s, %s, %s, %s) ON CONFLICT (request_id) DO NOTHING",
                       (request_id, mode, requested_by, Jsonb(selection)))
    return cur.rowcount == 1


def request_mode(conn: psycopg.Connection, request_id: uuid.UUID) -> str | None:
    """The mode of an existing request, None when there is none."""
    row = conn.execute("SELECT mode FROM replay_request WHERE request_id = %s", (request_id,)).fetchone()
    return row[0] if row else None


def plan_items(conn: psycopg.Connection, request_id: uuid.UUID, originals: Iterable[OriginalRow]) -> None:
    """Record the selected originals of a request (in the given order) as ``planned`` items."""
    rows = [(request_id, o.cmd_uuid, i, o.tenant_id, o.cmd_class, o.status, o.actor_id)
            for i, o in enumerate(originals)]
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO replay_item (request_id, original_cmd_uuid, position, tenant_id, cmd_class, "
                        "original_status, original_actor_id) VALUES (%s, %s, %s, %s, %s, %s, %s) "
                        "ON CONFLICT DO NOTHING", rows)


def planned_uuids(conn: psycopg.Connection, request_id: uuid.UUID) -> list[uuid.UUID]:
    """Every original of a request, in order."""
    rows = conn.execute("SELECT original_cmd_uuid FROM replay_item WHERE request_id = %s ORDER BY position",
                        (request_id,)).fetchall()
    return [r[0] for r in rows]


def load_items(conn: psycopg.Connection, request_id: uuid.UUID,
               cmd_uuids: Sequence[uuid.UUID]) -> dict[uuid.UUID, ItemRow]:
    """The items of ``cmd_uuids`` in a request."""
    rows = conn.execute("SELECT original_cmd_uuid, position, state, replay_cmd_uuid, outcome, message "
                        "FROM replay_item WHERE request_id = %s AND original_cmd_uuid = ANY(%s)",
                        (request_id, list(cmd_uuids))).fetchall()
    return {r[0]: ItemRow(original_cmd_uuid=r[0], position=r[1], state=r[2], replay_cmd_uuid=r[3], outcome=r[4],
                          message=r[5]) for r in rows}


def assign_replay_uuids(conn: psycopg.Connection, request_id: uuid.UUID,
                        assignments: Sequence[tuple[uuid.UUID, uuid.UUID]]) -> None:
    """Make ``planned`` items ``pending`` with their replay ids: ``(original, replay)`` pairs."""
    with conn.cursor() as cur:
        cur.executemany("UPDATE replay_item SET state = 'pending', replay_cmd_uuid = %s, updated_at = now() "
                        "WHERE request_id = %s AND original_cmd_uuid = %s AND state = 'planned'",
                        [(replay, request_id, original) for original, replay in assignments])


MARK_DONE = ("UPDATE replay_item SET state = 'done', outcome = %s, message = %s, updated_at = now() "
             "WHERE request_id = %s AND original_cmd_uuid = %s AND state <> 'done'")


def mark_done(conn: psycopg.Connection, request_id: uuid.UUID, original: uuid.UUID, *, outcome: str,
              message: str | None = None) -> bool:
    """Close one item; False when it was already done (another run got there first)."""
    return conn.execute(MARK_DONE, (outcome, message, request_id, original)).rowcount == 1


def mark_done_many(conn: psycopg.Connection, request_id: uuid.UUID,
                   outcomes: Sequence[tuple[uuid.UUID, str, str | None]]) -> None:
    """Close several items: ``(original, outcome, message)`` triples."""
    with conn.cursor() as cur:
        cur.executemany(MARK_DONE, [(outcome, message, request_id, original)
                                    for original, outcome, message in outcomes])


def logged_status(conn: psycopg.Connection, cmd_uuids: Sequence[uuid.UUID]) -> dict[uuid.UUID, tuple[str, str | None]]:
    """``(status, error_message)`` of the commands among ``cmd_uuids`` that are in the tenant log."""
    rows = conn.execute("SELECT cmd_uuid, status, error_message FROM tenant_command_log WHERE cmd_uuid = ANY(%s)",
                        (list(cmd_uuids),)).fetchall()
    return {r[0]: (r[1], r[2]) for r in rows}


_LOCK_CLASS = 0x7265706C  # 'repl': the first key of the two-key advisory lock space (disjoint from bigint keys)


def lock_request(conn: psycopg.Connection, request_id: uuid.UUID) -> None:
    """Wait for, then hold until ``conn``'s transaction ends, the lock that serialises runs of one request.

    A transaction-level advisory lock: released on commit, rollback or when the holder's connection dies
    (https://www.postgresql.org/docs/current/explicit-locking.html#ADVISORY-LOCKS).
    """
    key = int.from_bytes(request_id.bytes[:4], "big", signed=True)
    conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (_LOCK_CLASS, key))


def finish_request(conn: psycopg.Connection, request_id: uuid.UUID) -> None:
    """Stamp the request finished (again on a rerun)."""
    conn.execute("UPDATE replay_request SET finished_at = now() WHERE request_id = %s", (request_id,))
