"""Retention in Postgres: legal holds, the purge's bookkeeping, and the row-level predicates and batch deletes.

Which rows are expired (``x`` is a row of a leaf partition):

* older than its cutoff: ``x.<time> < cutoff(x.tenant_id)`` — the class default or the tenant's override;
* not held: no active ``legal_hold`` of its tenant without subject, nor one whose subject is in the row's
  ``subjects`` (events: in their command's ``subjects``; frontend actions: tenant-wide holds only);
* exported, when the lake guard is on: ``x.tx_id`` below the lake's export bound.

Batch deletes run one short transaction per batch, under ``lock_timeout``, holding the holds' advisory lock shared
(so a hold, which takes it exclusively, is never added between the check and the delete, while the purge's takers
delete at once); a ``command_log`` batch deletes the commands' tenant rows
and events in the same statement, so the three stay consistent. Each batch records its counts in
``retention_step`` in its own transaction: a crash loses no count and never double-counts.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, overload

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from storage.errors import IntegrityError, StorageError, translated
from storage.locks import Retry
from storage.partitions import TIME_COLUMN
from storage.rows import one_row

HOLD_LOCK_KEY = 0x636D6C68  # 'cmlh': legal holds vs. the purge's decisions
PURGE_LOCK_KEY = 0x636D6C70  # 'cmlp': one purge at a time
KEYS = {"command_log": "cmd_uuid", "tenant_command_log": "cmd_uuid", "domain_event": "event_uuid",
        "frontend_action": "action_uuid"}
Counts = dict[str, dict[str, int]]
"""``{table: {tenant_id: rows}}``."""


class HoldExistsError(IntegrityError):
    """An active hold with the same tenant and subject already exists."""


@dataclass(frozen=True, kw_only=True)
class ClassCutoffs:
    """Cutoffs of one retention class: rows strictly older are expired (None: kept forever)."""

    default: datetime | None
    """Cutoff of tenants without an override."""
    overrides: dict[str, datetime | None] = field(default_factory=dict)
    """Per-tenant cutoffs."""

    @property
    def latest(self) -> datetime | None:
        """The latest cutoff of any tenant: nothing at or after it is expired."""
        cuts = [c for c in [self.default, *self.overrides.values()] if c is not None]
        return max(cuts) if cuts else None

    def params(self) -> dict:
        """SQL parameters of the predicate."""
        return {"cut": self.default.isoformat() if self.default else "-infinity",
                "ot": list(self.overrides),
                "oc": [c.isoformat() if c else "-infinity" for c in self.overrides.values()]}


@dataclass(frozen=True, kw_only=True)
class Hold:
    """A legal hold."""

    hold_id: int
    """Identity."""
    tenant_id: str
    """Held tenant."""
    subject: str | None
    """Held subject (None: the whole tenant)."""
    reason: str
    """Why."""
    created_by: str
    """Actor who added it."""
    created_at: datetime
    """When."""
    released_at: datetime | None = None
    """When it was removed (None: active)."""
    released_by: str | None = None
    """Actor who removed it."""


# -- holds ------------------------------------------------------------------------------------------------------

def add_hold(conn: psycopg.Connection, *, tenant_id: str, subject: str | None, reason: str, actor: str,
             cmd_uuid: uuid.UUID) -> int:
    """Insert an active hold (waits for a purge step in progress); ``HoldExistsError`` if one is active."""
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (HOLD_LOCK_KEY,))
    try:
        with translated(), conn.transaction():
            return int(one_row(conn.execute(
                "INSERT INTO legal_hold (tenant_id, subject, reason, created_by, created_cmd) "
                "VALUES (%s, %s, %s, %s, %s) RETURNING hold_id",
                (tenant_id, subject, reason, actor, cmd_uuid)))[0])
    except IntegrityError:
        what = f"subject {subject!r} of tenant {tenant_id!r}" if subject else f"tenant {tenant_id!r}"
        raise HoldExistsError(f"{what} is already under an active legal hold") from None


def release_hold(conn: psycopg.Connection, *, tenant_id: str, subject: str | None, actor: str,
                 cmd_uuid: uuid.UUID) -> int | None:
    """Release the active hold of (tenant, subject); its id, or None when there was none."""
    row = conn.execute(
        "UPDATE legal_hold SET released_at = now(), released_by = %s, released_cmd = %s "
        "WHERE tenant_id = %s AND coalesce(subject, '') = coalesce(%s, '') AND released_at IS NULL RETURNING hold_id",
        (actor, cmd_uuid, tenant_id, subject)).fetchone()
    return row[0] if row else None


def list_holds(conn: psycopg.Connection, *, tenant_id: str | None = None, include_released: bool = False) -> list[Hold]:
    """Holds, newest first (active ones only unless ``include_released``)."""
    where = ["(%(t)s::text IS NULL OR tenant_id = %(t)s)"]
    if not include_released:
        where.append("released_at IS NULL")
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute("SELECT hold_id, tenant_id, subject, reason, created_by, created_at, released_at, "
                           f"released_by FROM legal_hold WHERE {' AND '.join(where)} ORDER BY hold_id DESC",
                           {"t": tenant_id}).fetchall()
    return [Hold(**r) for r in rows]


def held_tenants(conn: psycopg.Connection) -> list[str]:
    """Tenants with any active hold (tenant-wide or on a subject)."""
    return [r[0] for r in conn.execute("SELECT DISTINCT tenant_id FROM legal_hold WHERE released_at IS NULL")]


def active_holds(conn: psycopg.Connection) -> tuple[list[tuple[str, str | None]], list]:
    """The active holds as ``(tenant_id, subject)`` (subject None: tenant-wide), and the commands their subjects
    hold (``cmd_uuid`` of every logged command of the tenant touching a held subject)."""
    holds = [(r[0], r[1]) for r in conn.execute(
        "SELECT tenant_id, subject FROM legal_hold WHERE released_at IS NULL").fetchall()]
    held_cmds = [r[0] for r in conn.execute(
        "SELECT DISTINCT c.cmd_uuid FROM legal_hold h JOIN command_log c ON c.tenant_id = h.tenant_id "
        "AND h.subject = ANY (c.subjects) WHERE h.released_at IS NULL AND h.subject IS NOT NULL")]
    return holds, held_cmds


# -- predicates -------------------------------------------------------------------------------------------------

_UNHELD = {
    "command": "NOT EXISTS (SELECT 1 FROM legal_hold h WHERE h.released_at IS NULL AND h.tenant_id = x.tenant_id "
               "AND (h.subject IS NULL OR h.subject = ANY (x.subjects)))",
    "event": "NOT EXISTS (SELECT 1 FROM legal_hold h WHERE h.released_at IS NULL AND h.tenant_id = x.tenant_id "
             "AND (h.subject IS NULL OR EXISTS (SELECT 1 FROM command_log c WHERE c.cmd_uuid = x.cmd_uuid "
             "AND c.retention = x.retention AND h.subject = ANY (c.subjects))))",
    "action": "NOT EXISTS (SELECT 1 FROM legal_hold h WHERE h.released_at IS NULL AND h.tenant_id = x.tenant_id "
              "AND h.subject IS NULL)",
}
_KIND = {"command_log": "command", "tenant_command_log": "command", "domain_event": "event",
         "frontend_action": "action"}


def expired_predicate(table: str, cut: ClassCutoffs, *, export_bound: int | None) -> str:
    """The SQL condition on ``x`` (a row of ``table``) that makes it expired; parameters from ``_params``."""
    col = TIME_COLUMN[table]
    if cut.overrides:
        parts = [(f"x.{col} < coalesce((SELECT o.cut::timestamptz FROM unnest(%(ot)s::text[], %(oc)s::text[]) "
                  f"AS o(t, cut) WHERE o.t = x.tenant_id), %(cut)s::timestamptz)")]
    else:
        parts = [f"x.{col} < %(cut)s::timestamptz"]
    parts.append(_UNHELD[_KIND[table]])
    if export_bound is not None:
        parts.append("x.tx_id < %(bound)s::text::xid8")
    return " AND ".join(parts)


def _params(cut: ClassCutoffs, export_bound: int | None, **extra: object) -> dict:
    return {**cut.params(), "bound": str(export_bound) if export_bound is not None else None, **extra}


def leaf_is_droppable(conn: psycopg.Connection, leaf: str, *, keep_tenants: list[str],
                      export_bound: int | None) -> bool:
    """True when ``leaf`` holds no row of a tenant with an active hold or of ``keep_tenants`` (kept longer by an
    override) and, with the lake guard, no row not yet exported (index probes, one round trip)."""
    q = sql.SQL(
        "SELECT NOT EXISTS (SELECT 1 FROM (SELECT unnest(%(keep)s::text[]) UNION SELECT h.tenant_id FROM legal_hold h "
        "WHERE h.released_at IS NULL) AS k(tenant_id) "
        "WHERE EXISTS (SELECT 1 FROM {t} x WHERE x.tenant_id = k.tenant_id)) "
        "AND (%(bound)s::text IS NULL OR NOT EXISTS (SELECT 1 FROM {t} WHERE tx_id >= %(bound)s::text::xid8))"
    ).format(t=sql.Identifier(leaf))
    return one_row(conn.execute(q, {"keep": keep_tenants,
                                    "bound": str(export_bound) if export_bound is not None else None}))[0]


def count_by_tenant(conn: psycopg.Connection, leaf: str, *, slice_above: int = 100_000,
                    max_rest_s: float = 0.5) -> dict[str, int]:
    """Rows of ``leaf`` per tenant, exactly.

    A leaf of more than ``slice_above`` rows (by its statistics) is counted one tenant at a time — index-only scans
    of the leaf's ``(tenant_id, …)`` index, tenants found by a skip scan — resting after each count as long as it
    took (at most ``max_rest_s``): counting a month of a busy log in one statement kept a core and the buffer pool
    busy for seconds, and writers felt it; in slices they are served in between. A smaller leaf is counted in one
    statement, followed by the same rest. On ``conn`` in autocommit each
    slice is its own statement: exact for a leaf nobody writes (a leaf before the cutoff), like the single count."""
    ident = sql.Identifier(leaf)
    est = one_row(conn.execute("SELECT reltuples FROM pg_class WHERE oid = %s::regclass", (leaf,)))[0]
    if est is None or est < slice_above:  # one statement, then the same rest
        t0 = time.perf_counter()
        whole = {t: int(n)
                 for t, n in conn.execute(sql.SQL("SELECT tenant_id, count(*) FROM {} GROUP BY 1").format(ident))}
        time.sleep(min(time.perf_counter() - t0, max_rest_s))
        return whole
    tenants = [r[0] for r in conn.execute(sql.SQL(
        "WITH RECURSIVE k(t) AS (SELECT min(tenant_id) FROM {0} UNION ALL "
        "SELECT (SELECT min(tenant_id) FROM {0} WHERE tenant_id > k.t) FROM k WHERE k.t IS NOT NULL) "
        "SELECT t FROM k WHERE t IS NOT NULL").format(ident))]
    out = {}
    count = sql.SQL("SELECT count(*) FROM {} WHERE tenant_id = %s").format(ident)
    for tenant in tenants:
        t0 = time.perf_counter()
        n = int(one_row(conn.execute(count, (tenant,)))[0])
        if n:
            out[tenant] = n
        time.sleep(min(time.perf_counter() - t0, max_rest_s))
    return out


def count_expired(conn: psycopg.Connection, *, table: str, leaf: str, cut: ClassCutoffs,
                  export_bound: int | None) -> dict[str, int]:
    """Expired rows of ``leaf`` per tenant (what a dry run reports)."""
    q = sql.SQL("SELECT x.tenant_id, count(*) FROM {t} x WHERE "
                + expired_predicate(table, cut, export_bound=export_bound)
                + " GROUP BY 1").format(t=sql.Identifier(leaf))
    return {t: int(n) for t, n in conn.execute(q, _params(cut, export_bound))}


def leaf_blocks(conn: psycopg.Connection, leaf: str) -> tuple[int, float]:
    """``(blocks, rows per block)`` of a leaf, for slicing it into batches by block range."""
    blocks, tuples, pages = one_row(conn.execute(
        "SELECT pg_relation_size(c.oid) / current_setting('block_size')::int, c.reltuples, c.relpages FROM pg_class c "
        "WHERE c.oid = %s::regclass", (leaf,)))
    per_block = tuples / pages if pages and tuples and tuples > 0 else 40.0
    return int(blocks), float(per_block)


def delete_batch(conn: psycopg.Connection, *, table: str, leaf: str, sibling: str | None, retention: str,
                 lower: datetime, cut: ClassCutoffs, export_bound: int | None, blocks: tuple[int, int],
                 lock_timeout_ms: int, record: Callable[[psycopg.Connection, Counts], None],
                 attempts: int = 60) -> Counts:
    """Delete the expired rows of ``leaf`` in the block range ``[b0, b1)`` (a TID range scan: a batch's cost is
    bounded by its range, not by the partition) — for ``command_log`` with their tenant rows (in ``sibling``) and
    events — in one transaction that also runs ``record(conn, counts)``."""
    key, col = KEYS[table], TIME_COLUMN[table]
    pred = expired_predicate(table, cut, export_bound=export_bound)
    ctes = [(f"v AS MATERIALIZED (SELECT x.{key} AS k, x.{col} AS at FROM {{leaf}} x WHERE x.ctid >= %(t0)s::tid "
             f"AND x.ctid < %(t1)s::tid AND {pred})"),
            f"d AS (DELETE FROM {{leaf}} x USING v WHERE x.{key} = v.k AND x.{col} = v.at RETURNING x.tenant_id)"]
    selects = [f"SELECT '{table}', tenant_id, count(*) FROM d GROUP BY 2"]
    if table == "command_log":  # the commands' tenant rows and events leave in the same statement
        if sibling:
            ctes.append("d2 AS (DELETE FROM {sibling} x USING v WHERE x.cmd_uuid = v.k AND x.started_at = v.at "
                        "RETURNING x.tenant_id)")
            selects.append("SELECT 'tenant_command_log', tenant_id, count(*) FROM d2 GROUP BY 2")
        ctes.append("d3 AS (DELETE FROM domain_event x WHERE x.retention = %(cls)s AND x.occurred_at >= %(lo)s "
                    "AND x.cmd_uuid IN (SELECT k FROM v) RETURNING x.tenant_id)")
        selects.append("SELECT 'domain_event', tenant_id, count(*) FROM d3 GROUP BY 2")
    q = sql.SQL("WITH " + ", ".join(ctes) + " " + " UNION ALL ".join(selects)).format(
        leaf=sql.Identifier(leaf), sibling=sql.Identifier(sibling or leaf))
    params = _params(cut, export_bound, t0=f"({int(blocks[0])},0)", t1=f"({int(blocks[1])},0)", cls=retention,
                     lo=lower)

    def attempt() -> Counts:
        with translated(), conn.transaction():
            conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(f"{int(lock_timeout_ms)}ms")))
            # shared: the purge's takers delete at once; a new hold (exclusive) waits for the batches in progress
            conn.execute("SELECT pg_advisory_xact_lock_shared(%s)", (HOLD_LOCK_KEY,))
            counts: Counts = {}
            for t, tenant, n in conn.execute(q, params).fetchall():
                counts.setdefault(t, {})[tenant] = int(n)
            if counts:
                record(conn, counts)
            return counts

    return Retry(attempts=attempts, pause=lambda n: min(0.05 * n, 1.0), give_up=lambda n, e: StorageError(
        f"{leaf}: batch delete still blocked after {n} attempts ({e})"))(attempt)


# -- runs and steps ---------------------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class RunRow:
    """A ``retention_run`` row: what an (unfinished) purge fixed when it started."""

    run_id: int
    """Identity."""
    as_of: datetime
    """Reference time of every cutoff."""
    policy: dict
    """The policy, as JSON."""
    lake_uri: str | None
    """The guarded lake (None: no guard, no lake purge)."""
    export_bound: int | None
    """The lake's export bound when the run started."""
    attempts: int
    """1 + resumptions."""


