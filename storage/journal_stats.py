"""The activity statistics' SQL: commands, failures and p95 duration per time bucket and class, and the top actors.

The two statements (``CLASS_BUCKETS``, ``ACTORS``) are written in the dialect Postgres and DuckDB share and read a
row source ``{rows}`` with the columns ``ROW_COLUMNS``; each engine fills in its own bucket expression. This module
runs them on Postgres (``postgres_stats``: the tenant's rows under row-level security, or the lean global
``command_log``) and reads the rows the lake does not hold yet (``unexported_rows``, the ``tx_id`` at or after the
lake's export bound). ``storage.lake.reports.activity_stats`` runs the same statements on DuckDB over the lake plus
those rows. The caller (``commandlog.journal.stats``) checks the window, the bucket and the limit first.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import psycopg
import pyarrow as pa
from psycopg import sql

from storage.errors import OperationalError
from storage.postgres import Database
from storage.rows import one_row

Bucket = Literal["hour", "day"]
ROW_COLUMNS = ("started_at", "finished_at", "cmd_class", "status", "actor_id")
TAIL_SCHEMA = pa.schema([("started_at", pa.timestamp("us")), ("finished_at", pa.timestamp("us")),
                         ("cmd_class", pa.string()), ("status", pa.string()), ("actor_id", pa.string())])
"""The unexported rows as the lake holds them: naive UTC timestamps (see ``storage.lake.duckdb_journal``)."""

# GROUPING(bucket, cmd_class): 0 per bucket and class, 1 per bucket, 2 per class (whole window), 3 the window.
# A failure is any status but 'succeeded' (failed or rejected), as in the ``failure_rate`` report.
CLASS_BUCKETS = """
SELECT bucket, cmd_class, GROUPING(bucket, cmd_class) AS level, count(*) AS commands,
       count(*) FILTER (WHERE status <> 'succeeded') AS failed,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY ms) AS p95_ms
FROM (SELECT {bucket} AS bucket, cmd_class, status,
             CAST(extract(epoch FROM finished_at - started_at) * 1000 AS double precision) AS ms
      FROM ({rows}) AS r) AS t
GROUP BY GROUPING SETS ((bucket, cmd_class), (bucket), (cmd_class), ())
"""
ACTORS = """
SELECT actor_id, count(*) AS commands, count(*) FILTER (WHERE status <> 'succeeded') AS failed,
       count(*) OVER () AS actors
FROM ({rows}) AS r GROUP BY actor_id ORDER BY commands DESC, actor_id LIMIT {top}
"""


class StatsTimeoutError(OperationalError):
    """A statistics statement ran past its ``statement_timeout`` and was cancelled by the server."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        super().__init__(f"the activity figures took longer than {timeout_s:g} s and were cancelled: narrow "
                         f"since/until, or try again when the database is less busy")


@dataclass(kw_only=True)
class StatsRows:
    """What the two statements returned, as plain tuples (either engine)."""

    classes: list[tuple] = field(default_factory=list)
    """``(bucket, cmd_class, level, commands, failed, p95_ms)`` rows of ``CLASS_BUCKETS``."""
    actors: list[tuple] = field(default_factory=list)
    """``(actor_id, commands, failed, actors)`` rows of ``ACTORS``, busiest first."""


def _rows_sql(*, tenant: str | None, unexported: bool) -> sql.Composed:
    """The row source: one tenant's full log (RLS and an explicit filter) or the lean global log, in the window."""
    table = "command_log" if tenant is None else "tenant_command_log"
    conds = [sql.SQL("started_at >= %(since)s"), sql.SQL("started_at < %(until)s")]
    if tenant is not None:
        conds.insert(0, sql.SQL("tenant_id = %(tenant)s"))  # RLS decides; the equality lets the index serve it
    if unexported:
        conds.append(sql.SQL("tx_id >= %(from_tx)s::xid8"))
    return sql.SQL("SELECT {} FROM {} WHERE {}").format(
        sql.SQL(", ").join(map(sql.Identifier, ROW_COLUMNS)), sql.Identifier(table), sql.SQL(" AND ").join(conds))


