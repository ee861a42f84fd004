"""Journal analytics on DuckDB over the lake: built-in reports, ad-hoc read-only SQL, a connection for notebooks.

The reports' SQL lives in ``storage.lake.reports`` (``REPORTS`` and ``report_sql`` are importable from here too);
this module checks what callers ask for.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import pyarrow as pa

from commandlog.journal.entries import InvalidFilterError, TimeBound, parse_time
from commandlog.settings import Settings
from storage.lake.datasets import Lake
from storage.lake.duckdb_journal import open_journal, query
from storage.lake.reports import REPORTS, report_sql, run_report

__all__ = ["REPORTS", "Report", "lake_connection", "report_sql", "reports", "run_sql"]


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
        table, total = run_report(con, name, source=source, since=lo, until=hi, limit=limit)
        out.append(Report(name=name, title=REPORTS[name][0], table=table, total=total))
    return out
