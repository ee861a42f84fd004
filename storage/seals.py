"""The seals of the log (``log_seal``, migration 0010) and the rows they cover, in their canonical encoding.

**Interval.** A sealing run covers the rows inserted by the transactions ``from_tx <= tx_id < to_tx``: ``from_tx`` is
where the previous run stopped (0 for the first), ``to_tx`` the ``xmin`` of the run's repeatable-read snapshot.
Every lower transaction has finished, so the range is closed: no later commit can add a row to it, and rows of
still-running transactions wait for the next run (the export's watermark, see ``storage.lake.arrow_export``). Runs
are serialised by a session advisory lock taken *before* the snapshot, so each run sees the previous run's seals
and the ranges of all runs are contiguous: ``[0, last to_tx)`` is sealed, with no gap and no overlap.

**Canonical encoding** of a row (a Merkle leaf): the row's columns (every column but ``tx_id``) as one JSON object,
keys sorted, no whitespace (``separators=(",", ":")``), non-ASCII written as UTF-8 (``ensure_ascii=False``), the
whole encoded as UTF-8. Values: ``uuid`` as lowercase hyphenated text; ``timestamptz`` as UTC
``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (``infinity`` and ``-infinity`` as those words, so they stay distinct); ``jsonb`` as
a *string* holding Postgres's text output of the value (canonical for a jsonb value: keys de-duplicated and ordered,
numbers as stored); ``text[]`` as an array of strings; integers, booleans and NULL as JSON. Postgres rows are
encoded and hashed by the server (``_canonical_sql``, ``_leaf_hash_sql``: a reader receives each row's uuid, tenant
and 32-byte leaf hash, aggregated per seal, instead of its rendered columns); ``canonical`` is the same encoding in
Python, for rows read from the lake — the two give the same bytes (tests/integration/test_seal_encoding.py checks
hostile values), so the encoding, and every seal made before the server computed it, is unchanged.

**Order**: by leaf partition name (``COLLATE "C"``), then (``tenant_command_log`` only, sealed per tenant since
migration 0017) the tenant (``COLLATE "C"``), then the row's uuid and time column: the primary key within a leaf, so
the order is total and does not depend on the database's collation or on physical row order.

**Tenant sessions** (``tenant_reading_session``: a tenant-bound SQL login's own connection, or the platform's
``cmdlog_tenant`` role with ``cmdlog.tenant_id``) read, through row-level security and a column grant, their own
tenant's seals' tenant headers and leaves (``TenantSeal``) and nothing of any other seal (migration 0017).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psutil
import psycopg
from psycopg import sql

from storage.errors import StorageError, TenantIsolationError, translated
from storage.locks import advisory_lock
from storage.postgres import TENANT_ROLE
from storage.rows import one_row

_LOCK_KEY = 0x636D6473  # 'cmds': one sealing run at a time across processes

_UUID, _TS, _JSON, _PLAIN = "uuid", "timestamptz", "jsonb", "plain"
COLUMNS: dict[str, tuple[tuple[str, str], ...]] = {
    "command_log": (
        ("cmd_uuid", _UUID), ("cmd_class", _PLAIN), ("cmd_version", _PLAIN), ("tenant_id", _PLAIN),
        ("actor_id", _PLAIN), ("correlation_id", _UUID), ("causation_id", _UUID), ("replay_of", _UUID),
        ("draft_uuid", _UUID), ("status", _PLAIN), ("error_type", _PLAIN), ("error_message", _PLAIN),
        ("started_at", _TS), ("finished_at", _TS), ("retention", _PLAIN), ("subjects", _PLAIN),
        ("cmd_body", _JSON), ("body_excluded", _PLAIN)),
    "tenant_command_log": (
        ("cmd_uuid", _UUID), ("tenant_id", _PLAIN), ("cmd_class", _PLAIN), ("cmd_version", _PLAIN),
        ("actor_id", _PLAIN), ("correlation_id", _UUID), ("causation_id", _UUID), ("replay_of", _UUID),
        ("draft_uuid", _UUID), ("status", _PLAIN), ("error_type", _PLAIN), ("error_message", _PLAIN),
        ("started_at", _TS), ("finished_at", _TS), ("retention", _PLAIN), ("subjects", _PLAIN),
        ("cmd_body", _JSON), ("result", _JSON)),
    "domain_event": (
        ("event_uuid", _UUID), ("cmd_uuid", _UUID), ("tenant_id", _PLAIN), ("event_type", _PLAIN),
        ("payload", _JSON), ("occurred_at", _TS), ("retention", _PLAIN)),
    "frontend_action": (
        ("action_uuid", _UUID), ("tenant_id", _PLAIN), ("actor_id", _PLAIN), ("action", _PLAIN),
        ("payload", _JSON), ("correlation_id", _UUID), ("occurred_at", _TS), ("retention", _PLAIN)),
}
"""The sealed columns of each log table (all but ``tx_id``), with how each is rendered; the first is the row's key."""
LOG_TABLES = tuple(COLUMNS)
"""The sealed tables, in the order a run seals them."""
PER_TENANT = frozenset({"tenant_command_log"})
"""The tables sealed per (partition, tenant), each seal readable by its tenant (migration 0017)."""
_TIME = {"command_log": "started_at", "tenant_command_log": "started_at",
         "domain_event": "occurred_at", "frontend_action": "occurred_at"}


