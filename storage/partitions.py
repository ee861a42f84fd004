"""Log partitions as the catalog lists them, and removing one without disturbing writers.

The log tables are ``LIST (retention)`` → ``RANGE (time)`` partitioned (migration 0001):
``<table>_short_lived_pYYYYMMDD`` by day, ``<table>_long_lived_pYYYYMM`` by month, ``<table>_permanent`` as one
table. Retention removes a whole leaf with ``ALTER TABLE … DETACH PARTITION … CONCURRENTLY`` and parks it in the
``retention_reclaim`` schema (``detach_and_park``: catalog rows only, no file touched); ``reclaim`` removes the parked
tables' files later, one at a time and paced: the concurrent detach takes only a ``SHARE UPDATE EXCLUSIVE`` lock on
the parent, which inserts (``ROW EXCLUSIVE``) do not conflict with, and it cannot run inside a transaction block,
hence the autocommit connection
(https://www.postgresql.org/docs/current/sql-altertable.html#SQL-ALTERTABLE-DETACH-PARTITION). An interrupted
concurrent detach leaves the partition "detach pending"; ``DETACH PARTITION … FINALIZE`` completes it. Every step
runs under ``lock_timeout`` and is retried, so a purge waits in short slices instead of queueing writers behind it.

Why the files go later, paced by bytes: a commit that drops a relation truncates its files at once, and on a file
system mounted with ``discard`` (this machine's ext4) ``truncate(2)`` issues the discards synchronously, ~1 ms per
MB, on the device the writers' WAL ``fdatasync`` waits on. 1.7 GB freed in 2 s (3M commands, 128 leaves) made the
writers' p99 8.5× for those seconds; the same files removed at 4 MB/s hold up under 1 % of the writers' flushes
(``benchmarks.retention``, docs/retention.md).
Future leaves are added the same way round (``ensure_ahead``: create a plain table, then ``ATTACH PARTITION``).
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg import sql

from storage.errors import OperationalError, StorageError, translated
from storage.locks import Retry
from storage.rows import one_row

TIME_COLUMN = {"command_log": "started_at", "tenant_command_log": "started_at",
               "domain_event": "occurred_at", "frontend_action": "occurred_at"}
"""The log tables and the column their ranges partition on."""
PURGEABLE_CLASSES = ("short_lived", "long_lived")
_BOUND = re.compile(r"FROM \('([^']+)'\) TO \('([^']+)'\)")


class PartitionBusyError(StorageError):
    """A partition could not be detached or dropped within the retries (its lock stayed taken)."""


@dataclass(frozen=True, kw_only=True)
class Partition:
    """A time-range leaf partition of a log table."""

    table: str
    """The log table (``command_log``, ``tenant_command_log``, ``domain_event``, ``frontend_action``)."""
    name: str
    """The leaf's table name."""
    parent: str
    """Its direct parent (``<table>_<retention>``)."""
    retention: str
    """Retention class of its rows."""
    lower: datetime
    """First instant it holds (inclusive)."""
    upper: datetime
    """End of its range (exclusive)."""
    detach_pending: bool = False
    """An interrupted ``DETACH … CONCURRENTLY`` left it half-detached."""


def list_partitions(conn: psycopg.Connection, table: str, retention: str) -> list[Partition]:
    """The leaves of ``table`` for ``retention`` (``short_lived``/``long_lived``), oldest first, from
    ``pg_inherits``."""
    parent = f"{table}_{retention}"
    with conn.transaction():
        conn.execute("SET LOCAL TimeZone = 'UTC'")  # bounds print in the session's zone; parse them in UTC
        rows = conn.execute(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid), i.inhdetachpending FROM pg_inherits i "
            "JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent "
            "WHERE p.relname = %s AND c.relkind = 'r'", (parent,)).fetchall()
    parts = []
    for name, bound, pending in rows:
        m = _BOUND.search(bound or "")
        if m is None:
            continue  # not a range partition (nothing we created)
        parts.append(Partition(table=table, name=name, parent=parent, retention=retention,
                               lower=datetime.fromisoformat(m.group(1)), upper=datetime.fromisoformat(m.group(2)),
                               detach_pending=pending))
    return sorted(parts, key=lambda p: p.lower)


