"""Journal analytics on DuckDB over the lake: built-in reports, ad-hoc read-only SQL, a connection for notebooks.

The report SQL is written in the dialect DuckDB and Postgres share, over a relation named by ``{source}``
(``commands`` or ``tenant_commands`` in the lake, ``command_log`` in Postgres), so the same text runs on both — the
journal benchmark compares them (Postgres sessions running it set ``TimeZone = 'UTC'``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import duckdb
import pyarrow as pa

from commandlog.journal.entries import InvalidFilterError, TimeBound, parse_time
from commandlog.settings import Settings
from storage.lake.duckdb_journal import open_journal, query
from storage.lake.datasets import Lake

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


@dataclass(kw_only=True)
class Report:
    """One built-in report's result."""

    name: str
    """Key in ``REPORTS``."""
    title: str
    """Human title."""
    table: pa.Table
    """The rows (at most the ``limit`` asked for)."""
    total: int
    """Rows the report has without the limit: more than ``table.num_rows`` when the table is cut."""


def report_sql(name: str, *, source: str = "commands", since: dt.datetime | None = None,
               until: dt.datetime | None = None, limit: int | None = 20) -> str:
    """The SQL of report ``name`` over ``source`` (a trusted relation name), for DuckDB or Postgres alike.

    ``limit=None``: every row (used to count what a limited report leaves out).
    """
    conds = []
    if since is not None:
        conds.append(f"started_at >= CAST('{_utc(since)}' AS timestamp)")
    if until is not None:
        conds.append(f"started_at < CAST('{_utc(until)}' AS timestamp)")
    where = ("WHERE " + " AND ".join(conds)) if conds else ""
    where_ok = "WHERE " + " AND ".join(conds + ["status = 'succeeded'"])
    return REPORTS[name][1].format(source=source, where=where, where_ok=where_ok,
                                  limit="" if limit is None else f"LIMIT {int(limit)}")


def _utc(when: dt.datetime) -> str:
    """A naive UTC literal: the lake views hold UTC TIMESTAMPs; Postgres reads it in the session's UTC zone."""
    return when.astimezone(dt.UTC).replace(tzinfo=None).isoformat(sep=" ")


def lake_connection(lake: str | Settings | None = None, *, tenant: str | None = None,
                    threads: int | None = None) -> duckdb.DuckDBPyConnection:
    """A read-only in-memory DuckDB with the journal views over the lake (for notebooks and scripts).

    ``lake`` is a lake URI, settings, or None for the configured lake; ``tenant`` adds ``tenant_commands``.
    """
    uri = lake if isinstance(lake, str) else (lake or Settings.from_env()).lake
    return open_journal(Lake(uri), tenant=tenant, threads=threads)


def run_sql(con: duckdb.DuckDBPyConnection, sql: str) -> pa.RecordBatchReader:
    """Run one read-only statement on a journal connection; DuckDB's own message on bad SQL (``SqlError``)."""
    return query(con, sql)


def reports(con: duckdb.DuckDBPyConnection, *, tenant: str | None = None, since: TimeBound = None,
            until: TimeBound = None,
            limit: int = 20, only: list[str] | None = None) -> list[Report]:
    """Run the built-in reports on a journal connection (over ``tenant_commands`` when ``tenant`` is given)."""
    lo, hi = parse_time("since", since), parse_time("until", until)
    if not isinstance(limit, int) or not 1 <= limit <= 10_000:
        raise InvalidFilterError("limit", "must be an integer from 1 to 10000")
    unknown = sorted(set(only or ()) - set(REPORTS))
    if unknown:
        raise InvalidFilterError("report", f"unknown report(s) {', '.join(unknown)}; known: {', '.join(REPORTS)}")
    source = "tenant_commands" if tenant is not None else "commands"
    out = []
    for name in only or REPORTS:
        sql = report_sql(name, source=source, since=lo, until=hi, limit=limit)
        table = query(con, sql).read_all()
        total = table.num_rows
        if total == limit:  # maybe cut: count the rows the limit left out
            every = report_sql(name, source=source, since=lo, until=hi, limit=None)
            total = query(con, f"SELECT count(*) AS n FROM ({every}) AS r").read_all()["n"][0].as_py()
        out.append(Report(name=name, title=REPORTS[name][0], table=table, total=total))
    return out