class SealBusyError(StorageError):
    """Another sealing run is in progress."""


@dataclass(frozen=True, kw_only=True)
class LeafRow:
    """One committed log row, as a Merkle leaf."""

    partition: str
    """Its leaf partition."""
    key: str
    """Its uuid (``cmd_uuid``, ``event_uuid``, ``action_uuid``)."""
    tenant_id: str
    """Its tenant."""
    hash: bytes
    """Its leaf hash, ``SHA-256(0x00 || canonical encoding)``."""
    data: bytes | None = None
    """Its canonical encoding (read by ``SealSession.locate`` for a proof; None where only the hash is read)."""


@dataclass(frozen=True, kw_only=True)
class LeafGroup:
    """The rows one seal covers, in sealing order: a leaf partition's rows in a transaction range — for a table
    sealed per tenant, one tenant's rows in it."""

    partition: str
    """The leaf partition."""
    tenant_id: str | None
    """The tenant of every row, for a table sealed per tenant (``PER_TENANT``); None otherwise."""
    keys: tuple[str, ...]
    """Each row's uuid."""
    tenants: tuple[str, ...]
    """Each row's tenant."""
    hashes: bytes
    """The rows' leaf hashes, 32 bytes each, concatenated."""


@dataclass(frozen=True, kw_only=True)
class SealRow:
    """A ``log_seal`` row."""

    seal_id: int
    """Position in the chain (1, 2, …, no gaps)."""
    table_name: str
    """The log table."""
    partition_name: str
    """Its leaf partition the rows are in."""
    from_tx: int
    """First transaction id covered (inclusive)."""
    to_tx: int
    """Bound of the covered range (exclusive)."""
    row_count: int
    """Rows sealed."""
    merkle_root: bytes
    """Root of the Merkle tree over the rows' canonical encodings, in sealing order."""
    leaf_hashes: bytes
    """The leaf hashes in order, 32 bytes each."""
    leaf_keys: tuple[str, ...]
    """Each leaf's row uuid, in order."""
    leaf_tenants: tuple[str, ...]
    """Each leaf's tenant, in order."""
    keys_digest: bytes
    """SHA-256 over the leaf keys and tenants (signed with the seal, so they cannot be edited either)."""
    prev_hash: bytes
    """``seal_hash`` of seal ``seal_id - 1`` (32 zero bytes for the first)."""
    seal_hash: bytes
    """SHA-256 of this seal's signed header."""
    signature: bytes
    """Ed25519 signature of ``seal_hash``."""
    key_id: str
    """Fingerprint of the signing key's public half."""
    created_at: datetime
    """When the seal was made (part of the signed header)."""
    retired_by_run: int | None = None
    """The retention run that purged the sealed rows, if any."""
    retired_at: datetime | None = None
    """When that run retired the seal."""
    tenant_id: str | None = None
    """The tenant whose rows alone the seal covers (``tenant_command_log`` seals since 0017; None otherwise)."""
    tenant_seq: int | None = None
    """Its position in its tenant's chain (1, 2, …, no gaps)."""
    tenant_since: int | None = None
    """Where per-tenant sealing of the table began (the end of the ranges sealed per partition before 0017)."""
    tenant_prev: bytes | None = None
    """``tenant_hash`` of the tenant's previous seal (32 zero bytes for its first)."""
    tenant_hash: bytes | None = None
    """SHA-256 of the tenant header."""
    tenant_signature: bytes | None = None
    """Ed25519 signature of the tenant header hash."""


