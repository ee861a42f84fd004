"""The journal's built-in reports: SQL in the dialect DuckDB and Postgres share, run on a journal connection.

Each report reads a relation named by ``{source}`` (``commands`` or ``tenant_commands`` in the lake,
``command_log`` in Postgres), so the same text runs on both — the journal benchmark compares them (Postgres
sessions running it set ``TimeZone = 'UTC'``) — except the few reports ``LAKE_REPORTS`` words differently for DuckDB
(same rows, cheaper plan). Callers (``commandlog.journal.analytics``) check the names, the
window and the limit first.

Over the lake (``LAKE_SOURCES``) a time window also bounds the Hive ``day`` key (the UTC day of ``started_at``), so
DuckDB opens only the window's day partitions; inside them the files are sorted by ``started_at`` and the window's
edges skip row groups and pages by their statistics (``storage.lake.parquet``). Postgres has no ``day`` column and
prunes its own partitions by ``started_at``.
"""

from __future__ import annotations

import datetime as dt

import duckdb
import pyarrow as pa

from storage.journal_stats import ACTORS, CLASS_BUCKETS, ROW_COLUMNS, StatsRows
from storage.lake.duckdb_journal import query

REPORTS: dict[str, tuple[str, str]] = {
    "activity_per_actor_day": ("Activity per actor and day", """
        SELECT actor_id, CAST(date_trunc('day', started_at) AS date) AS day, count(*) AS commands
        FROM {source} {where} GROUP BY 1, 2 ORDER BY 2 DESC, 3 DESC, 1 {limit}"""),
    "command_mix": ("Command mix", """
        SELECT cmd_class, count(*) AS commands, round(100.0 * count(*) / sum(count(*)) OVER (), 1) AS pct
        FROM {source} {where} GROUP BY 1 ORDER BY 2 DESC, 1 {limit}"""),
    "failure_rate": ("Failure rate per command class", """
        SELECT cmd_class, count(*) AS commands, count(*) FILTER (WHERE status <> 'succeeded') AS failed,
               round(100.0 * count(*) FILTER (WHERE status <> 'succeeded') / count(*), 2) AS failed_pct
        FROM {source} {where} GROUP BY 1 ORDER BY 4 DESC, 1 {limit}"""),
    "duration_per_class": ("Duration per command class (ms)", """
        SELECT cmd_class,
               round(CAST(percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - started_at))
                     * 1000 AS numeric), 2) AS p50_ms,
               round(CAST(percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - started_at))
                     * 1000 AS numeric), 2) AS p95_ms
        FROM {source} {where} GROUP BY 1 ORDER BY 3 DESC, 1 {limit}"""),
    "most_changed_subjects": ("Most-changed subjects", """
        SELECT subject, count(*) AS commands
        FROM (SELECT unnest(subjects) AS subject FROM {source} {where_ok}) s
        GROUP BY 1 ORDER BY 2 DESC, 1 {limit}"""),
    "busiest_hours": ("Busiest hours (UTC)", """
        SELECT CAST(extract(hour FROM started_at) AS integer) AS hour, count(*) AS commands
        FROM {source} {where} GROUP BY 1 ORDER BY 2 DESC, 1 {limit}"""),
}


LAKE_SOURCES = frozenset({"commands", "tenant_commands"})
"""Lake views whose rows carry the ``day`` partition key."""

LAKE_REPORTS: dict[str, str] = {
    # ``day`` is the Hive key (the UTC day of started_at): no date_trunc per row, a dictionary-friendly group key.
    "activity_per_actor_day": """
        SELECT actor_id, day, count(*) AS commands
        FROM {source} {where} GROUP BY 1, 2 ORDER BY 2 DESC, 3 DESC, 1 {limit}""",
    # Both quantiles from one sort (DuckDB's list form of quantile_cont) instead of two, of seconds computed from
    # integer microseconds rather than an interval: the same doubles as extract(epoch …), so the same rounding.
    "duration_per_class": """
        SELECT cmd_class, round(CAST(q[1] * 1000 AS numeric), 2) AS p50_ms,
               round(CAST(q[2] * 1000 AS numeric), 2) AS p95_ms
        FROM (SELECT cmd_class, quantile_cont((epoch_us(finished_at) - epoch_us(started_at)) / 1e6, [0.5, 0.95]) AS q
              FROM {source} {where} GROUP BY 1) AS d
        ORDER BY 3 DESC, 1 {limit}""",
}
"""DuckDB-only texts of reports whose shared text has a cheaper DuckDB form giving the same rows (checked against
Postgres by ``tests/integration/test_lake_reports.py``)."""