def relation_state(conn: psycopg.Connection, name: str) -> str:
    """``attached``, ``pending`` (half-detached), ``detached`` (a plain table) or ``gone``."""
    row = conn.execute("SELECT c.oid, i.inhdetachpending FROM pg_class c LEFT JOIN pg_inherits i ON i.inhrelid = c.oid "
                       "WHERE c.relname = %s AND c.relkind = 'r' AND c.relnamespace = 'public'::regnamespace",
                       (name,)).fetchone()
    if row is None:
        return "gone"
    if row[1] is None:
        return "detached"
    return "pending" if row[1] else "attached"


def relation_size(conn: psycopg.Connection, name: str) -> int:
    """Bytes the table ``name`` (in ``public``) and its indexes occupy (``pg_total_relation_size``)."""
    return int(one_row(conn.execute("SELECT pg_total_relation_size(format('%%I.%%I', 'public', %s::text)::regclass)",
                                    (name,)))[0])


def drop_connection(url: str, *, lock_timeout_ms: int = 2000) -> psycopg.Connection:
    """An autocommit connection for ``detach_and_drop`` (``DETACH … CONCURRENTLY`` refuses a transaction block)."""
    conn = psycopg.connect(url, autocommit=True)
    conn.execute(sql.SQL("SET lock_timeout = {}").format(sql.Literal(f"{int(lock_timeout_ms)}ms")))
    # Bookkeeping commits need not wait for their WAL flush: the WAL is replayed in order, so a crash loses at most
    # a tail of steps, never a later one without an earlier; a commit that drops a table is flushed regardless
    # (https://www.postgresql.org/docs/current/wal-async-commit.html).
    conn.execute("SET synchronous_commit = off")
    # The bookkeeping counts scan whole leaves; at millions of rows the planner starts parallel workers for them,
    # which take the cores the writers need (2 here): a purge is not urgent, so it uses one backend.
    conn.execute("SET max_parallel_workers_per_gather = 0")
    return conn


PARENT_LOCK_CLASS = 0x636D6C64  # 'cmld': with hashtext(parent), one detach per partitioned table at a time

RECLAIM_SCHEMA = "retention_reclaim"
"""Where a purged leaf waits for its files to be removed (migration 0022): no privilege for anyone but its owner."""


def _next_index(conn: psycopg.Connection, table: sql.Composable, oid: int) -> sql.Composed | None:
    """The statement dropping the biggest index left on the detached table ``oid`` (``DROP CONSTRAINT`` for one
    backing a primary key, unique or exclusion constraint); None when none is left."""
    row = conn.execute(
        "SELECT n.nspname, i.relname, con.conname FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid "
        "JOIN pg_namespace n ON n.oid = i.relnamespace "
        "LEFT JOIN pg_constraint con ON con.conindid = x.indexrelid AND con.conrelid = x.indrelid "
        "AND con.contype IN ('p', 'u', 'x') WHERE x.indrelid = %s "
        "ORDER BY pg_relation_size(x.indexrelid) DESC, i.relname LIMIT 1", (oid,)).fetchone()
    if row is None:
        return None
    if row[2] is not None:
        return sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(table, sql.Identifier(row[2]))
    return sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier(row[0], row[1]))


def _parked(conn: psycopg.Connection, name: str) -> int | None:
    """The oid of the table ``name`` parked in ``RECLAIM_SCHEMA``, if there is one."""
    row = conn.execute("SELECT c.oid FROM pg_class c WHERE c.relname = %s AND c.relkind = 'r' "
                       "AND c.relnamespace = to_regnamespace(%s)", (name, RECLAIM_SCHEMA)).fetchone()
    return None if row is None else int(row[0])