@dataclass(frozen=True, kw_only=True)
class TenantSeal:
    """What a tenant session reads of one of its own tenant's seals: the tenant header's fields and the leaves."""

    tenant_id: str
    tenant_seq: int
    tenant_since: int
    table_name: str
    partition_name: str
    to_tx: int
    row_count: int
    merkle_root: bytes
    leaf_hashes: bytes
    leaf_keys: tuple[str, ...]
    keys_digest: bytes
    tenant_prev: bytes
    tenant_hash: bytes
    tenant_signature: bytes
    key_id: str
    created_at: datetime
    retired_at: datetime | None


_SEAL_COLS = ("seal_id, table_name, partition_name, from_tx::text AS from_tx, to_tx::text AS to_tx, row_count, "
              "merkle_root, leaf_hashes, leaf_keys::text[] AS leaf_keys, leaf_tenants, keys_digest, prev_hash, "
              "seal_hash, signature, key_id, created_at, retired_by_run, retired_at, tenant_id, tenant_seq, "
              "tenant_since::text AS tenant_since, tenant_prev, tenant_hash, tenant_signature")
_SEAL_NAMES = tuple(c.strip().split(" AS ")[-1] for c in _SEAL_COLS.split(","))
_TENANT_SEAL_COLS = ("tenant_id, tenant_seq, tenant_since::text AS tenant_since, table_name, partition_name, "
                     "to_tx::text AS to_tx, row_count, merkle_root, leaf_hashes, leaf_keys::text[] AS leaf_keys, "
                     "keys_digest, tenant_prev, tenant_hash, tenant_signature, key_id, created_at, retired_at")
"""Only columns migration 0017 grants to tenant sessions (naming any other is refused)."""
_TENANT_SEAL_NAMES = tuple(c.strip().split(" AS ")[-1] for c in _TENANT_SEAL_COLS.split(","))


_NOTHING = sql.SQL("")