def report_sql(name: str, *, source: str = "commands", since: dt.datetime | None = None,
               until: dt.datetime | None = None, limit: int | None = 20) -> str:
    """The SQL of report ``name`` over ``source`` (a trusted relation name), for DuckDB or Postgres alike.

    ``limit=None``: every row (used to count what a limited report leaves out).
    """
    conds = []
    if since is not None:
        conds.append(f"started_at >= CAST('{_utc(since)}' AS timestamp)")
        if source in LAKE_SOURCES:
            conds.append(f"day >= CAST('{_utc(since)[:10]}' AS date)")
    if until is not None:
        conds.append(f"started_at < CAST('{_utc(until)}' AS timestamp)")
        if source in LAKE_SOURCES:
            conds.append(f"day <= CAST('{_utc(until)[:10]}' AS date)")
    where = ("WHERE " + " AND ".join(conds)) if conds else ""
    where_ok = "WHERE " + " AND ".join([*conds, "status = 'succeeded'"])
    text = LAKE_REPORTS.get(name, REPORTS[name][1]) if source in LAKE_SOURCES else REPORTS[name][1]
    return text.format(source=source, where=where, where_ok=where_ok,
                                  limit="" if limit is None else f"LIMIT {int(limit)}")


def _utc(when: dt.datetime) -> str:
    """A naive UTC literal: the lake views hold UTC TIMESTAMPs; Postgres reads it in the session's UTC zone."""
    return when.astimezone(dt.UTC).replace(tzinfo=None).isoformat(sep=" ")


def run_report(con: duckdb.DuckDBPyConnection, name: str, *, source: str, since: dt.datetime | None,
               until: dt.datetime | None, limit: int) -> tuple[pa.Table, int]:
    """Report ``name``'s rows (at most ``limit``) and how many it has without the limit."""
    table = query(con, report_sql(name, source=source, since=since, until=until, limit=limit)).read_all()
    total = table.num_rows
    if total == limit:  # maybe cut: count the rows the limit left out
        every = report_sql(name, source=source, since=since, until=until, limit=None)
        total = query(con, f"SELECT count(*) AS n FROM ({every}) AS r").read_all()["n"][0].as_py()
    return table, total


# -- activity statistics (the Activity charts) over the lake plus the rows it does not hold yet -------------------

def activity_stats(con: duckdb.DuckDBPyConnection, *, source: str, since: dt.datetime, until: dt.datetime,
                   bucket: str, top: int, unexported: pa.Table | None = None) -> StatsRows:
    """``storage.journal_stats``' two statements on a journal connection over ``source`` (``commands`` or
    ``tenant_commands``) in ``since <= started_at < until``, with ``unexported`` (``TAIL_SCHEMA`` rows read from
    Postgres past the lake's export bound) added to the lake's rows, so the figures are exact, p95 included."""
    cols = ", ".join(ROW_COLUMNS)
    # ``day`` is the Hive key (the UTC date of started_at): filtering on it skips the other days' files unopened.
    last_day = (until.astimezone(dt.UTC) - dt.timedelta(microseconds=1)).date()
    rows = (f"SELECT {cols} FROM {source} WHERE day >= CAST('{since.astimezone(dt.UTC).date()}' AS date) "
            f"AND day <= CAST('{last_day}' AS date) AND started_at >= CAST('{_utc(since)}' AS timestamp) "
            f"AND started_at < CAST('{_utc(until)}' AS timestamp)")
    if unexported is not None and unexported.num_rows:
        con.register("_stats_unexported", unexported)  # an in-memory Arrow table: no file access is involved
        rows += f" UNION ALL SELECT {cols} FROM _stats_unexported"
    trunc = f"date_trunc('{'day' if bucket == 'day' else 'hour'}', started_at)"
    try:
        classes = query(con, CLASS_BUCKETS.format(bucket=trunc, rows=rows)).read_all()
        actors = query(con, ACTORS.format(rows=rows, top=int(top))).read_all()
    finally:
        if unexported is not None and unexported.num_rows:
            con.unregister("_stats_unexported")
    return StatsRows(classes=[tuple(r.values()) for r in classes.to_pylist()],
                     actors=[tuple(r.values()) for r in actors.to_pylist()])