@overload
def _run(row: dict[str, Any]) -> RunRow: ...
@overload
def _run(row: None) -> None: ...
def _run(row: dict[str, Any] | None) -> RunRow | None:
    if row is None:
        return None
    d = dict(row)
    d["export_bound"] = int(d["export_bound"]) if d["export_bound"] is not None else None
    return RunRow(**d)


_RUN_COLS = "run_id, as_of, policy, lake_uri, export_bound::text AS export_bound, attempts"


def open_run(conn: psycopg.Connection) -> RunRow | None:
    """The unfinished run left by a crash, counted as one more attempt; None when there is none."""
    with conn.cursor(row_factory=dict_row) as cur:
        return _run(cur.execute(f"UPDATE retention_run SET attempts = attempts + 1 WHERE status = 'running' "
                                f"RETURNING {_RUN_COLS}").fetchone())


def start_run(conn: psycopg.Connection, *, as_of: datetime, policy: dict, lake_uri: str | None,
              export_bound: int | None) -> RunRow:
    """Insert a ``running`` run."""
    with conn.cursor(row_factory=dict_row) as cur:
        return _run(one_row(cur.execute(
            f"INSERT INTO retention_run (as_of, policy, lake_uri, export_bound) VALUES (%s, %s, %s, %s::text::xid8) "
            f"RETURNING {_RUN_COLS}", (as_of, Jsonb(policy), lake_uri,
                                       str(export_bound) if export_bound is not None else None))))