def canonical(names: tuple[str, ...], values: tuple[Any, ...]) -> bytes:
    """The canonical encoding of one row from its rendered column values (see the module docstring): the Python
    definition, used for rows read from the lake; ``_canonical_sql`` builds the same bytes in Postgres."""
    return json.dumps(dict(zip(names, values, strict=True)), sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode()


def _json_value(col: str, kind: str) -> sql.Composable:
    """SQL: one column's value as the JSON text ``canonical`` writes for it (``null`` for NULL). ``to_json`` escapes
    a string as Python's ``json.dumps(ensure_ascii=False)`` does (``\\"``, ``\\\\``, ``\\b \\f \\n \\r \\t``, other
    characters below U+0020 as lowercase ``\\u00xx``, everything else as is: ``escape_json`` in Postgres's
    ``src/backend/utils/adt/json.c``), writes integers and booleans as JSON does and ``text[]`` as ``["a","b"]``
    (``array_to_json``, no spaces)."""
    i = sql.Identifier(col)
    if kind in (_UUID, _JSON):  # uuid as lowercase text; jsonb as a string holding its text output
        value = sql.SQL("pg_catalog.to_json({}::text)").format(i)
    elif kind == _TS:
        value = sql.SQL("pg_catalog.to_json(CASE WHEN pg_catalog.isfinite({i}) THEN pg_catalog.to_char({i} AT TIME "
                        "ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') ELSE {i}::text END)").format(i=i)
    else:
        value = sql.SQL("pg_catalog.to_json({})").format(i)
    return sql.SQL("coalesce({}::text, 'null')").format(value)


def _canonical_sql(table: str) -> sql.Composable:
    """SQL: a row's canonical encoding as UTF-8 bytes — the keys in sorted order, built by one ``concat`` (an
    allocation per row, where a chain of ``||`` would copy the growing text once per column)."""
    args: list[sql.Composable] = []
    for n, (col, kind) in enumerate(sorted(COLUMNS[table])):
        args += [sql.Literal(("{" if n == 0 else ",") + json.dumps(col) + ":"), _json_value(col, kind)]
    return sql.SQL("pg_catalog.convert_to(pg_catalog.concat({}, '}}'), 'UTF8')").format(sql.SQL(", ").join(args))


def _leaf_hash_sql(table: str) -> sql.Composable:
    """SQL: a row's leaf hash, ``SHA-256(0x00 || canonical encoding)`` (RFC 6962), computed by the server so that a
    row costs the reader 32 bytes instead of its rendered columns."""
    return sql.SQL("pg_catalog.sha256('\\x00'::bytea || {})").format(_canonical_sql(table))


def _tx_range(from_tx: int, to_tx: int) -> sql.Composable:
    return sql.SQL("tx_id >= {}::text::xid8 AND tx_id < {}::text::xid8").format(
        sql.Literal(str(int(from_tx))), sql.Literal(str(int(to_tx))))


def _row_query(table: str, where: sql.Composable, *, data: bool = False) -> sql.Composed:
    """Rows as ``(partition, key, tenant, leaf hash[, canonical bytes], tx_id)``, in sealing order."""
    key = sql.Identifier(COLUMNS[table][0][0])
    tenant = sql.SQL("tenant_id COLLATE \"C\", ") if table in PER_TENANT else _NOTHING
    return sql.SQL("SELECT tableoid::regclass::text, {key}::text, tenant_id, {hash}{data}, tx_id::text FROM {table} "
                   "WHERE {where} ORDER BY tableoid::regclass::text COLLATE \"C\", {tenant}{key}, {time}").format(
        key=key, hash=_leaf_hash_sql(table), data=sql.SQL(", {}").format(_canonical_sql(table)) if data else _NOTHING,
        table=sql.Identifier(table), where=where, tenant=tenant, time=sql.Identifier(_TIME[table]))


def _group_query(table: str, leaf: sql.Composable, where: sql.Composable) -> sql.Composed:
    """One leaf partition's rows in ``where`` aggregated in sealing order: ``(tenant, keys, tenants, hashes)`` per
    tenant for a table sealed per tenant, else one row (``HAVING``: none when the range holds no row). A leaf holds
    one retention class, so ordering by (uuid, retention, time) is the sealing order (uuid, time) and the primary
    key's: the server may read it from the index instead of sorting."""
    order = sql.SQL("{}, retention, {}").format(sql.Identifier(COLUMNS[table][0][0]), sql.Identifier(_TIME[table]))
    fields = dict(key=sql.Identifier(COLUMNS[table][0][0]), order=order, hash=_leaf_hash_sql(table), leaf=leaf,
                  where=where)
    if table in PER_TENANT:
        return sql.SQL("SELECT tenant_id, array_agg({key}::text ORDER BY {order}), NULL::text[], "
                       "string_agg({hash}, ''::bytea ORDER BY {order}) FROM ONLY {leaf} WHERE {where} "
                       "GROUP BY tenant_id ORDER BY tenant_id COLLATE \"C\"").format(**fields)
    return sql.SQL("SELECT NULL::text, array_agg({key}::text ORDER BY {order}), array_agg(tenant_id ORDER BY {order}), "
                   "string_agg({hash}, ''::bytea ORDER BY {order}) FROM ONLY {leaf} WHERE {where} "
                   "HAVING count(*) > 0").format(**fields)


class SealSession:
    """One repeatable-read transaction on a connection of its own: reads the log and the seals in one snapshot and,
    for a sealing run, inserts the run's seals. Use ``sealing_session`` or ``reading_session``."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn

    def xmin(self) -> int:
        """``pg_snapshot_xmin`` of this transaction's snapshot: every lower transaction id has finished."""
        with translated():
            return int(one_row(self.conn.execute("SELECT pg_snapshot_xmin(pg_current_snapshot())::text"))[0])

    def leaf_partitions(self, table: str) -> list[tuple[str, sql.Composable]]:
        """``table``'s leaf partitions as ``(name, identifier)``, in sealing order (the name as
        ``tableoid::regclass::text`` gives it, ``COLLATE "C"``: Python's order of ``str`` is the same)."""
        with translated():
            rows = self.conn.execute(
                "SELECT t.relid::regclass::text, n.nspname, c.relname FROM pg_partition_tree(%s::regclass) t "
                "JOIN pg_class c ON c.oid = t.relid JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE t.isleaf", (table,)).fetchall()
        return sorted((name, sql.Identifier(nsp, rel)) for name, nsp, rel in rows)

    def leaf_groups(self, table: str, *, from_tx: int, to_tx: int,
                    pause: Callable[[], None] | None = None) -> Iterator[LeafGroup]:
        """The rows of ``table`` inserted by transactions ``from_tx <= tx_id < to_tx``, as one group per seal, in
        sealing order: each leaf partition is read by one statement that leaves the server only each row's uuid,
        tenant and leaf hash, aggregated. ``pause`` is called after each leaf (a sealing run's pacing)."""
        where = _tx_range(from_tx, to_tx)
        for name, leaf in self.leaf_partitions(table):
            with translated(f"cannot read {name} for sealing"), self.conn.cursor(binary=True) as cur:
                rows = cur.execute(_group_query(table, leaf, where)).fetchall()
            for tenant, keys, tenants, hashes in rows:
                yield LeafGroup(partition=name, tenant_id=tenant, keys=tuple(keys),
                                tenants=tuple(tenants) if tenants is not None else (tenant,) * len(keys),
                                hashes=bytes(hashes))
            if pause is not None:
                pause()

    def leaves_with_tx(self, table: str, *, from_tx: int, to_tx: int) -> Iterator[tuple[LeafRow, int]]:
        """The rows of ``table`` inserted by transactions ``from_tx <= tx_id < to_tx`` in sealing order, each with
        its ``tx_id``, streamed from a server-side cursor (what a tenant session may read: through its parent)."""
        with translated(f"cannot read {table}"), self.conn.cursor(name=f"cmdlog_seal_tx_{table}") as cur:
            cur.itersize = 5000
            cur.execute(_row_query(table, _tx_range(from_tx, to_tx)))
            for part, key, tenant, digest, tx in cur:
                yield LeafRow(partition=part, key=key, tenant_id=tenant, hash=bytes(digest)), int(tx)

    def last_seal(self) -> SealRow | None:
        """The newest seal (highest ``seal_id``), or None before the first run."""
        with translated():
            row = self.conn.execute(f"SELECT {_SEAL_COLS} FROM log_seal ORDER BY seal_id DESC LIMIT 1").fetchone()
        return _seal(row) if row else None

    def seal_at(self, seal_id: int) -> SealRow | None:
        """The seal ``seal_id``, or None when there is none."""
        with translated():
            row = self.conn.execute(f"SELECT {_SEAL_COLS} FROM log_seal WHERE seal_id = %s", (seal_id,)).fetchone()
        return _seal(row) if row else None

    def rows_before(self, to_tx: int) -> int:
        """How many log rows (every sealed table) were inserted by transactions below ``to_tx``."""
        parts = sql.SQL(" + ").join(
            sql.SQL("(SELECT count(*) FROM {} WHERE tx_id < {}::text::xid8)").format(
                sql.Identifier(t), sql.Literal(str(int(to_tx)))) for t in COLUMNS)
        with translated():
            return int(one_row(self.conn.execute(sql.SQL("SELECT {}").format(parts)))[0])

    def insert(self, seals: list[SealRow]) -> None:
        """Append ``seals`` (committed with the session), in order, by one ``COPY``: the chain triggers still check
        each row (a ``BEFORE`` row trigger makes ``COPY`` insert row by row, and each sees the rows before it)."""
        with translated("cannot record the seals"), self.conn.cursor() as cur, cur.copy(
                "COPY log_seal (seal_id, table_name, partition_name, from_tx, to_tx, row_count, merkle_root, "
                "leaf_hashes, leaf_keys, leaf_tenants, keys_digest, prev_hash, seal_hash, signature, key_id, "
                "created_at, tenant_id, tenant_seq, tenant_since, tenant_prev, tenant_hash, tenant_signature) "
                "FROM STDIN") as copy:
            for s in seals:
                copy.write_row((s.seal_id, s.table_name, s.partition_name, str(s.from_tx), str(s.to_tx), s.row_count,
                                s.merkle_root, s.leaf_hashes, list(s.leaf_keys), list(s.leaf_tenants), s.keys_digest,
                                s.prev_hash, s.seal_hash, s.signature, s.key_id, s.created_at, s.tenant_id,
                                s.tenant_seq, str(s.tenant_since) if s.tenant_since is not None else None,
                                s.tenant_prev, s.tenant_hash, s.tenant_signature))

    def tenant_heads(self) -> dict[str, tuple[int, bytes]]:
        """``{tenant: (tenant_seq, tenant_hash)}`` of each tenant's newest tenant seal."""
        with translated():
            return {r[0]: (int(r[1]), bytes(r[2])) for r in self.conn.execute(
                "SELECT DISTINCT ON (tenant_id) tenant_id, tenant_seq, tenant_hash FROM log_seal "
                "WHERE tenant_id IS NOT NULL ORDER BY tenant_id, tenant_seq DESC")}

    def session_tenant(self) -> str | None:
        """The tenant this session is bound to (``cmdlog_current_tenant()``; None: none)."""
        with translated():
            return one_row(self.conn.execute("SELECT cmdlog_current_tenant()"))[0]

    def tenant_seals(self) -> Iterator[TenantSeal]:
        """The seals row-level security lets this session see (its own tenant's), in its tenant's chain order."""
        with translated("cannot read the tenant's seals"), self.conn.cursor(name="cmdlog_tenant_seals") as cur:
            cur.itersize = 50
            cur.execute(f"SELECT {_TENANT_SEAL_COLS} FROM log_seal WHERE tenant_id IS NOT NULL "
                        "ORDER BY tenant_id, tenant_seq")
            for row in cur:
                d = dict(zip(_TENANT_SEAL_NAMES, row, strict=True))
                d["tenant_since"], d["to_tx"] = int(d["tenant_since"]), int(d["to_tx"])
                d["leaf_keys"] = tuple(d["leaf_keys"])
                for k in ("merkle_root", "leaf_hashes", "keys_digest", "tenant_prev", "tenant_hash",
                          "tenant_signature"):
                    d[k] = bytes(d[k])
                yield TenantSeal(**d)

    def shared_to(self, table: str) -> int:
        """The end of the ranges in which ``table`` was sealed per partition, not per tenant (before 0017; 0)."""
        with translated():
            return int(one_row(self.conn.execute(
                "SELECT coalesce(max(to_tx), '0'::xid8)::text FROM log_seal WHERE table_name = %s "
                "AND tenant_id IS NULL", (table,)))[0])

    def seals(self, *, after: int = 0) -> Iterator[SealRow]:
        """Every seal (with ``seal_id > after``) in chain order (``seal_id``)."""
        with translated("cannot read the seals"), self.conn.cursor(name="cmdlog_seals") as cur:
            cur.itersize = 50
            cur.execute(f"SELECT {_SEAL_COLS} FROM log_seal WHERE seal_id > %s ORDER BY seal_id", (after,))
            for row in cur:
                yield _seal(row)

    def locate(self, table: str, key: str) -> tuple[LeafRow, int] | None:
        """The row of ``table`` whose uuid is ``key`` (with its canonical encoding) and its ``tx_id`` (None when
        there is none)."""
        where = sql.SQL("{} = {}::uuid").format(sql.Identifier(COLUMNS[table][0][0]), sql.Literal(key))
        with translated():
            row = self.conn.execute(_row_query(table, where, data=True)).fetchone()
        if row is None:
            return None
        part, key, tenant, digest, data, tx = row
        return LeafRow(partition=part, key=key, tenant_id=tenant, hash=bytes(digest), data=bytes(data)), int(tx)

    def seal_covering(self, table: str, partition: str, tx_id: int, tenant: str) -> SealRow | None:
        """The seal of ``table``'s ``partition`` whose range holds ``tx_id`` — for a table sealed per tenant, the
        seal of ``tenant`` (or the shared one of a range sealed before 0017) — None when it is not sealed yet."""
        with translated():
            row = self.conn.execute(
                f"SELECT {_SEAL_COLS} FROM log_seal WHERE table_name = %s AND partition_name = %s "
                "AND from_tx <= %s::text::xid8 AND to_tx > %s::text::xid8 "
                "AND (tenant_id IS NULL OR tenant_id = %s)", (table, partition, str(tx_id), str(tx_id),
                                                              tenant)).fetchone()
        return _seal(row) if row else None


    def retired_runs(self) -> dict[int, int]:
        """``{retention run id: seals it retired}``."""
        with translated():
            return {int(r[0]): int(r[1]) for r in self.conn.execute(
                "SELECT retired_by_run, count(*) FROM log_seal WHERE retired_by_run IS NOT NULL "
                "GROUP BY 1 ORDER BY 1").fetchall()}

    def retirement_backed(self, seal: SealRow, purgeable: tuple[str, ...]) -> bool:
        """True when ``seal``'s retirement stands: its partition no longer exists (``to_regclass`` is NULL), and
        the retention run it names recorded dropping that partition of a purgeable class (``purgeable``; the
        partition's name is ``<table>_<class>_…``) and finished that step (``retention_step`` ``done``)."""
        with translated():
            return bool(one_row(self.conn.execute(
                "SELECT to_regclass(quote_ident(%s)) IS NULL AND EXISTS (SELECT 1 FROM retention_step "
                "WHERE run_id = %s AND action = 'drop' AND status = 'done' AND table_name = %s "
                "AND partition_name = %s AND retention = ANY(%s) "
                "AND starts_with(partition_name, table_name || '_' || retention || '_'))",
                (seal.partition_name, seal.retired_by_run, seal.table_name, seal.partition_name,
                 list(purgeable))))[0])

    def removals(self, table: str, keys: list[str]) -> dict[str, Removal]:
        """The ``log_removed`` record of each of ``keys`` (rows of ``table``) that has one (the newest)."""
        if not keys:
            return {}
        with translated():
            rows = self.conn.execute(
                "SELECT DISTINCT ON (r.row_key) r.row_key::text, r.tx::text, r.removed_at, r.retention_run, "
                "r.retention_run IS NOT NULL AND EXISTS (SELECT 1 FROM retention_step s WHERE s.run_id = "
                "r.retention_run AND s.action = 'delete' AND s.status = 'done' AND s.table_name = r.table_name) "
                "FROM log_removed r WHERE r.table_name = %s AND r.row_key = ANY(%s::uuid[]) "
                "ORDER BY r.row_key, r.removed_at DESC", (table, keys)).fetchall()
        return {r[0]: Removal(tx=int(r[1]), removed_at=r[2], retention_run=r[3], backed=bool(r[4])) for r in rows}

    def tenant_removals(self, table: str, keys: list[str]) -> dict[str, Removal]:
        """``removals`` as a tenant session may read them: its own tenant's records, the retention mark only."""
        if not keys:
            return {}
        with translated():
            rows = self.conn.execute(
                "SELECT row_key::text, max(retention_run) FROM log_removed WHERE table_name = %s "
                "AND row_key = ANY(%s::uuid[]) GROUP BY 1", (table, keys)).fetchall()
        return {r[0]: Removal(tx=None, removed_at=None, retention_run=r[1], backed=r[1] is not None) for r in rows}

    def partition_exists(self, name: str) -> bool:
        """True when a table named ``name`` exists."""
        with translated():
            return bool(one_row(self.conn.execute("SELECT to_regclass(quote_ident(%s)) IS NOT NULL", (name,)))[0])


def mark_retention_deletes(conn: psycopg.Connection, run_id: int) -> int:
    """Mark the ``log_removed`` records of the rows this transaction deleted as retention run ``run_id``'s (called in
    the transaction of a retention batch, migration 0017); returns how many."""
    with translated("cannot record what retention deleted"):
        return conn.execute("UPDATE log_removed SET retention_run = %s WHERE tx = pg_current_xact_id() "
                            "AND retention_run IS NULL", (run_id,)).rowcount


@dataclass(frozen=True, kw_only=True)
class Removal:
    """A ``log_removed`` record: who deleted a log row, when."""

    tx: int | None
    """The deleting transaction (None in a tenant session: not granted)."""
    removed_at: datetime | None
    """When (None in a tenant session)."""
    retention_run: int | None
    """The retention run whose batch deleted it (None: not retention)."""
    backed: bool
    """True when that run recorded a done ``delete`` step of the row's table (owner sessions only; a tenant session
    cannot read the retention bookkeeping and takes the mark as it is)."""


def retire_partition(conn: psycopg.Connection, *, table: str, partition: str, run_id: int) -> int:
    """Mark the seals of ``table``'s leaf ``partition`` retired by retention run ``run_id`` (the ones not retired
    yet, so a resumed run may call it again); returns how many were marked. The trigger of 0010 allows this one
    change of a seal."""
    with translated("cannot retire the seals"):
        return conn.execute(
            "UPDATE log_seal SET retired_by_run = %s, retired_at = now() WHERE table_name = %s "
            "AND partition_name = %s AND retired_by_run IS NULL", (run_id, table, partition)).rowcount


def _seal(row: tuple[Any, ...]) -> SealRow:
    d = dict(zip(_SEAL_NAMES, row, strict=True))
    d["from_tx"], d["to_tx"] = int(d["from_tx"]), int(d["to_tx"])
    d["leaf_keys"], d["leaf_tenants"] = tuple(d["leaf_keys"]), tuple(d["leaf_tenants"])
    for k in ("merkle_root", "leaf_hashes", "keys_digest", "prev_hash", "seal_hash", "signature"):
        d[k] = bytes(d[k])
    for k in ("tenant_prev", "tenant_hash", "tenant_signature"):
        d[k] = bytes(d[k]) if d[k] is not None else None
    d["tenant_since"] = int(d["tenant_since"]) if d["tenant_since"] is not None else None
    return SealRow(**d)


def _lower_backend(conn: psycopg.Connection, nice: int) -> bool:
    """Give this connection's backend niceness ``nice`` when the server is on this machine — reached through a Unix
    socket, and the process is a ``postgres`` one (over TCP the pid could be another machine's or container's) —
    and the OS allows it (the same user, or ``CAP_SYS_NICE``); False when it was left as it was. The backend ends
    with the connection, so nothing outlives the session (unless a pooler keeps it: see
    ``commandlog.integrity.pacing``)."""
    if nice <= 0 or not sys.platform.startswith("linux") or not (conn.info.host or "").startswith("/"):
        return False
    with translated():
        pid = int(one_row(conn.execute("SELECT pg_backend_pid()"))[0])
    try:
        if psutil.Process(pid).name() != "postgres":
            return False
        if os.getpriority(os.PRIO_PROCESS, pid) < nice:
            os.setpriority(os.PRIO_PROCESS, pid, nice)
    except (OSError, psutil.Error):
        return False
    return True


@contextlib.contextmanager
def _session(url: str, *, read_only: bool, tenant: str | None = None, nice: int = 0) -> Iterator[SealSession]:
    with translated("cannot connect to Postgres"):
        conn = psycopg.connect(url, autocommit=True)
    try:
        _lower_backend(conn, nice)
        conn.autocommit = False
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = read_only
        with translated():
            conn.execute("SET LOCAL TimeZone = 'UTC'")
            if tenant is not None:  # the platform's own tenant session (a login's URI needs nothing: its binding)
                conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(TENANT_ROLE)))
                conn.execute("SELECT set_config('cmdlog.tenant_id', %s, true)", (tenant,))
        yield SealSession(conn)
        with translated("cannot commit the seals"):
            conn.commit()
    finally:
        conn.close()