def detach_and_park(conn: psycopg.Connection, *, parent: str, name: str, attempts: int = 60,
                    lock_key: int | None = None,
                    prepare: Callable[[psycopg.Connection], bool] | None = None,
                    on_step: Callable[[str, float], None] | None = None) -> int | None:
    """Detach ``name`` from ``parent`` concurrently, then move it to ``RECLAIM_SCHEMA`` — metadata only: no file is
    removed here, that is ``reclaim``'s paced work. Its rows leave the log at the detach; the move takes the table out
    of every reader's reach (nobody but its owner may use that schema). Resumes from whatever state it is in (a crash
    between the steps leaves a pending or detached leaf: the next call goes on from there; a leaf already parked is
    done).

    ``conn``: from ``drop_connection``. ``lock_key``: a session advisory lock held *shared* meanwhile (legal holds
    take it exclusively, so no hold appears while the leaf goes; several purge takers share it). Then a session
    lock on ``parent`` (``PARENT_LOCK_CLASS``) is held until the leaf is parked: at most one partition of a
    partitioned table can be pending detach at a time — a second concurrent detach on the same parent fails
    (https://www.postgresql.org/docs/current/sql-altertable.html#SQL-ALTERTABLE-DETACH-PARTITION) — so detaches of
    one parent go one after another, whichever process runs them; different parents' detaches may overlap.
    ``prepare(conn)`` runs under both locks before an attached leaf is touched; when it returns False nothing is
    done and None is returned. Otherwise returns the bytes the table and its indexes occupy (what ``reclaim`` will
    free). ``on_step(kind, seconds)`` is told of each step (``detach``, ``park``).
    """
    retry = Retry(attempts=attempts, pause=lambda n: min(0.05 * n, 1.0),
                  give_up=lambda n, e: PartitionBusyError(f"{name}: still locked after {n} attempts ({e})"))

    def lock(stmt: str, params: tuple) -> None:
        with translated():
            conn.execute(stmt, params)

    if lock_key is not None:
        retry(functools.partial(lock, "SELECT pg_advisory_lock_shared(%s)", (lock_key,)))
    try:
        retry(functools.partial(lock, "SELECT pg_advisory_lock(%s, hashtext(%s))", (PARENT_LOCK_CLASS, parent)))
        try:
            return _detach_and_park(conn, parent=parent, name=name, retry=retry, prepare=prepare, on_step=on_step)
        finally:
            if not conn.closed:
                conn.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", (PARENT_LOCK_CLASS, parent))
    finally:
        if lock_key is not None and not conn.closed:
            conn.execute("SELECT pg_advisory_unlock_shared(%s)", (lock_key,))


def _detach_and_park(conn: psycopg.Connection, *, parent: str, name: str, retry: Retry,
                     prepare: Callable[[psycopg.Connection], bool] | None,
                     on_step: Callable[[str, float], None] | None) -> int | None:
    """``detach_and_park``'s steps, under its locks."""
    state = relation_state(conn, name)
    if prepare is not None and state == "attached" and not prepare(conn):
        return None
    if state == "gone":
        oid = _parked(conn, name)
        return 0 if oid is None else int(one_row(conn.execute("SELECT pg_total_relation_size(%s)", (oid,)))[0])
    size = relation_size(conn, name)
    ident, par = sql.Identifier("public", name), sql.Identifier("public", parent)

    def advance() -> None:
        nonlocal state
        if state == "detached":
            stale = _parked(conn, name)
            if stale is not None:  # a leaf of the same name purged before and not reclaimed yet: it goes now
                with translated():
                    conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(RECLAIM_SCHEMA, name)))
            t0 = time.perf_counter()
            with translated(), conn.transaction():
                _park(conn, name)
            state = "gone"
            if on_step is not None:
                on_step("park", time.perf_counter() - t0)
            return
        stmt = {"attached": sql.SQL("ALTER TABLE {} DETACH PARTITION {} CONCURRENTLY"),
                "pending": sql.SQL("ALTER TABLE {} DETACH PARTITION {} FINALIZE")}[state].format(par, ident)
        t0 = time.perf_counter()
        try:
            with translated():
                conn.execute(stmt)
        except OperationalError:
            state = relation_state(conn, name)  # a cancelled concurrent detach may be left pending
            raise
        state = "detached"
        if on_step is not None:
            on_step("detach", time.perf_counter() - t0)

    while state != "gone":
        retry(advance)
    return size


def _park(conn: psycopg.Connection, name: str) -> None:
    """Move the detached table ``public.name`` into ``RECLAIM_SCHEMA``, its indexes renamed ``rr_<oid>`` first: the
    names Postgres generated for them are cut to 63 characters (the date cut off) and made unique only within
    ``public``, so a leaf created after this one is parked may get the same index name — and could not be parked
    beside it. Oids are unique; in one transaction."""
    for nsp, index, oid in conn.execute(
            "SELECT n.nspname, i.relname, i.oid FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid "
            "JOIN pg_namespace n ON n.oid = i.relnamespace "
            "WHERE x.indrelid = (SELECT c.oid FROM pg_class c WHERE c.relname = %s AND c.relkind = 'r' "
            "AND c.relnamespace = 'public'::regnamespace)", (name,)).fetchall():
        conn.execute(sql.SQL("ALTER INDEX {} RENAME TO {}").format(sql.Identifier(nsp, index),
                                                                  sql.Identifier(f"rr_{oid}")))
    conn.execute(sql.SQL("ALTER TABLE {} SET SCHEMA {}").format(sql.Identifier("public", name),
                                                                sql.Identifier(RECLAIM_SCHEMA)))