def running_run(conn: psycopg.Connection, run_id: int) -> RunRow | None:
    """The run ``run_id`` while it is ``running`` (a helper's view: the attempt count is left alone); else None."""
    with conn.cursor(row_factory=dict_row) as cur:
        return _run(cur.execute(f"SELECT {_RUN_COLS} FROM retention_run WHERE run_id = %s AND status = 'running'",
                                (run_id,)).fetchone())


def finish_run(conn: psycopg.Connection, run_id: int, *, purge_cmd: uuid.UUID) -> bool:
    """Mark the run finished (in the transaction that logs its ``retention.Purge`` command)."""
    return conn.execute("UPDATE retention_run SET status = 'finished', finished_at = now(), purge_cmd = %s "
                        "WHERE run_id = %s AND status = 'running'", (purge_cmd, run_id)).rowcount == 1


def record_step(conn: psycopg.Connection, run_id: int, *, action: str, table: str, partition: str | None,
                retention: str, status: str, counts: dict[str, int], nbytes: int = 0) -> None:
    """Add ``counts`` to the run's step for (action, table, partition), creating it if needed."""
    row = conn.execute("SELECT step_id, counts FROM retention_step "
                       "WHERE run_id = %s AND action = %s AND table_name = %s "
                       "AND partition_name IS NOT DISTINCT FROM %s AND retention = %s FOR UPDATE",
                       (run_id, action, table, partition, retention)).fetchone()
    if row is None:
        conn.execute("INSERT INTO retention_step (run_id, action, table_name, partition_name, retention, status, rows, "
                     "bytes, counts) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                     (run_id, action, table, partition, retention, status, sum(counts.values()), nbytes, Jsonb(counts)))
        return
    merged = dict(row[1])
    for tenant, n in counts.items():
        merged[tenant] = merged.get(tenant, 0) + n
    conn.execute("UPDATE retention_step SET counts = %s, rows = %s, bytes = bytes + %s, status = %s, at = now() "
                 "WHERE step_id = %s", (Jsonb(merged), sum(merged.values()), nbytes, status, row[0]))


def claim_drop_step(conn: psycopg.Connection, run_id: int, partition: str) -> bool:
    """Lock the run's drop step of ``partition`` until this transaction ends; False when another transaction holds
    it — a live taker finishing that very drop, which marks it done itself — or there is no such step."""
    return conn.execute("SELECT 1 FROM retention_step WHERE run_id = %s AND action = 'drop' AND partition_name = %s "
                        "FOR UPDATE SKIP LOCKED", (run_id, partition)).fetchone() is not None


def mark_step_done(conn: psycopg.Connection, run_id: int, partition: str, *, nbytes: int) -> None:
    """A detached leaf is dropped: its step is done and the freed bytes recorded."""
    conn.execute("UPDATE retention_step SET status = 'done', bytes = %s, at = now() WHERE run_id = %s "
                 "AND action = 'drop' AND partition_name = %s", (nbytes, run_id, partition))


def pending_drops(conn: psycopg.Connection, run_id: int) -> list[tuple[str, str, str]]:
    """``(table, retention, leaf)`` of the run's leaves whose detach/drop was started but not finished."""
    return [tuple(r) for r in conn.execute(
        "SELECT table_name, retention, partition_name FROM retention_step WHERE run_id = %s AND action = 'drop' "
        "AND status = 'detaching' ORDER BY step_id", (run_id,))]


def swept_leaves(conn: psycopg.Connection, run_id: int) -> set[str]:
    """Leaves in which the run has batch-deleted rows (a redone unit sweeps them again rather than drop what the
    batches emptied: the decision an uninterrupted run made stands)."""
    return {r[0] for r in conn.execute("SELECT DISTINCT partition_name FROM retention_step WHERE run_id = %s "
                                       "AND action = 'delete'", (run_id,))}


def run_steps(conn: psycopg.Connection, run_id: int) -> list[dict]:
    """Every step of a run: action, table, partition, retention, status, rows, bytes, counts."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute("SELECT action, table_name AS table, partition_name AS partition, retention, status, rows, "
                           "bytes, counts FROM retention_step WHERE run_id = %s ORDER BY step_id", (run_id,)).fetchall()