@contextlib.contextmanager
def sealing_session(url: str, *, nice: int = 0) -> Iterator[SealSession]:
    """The sealing lock (``SealBusyError`` when another run holds it), then a session whose snapshot is taken after
    the lock was granted, so it sees every earlier run's seals; committed at the end of the block. ``nice``: the
    session's backend niceness where it can be set (``_lower_backend``)."""
    with advisory_lock(url, _LOCK_KEY, busy=lambda: SealBusyError("another sealing run is in progress")), \
            _session(url, read_only=False, nice=nice) as session:
        yield session


@contextlib.contextmanager
def reading_session(url: str) -> Iterator[SealSession]:
    """A read-only repeatable-read session (verification, proofs): the log and the seals in one snapshot."""
    with _session(url, read_only=True) as session:
        yield session


@contextlib.contextmanager
def tenant_reading_session(url: str, *, tenant: str | None = None) -> Iterator[SealSession]:
    """A read-only repeatable-read session that sees one tenant only: with ``tenant``, the platform's own tenant
    session on its owner URL (``SET LOCAL ROLE cmdlog_tenant`` + ``cmdlog.tenant_id``); without, ``url`` is a
    tenant-bound SQL login's URI and its binding names the tenant."""
    if tenant is not None and (not isinstance(tenant, str) or not tenant.strip()):
        raise TenantIsolationError("tenant: must be a non-empty string")
    with _session(url, read_only=True, tenant=tenant) as session:
        yield session