@dataclass(frozen=True, kw_only=True)
class Reclaimed:
    """What ``reclaim`` removed."""

    tables: int
    """Parked tables dropped."""
    files: int
    """Drop statements (each index, then each table with its TOAST)."""
    nbytes: int
    """Bytes freed."""
    seconds: float
    """Wall time, rests included."""


def parked(conn: psycopg.Connection) -> list[tuple[int, str]]:
    """``(oid, name)`` of every table parked in ``RECLAIM_SCHEMA``, by name."""
    return [(int(oid), name) for oid, name in conn.execute(
        "SELECT c.oid, c.relname FROM pg_class c WHERE c.relkind = 'r' AND c.relnamespace = to_regnamespace(%s) "
        "ORDER BY c.relname", (RECLAIM_SCHEMA,)).fetchall()]


def reclaim(conn: psycopg.Connection, *, mb_per_s: float, attempts: int = 60,
            on_step: Callable[[str, str, float], None] | None = None) -> Reclaimed:
    """Remove the files of every table parked in ``RECLAIM_SCHEMA``, one file at a time — each index, biggest
    first, then the table with its TOAST — paced so that the bytes freed never run ahead of ``mb_per_s`` (MB per
    second, averaged from the start; ``0``: unpaced). Each step is one committed statement, so a crash loses
    nothing: the next call goes on with what is left. ``on_step(table, kind, seconds)`` is told of each step
    (``index``, ``table``).
    """
    retry = Retry(attempts=attempts, pause=lambda n: min(0.05 * n, 1.0),
                  give_up=lambda n, e: PartitionBusyError(f"reclaim: still locked after {n} attempts ({e})"))
    rate = mb_per_s * (1 << 20)
    t_start = time.perf_counter()
    freed = files = 0
    tables = parked(conn)

    def advance(oid: int, name: str) -> bool:
        """Drops the next file of the parked table ``oid``; True when that was the table itself."""
        nonlocal freed, files
        table = sql.SQL("{}.{}").format(sql.Identifier(RECLAIM_SCHEMA), sql.Identifier(name))
        index = _next_index(conn, table, oid)
        if index is not None:
            nbytes = int(one_row(conn.execute(
                "SELECT pg_relation_size(x.indexrelid) FROM pg_index x WHERE x.indrelid = %s "
                "ORDER BY pg_relation_size(x.indexrelid) DESC LIMIT 1", (oid,)))[0])
            stmt, kind = index, "index"
        else:
            nbytes = int(one_row(conn.execute("SELECT pg_total_relation_size(%s)", (oid,)))[0])
            stmt, kind = sql.SQL("DROP TABLE IF EXISTS {}").format(table), "table"
        t0 = time.perf_counter()
        with translated():
            conn.execute(stmt)
        freed, files = freed + nbytes, files + 1
        if on_step is not None:
            on_step(name, kind, time.perf_counter() - t0)
        if rate > 0:  # sleep until the average since the start is back at the rate
            time.sleep(max(0.0, freed / rate - (time.perf_counter() - t_start)))
        return kind == "table"

    for oid, name in tables:
        while not retry(functools.partial(advance, oid, name)):
            pass
    return Reclaimed(tables=len(tables), files=files, nbytes=freed, seconds=time.perf_counter() - t_start)


PARTITIONS_LOCK_KEY = 0x636D6C61  # 'cmla': one process creating partitions ahead at a time

# The day partitions are cut in UTC (bounds 'YYYY-MM-DD 00:00:00+00', migration 0001); ``current_date`` is the day
# in the session's TimeZone, up to 14 hours away, so the partition days are counted from the UTC day instead.
UTC_TODAY = "(now() AT TIME ZONE 'UTC')::date"