@contextlib.contextmanager
def _session(db: Database, tenant: str | None, timeout_s: float | None) -> Iterator[psycopg.Connection]:
    """A transaction in ``tenant``'s session (None: the primary role) whose statements are cancelled after
    ``timeout_s`` seconds each (``SET LOCAL statement_timeout``; None: no limit), a cancel raised as
    ``StatsTimeoutError``."""
    session = db.connection() if tenant is None else db.tenant_session(tenant)
    try:
        with session as conn, conn.transaction():
            if timeout_s is not None:
                conn.execute("SELECT set_config('statement_timeout', %s, true)",
                             (f"{max(1, round(timeout_s * 1000))}ms",))
            yield conn
    except psycopg.errors.QueryCanceled:
        if timeout_s is None:
            raise
        raise StatsTimeoutError(timeout_s) from None


def postgres_stats(db: Database, *, tenant: str | None, since: dt.datetime, until: dt.datetime, bucket: Bucket,
                   top: int, timeout_s: float | None = None) -> StatsRows:
    """Both statements over ``since <= started_at < until`` on Postgres, one after the other in one transaction.

    ``tenant``: read in that tenant's session (row-level security); None: the lean global ``command_log``. Read
    committed: a command committed between the two statements may count in the actors and not in the classes.
    ``timeout_s``: each statement's limit (``StatsTimeoutError`` past it); None: no limit.
    """
    rows = _rows_sql(tenant=tenant, unexported=False)
    trunc = sql.SQL("date_trunc({}, started_at, 'UTC')").format(sql.Literal(bucket))  # UTC whatever the session
    params = {"tenant": tenant, "since": since, "until": until}
    with _session(db, tenant, timeout_s) as conn, conn.cursor() as cur:
        classes = cur.execute(sql.SQL(CLASS_BUCKETS).format(bucket=trunc, rows=rows), params,
                              prepare=False).fetchall()
        actors = cur.execute(sql.SQL(ACTORS).format(rows=rows, top=sql.Literal(int(top))), params,
                             prepare=False).fetchall()
    return StatsRows(classes=classes, actors=actors)


def unexported_rows(db: Database, *, tenant: str | None, since: dt.datetime, until: dt.datetime,
                    from_tx: int, max_rows: int, timeout_s: float | None = None) -> pa.Table | None:
    """Rows in the window written by transactions at or after ``from_tx`` (the lake's export bound): the rows an
    export has not copied to the lake yet, as ``TAIL_SCHEMA``; None when there are more than ``max_rows`` of them
    (the export is behind: the caller reads Postgres alone rather than load them all). ``timeout_s``: as in
    ``postgres_stats``."""
    if max_rows < 0:
        raise ValueError("max_rows must be >= 0")
    rows = sql.SQL("{} LIMIT {}").format(_rows_sql(tenant=tenant, unexported=True), sql.Literal(int(max_rows) + 1))
    params = {"tenant": tenant, "since": since, "until": until, "from_tx": str(int(from_tx))}
    with _session(db, tenant, timeout_s) as conn, conn.cursor() as cur:
        fetched = cur.execute(rows, params, prepare=False).fetchall()
    if len(fetched) > max_rows:
        return None
    columns: list[list[Any]] = [[r[i] for r in fetched] for i in range(len(ROW_COLUMNS))]
    arrays = [pa.array([_naive_utc(v) for v in columns[0]], pa.timestamp("us")),
              pa.array([_naive_utc(v) for v in columns[1]], pa.timestamp("us")),
              *(pa.array(c, pa.string()) for c in columns[2:])]
    return pa.Table.from_arrays(arrays, schema=TAIL_SCHEMA)


def _naive_utc(when: dt.datetime | None) -> dt.datetime | None:
    return None if when is None else when.astimezone(dt.UTC).replace(tzinfo=None)


def export_bound_at(db: Database, lake_uri: str, snapshot_id: int) -> int:
    """The export bound (``to_tx``) the lake's manifest of ``snapshot_id`` covers: every row of a transaction below
    it is in that manifest's files (or was purged from both sides by retention); 0 when no export is in it.

    A manifest is written before its run is marked ``published`` (``commandlog.journal.export.publish_run``), so a
    run still ``publishing`` counts when its id is within the manifest's.
    """
    with db.connection() as conn:
        row = one_row(conn.execute(
            "SELECT max(to_tx)::text FROM export_snapshot WHERE lake_uri = %s AND kind = 'export' "
            "AND status IN ('publishing', 'published') AND snapshot_id <= %s", (lake_uri, snapshot_id)))
    return int(row[0]) if row[0] is not None else 0