# The partitions ``ensure_ahead`` may need, yesterday to ``days`` ahead (UTC days): (parent, leaf, lower, upper).
# Yesterday too: rows are stamped by the writers' clocks and may arrive for the previous day (a frontend action up
# to 24 hours old, a writer whose clock is behind the server's at midnight) after a stop longer than the week of
# partitions made ahead.
_AHEAD = f"""
SELECT DISTINCT t || '_' || v.cls, v.leaf, v.lo::text || ' 00:00:00+00', v.hi::text || ' 00:00:00+00'
  FROM unnest(%(tables)s::text[]) AS t, generate_series(-1, %(days)s) AS g(k),
       LATERAL (SELECT ({UTC_TODAY} + g.k) AS d) AS x,
       LATERAL (VALUES ('short_lived', t || '_short_lived_p' || to_char(x.d, 'YYYYMMDD'), x.d, x.d + 1),
                       ('long_lived', t || '_long_lived_p' || to_char(x.d, 'YYYYMM'),
                        date_trunc('month', x.d)::date, (date_trunc('month', x.d) + interval '1 month')::date))
               AS v(cls, leaf, lo, hi)
 WHERE to_regclass(v.leaf) IS NULL
 ORDER BY 2"""


def ensure_ahead(url: str, *, days: int, lock_timeout_ms: int = 200, attempts: int = 100) -> int:
    """Create the missing partitions from yesterday to ``days`` ahead (UTC days) without ever making a writer wait;
    returns how many were created.

    ``CREATE TABLE … PARTITION OF`` takes ``ACCESS EXCLUSIVE`` on the parent, and while such a request waits for
    the writers' ``ROW EXCLUSIVE`` locks, every later writer queues behind it
    (https://www.postgresql.org/docs/current/explicit-locking.html#LOCKING-TABLES): the benchmark caught writers
    blocked for tens of milliseconds that way. So each leaf is created as a plain table (``LIKE`` its parent, RLS
    applied) and then attached: ``ATTACH PARTITION`` takes only ``SHARE UPDATE EXCLUSIVE`` on the parent, which
    inserts do not conflict with, plus ``ACCESS EXCLUSIVE`` on the new, unused table; the parent's indexes are
    created on the empty leaf as it is attached
    (https://www.postgresql.org/docs/current/ddl-partitioning.html#DDL-PARTITIONING-DECLARATIVE-MAINTENANCE).
    One short transaction per leaf, under ``lock_timeout``, retried; an advisory lock keeps two processes from
    creating the same leaf.
    """
    created = 0
    with psycopg.connect(url, autocommit=True) as conn:
        missing = conn.execute(_AHEAD, {"tables": list(TIME_COLUMN), "days": int(days)}).fetchall()
        for parent, leaf, lower, upper in missing:
            def attach(parent: str = parent, leaf: str = leaf, lower: str = lower, upper: str = upper) -> int:
                with translated():
                    return _create_and_attach(conn, parent, leaf, lower, upper, lock_timeout_ms=lock_timeout_ms)

            retry = Retry(attempts=attempts, pause=lambda n: min(0.02 * n, 0.5),
                          give_up=functools.partial(_busy, leaf))
            created += retry(attach)
    return created


def _busy(leaf: str, attempts: int, e: OperationalError) -> PartitionBusyError:
    return PartitionBusyError(f"cannot attach {leaf}: {e}")


def _create_and_attach(conn: psycopg.Connection, parent: str, leaf: str, lower: str, upper: str, *,
                       lock_timeout_ms: int) -> int:
    with conn.transaction():
        conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(f"{int(lock_timeout_ms)}ms")))
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (PARTITIONS_LOCK_KEY,))
        if one_row(conn.execute("SELECT to_regclass(%s) IS NOT NULL", (leaf,)))[0]:
            return 0  # created meanwhile by someone else (cmdlog_ensure_partitions, another process)
        ident, par = sql.Identifier(leaf), sql.Identifier(parent)
        conn.execute(sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE "
                             "INCLUDING COMPRESSION)").format(ident, par))
        conn.execute("SELECT cmdlog_apply_tenant_rls(%s::regclass)", (leaf,))
        conn.execute(sql.SQL("ALTER TABLE {} ATTACH PARTITION {} FOR VALUES FROM ({}) TO ({})").format(
            par, ident, sql.Literal(lower), sql.Literal(upper)))
    return 1


def table_sizes(conn: psycopg.Connection) -> dict[str, dict[str, int]]:
    """Bytes of data (heap + TOAST) and of indexes per log table, summed over its leaves."""
    out = {}
    for table in TIME_COLUMN:
        data, index = one_row(conn.execute(
            "SELECT coalesce(sum(pg_table_size(relid)), 0)::bigint, coalesce(sum(pg_indexes_size(relid)), 0)::bigint "
            "FROM pg_partition_tree(%s::regclass) WHERE isleaf", (table,)))
        out[table] = {"table_bytes": int(data), "index_bytes": int(index)}
    return out
