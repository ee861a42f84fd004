"""``cmdlog journal``: the activity timeline (Postgres), ad-hoc SQL and reports (DuckDB over the lake)."""

from __future__ import annotations

import contextlib
import csv
import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import typer
from rich.markup import escape
from rich.table import Table

from commandlog.cli import _common
from commandlog.journal.entries import timeline

if TYPE_CHECKING:  # the CLI imports services where a command needs them (start-up time)
    from commandlog.journal.entries import TimelinePage

app = typer.Typer(help="The activity journal.", no_args_is_help=True)

STATUS_STYLE = {"succeeded": "green", "failed": "red", "rejected": "yellow"}


class TimelineFormat(StrEnum):
    """Output formats of ``journal timeline``."""

    table = "table"
    json = "json"
    csv = "csv"


class SqlFormat(StrEnum):
    """Output formats of ``journal sql``."""

    table = "table"
    csv = "csv"
    json = "json"
    parquet = "parquet"


@app.command("timeline")
def timeline_cmd(
    tenant: str | None = typer.Option(None, "--tenant", help="Read this tenant's full log (row-level security)."),
    subject: str | None = typer.Option(None, "--subject", help="Only commands touching this subject (kind:id)."),
    actor: str | None = typer.Option(None, "--actor", help="Only commands run by this actor."),
    cmd_class: str | None = typer.Option(None, "--class", help="Only this command class."),
    status: str | None = typer.Option(None, "--status", help="succeeded, failed or rejected."),
    since: str | None = typer.Option(None, "--since", help="From this ISO date/time (UTC if no offset)."),
    until: str | None = typer.Option(None, "--until", help="Before this ISO date/time."),
    correlation: str | None = typer.Option(None, "--correlation", help="Only this correlation id."),
    limit: int = typer.Option(50, "--limit", "-n", help="Entries per page (1-1000)."),
    cursor: str | None = typer.Option(None, "--cursor", help="Cursor printed by the previous page."),
    fmt: TimelineFormat = typer.Option(TimelineFormat.table, "--format", help="table, json or csv."),
) -> None:
    """Newest-first timeline; without --tenant, the lean global log of all tenants (admin view)."""
    with _common.database() as db:
        page = timeline(db, tenant=tenant, admin=tenant is None, subject=subject, actor=actor, cmd_class=cmd_class,
                        status=status, since=since, until=until, correlation_id=correlation, cursor=cursor,
                        limit=limit, replica=True)
    if fmt is TimelineFormat.json:
        sys.stdout.write(json.dumps({"entries": page.entries, "next_cursor": page.next_cursor}, indent=2) + "\n")
    elif fmt is TimelineFormat.csv:
        _timeline_csv(page.entries)
    else:
        _timeline_table(page, tenant)


def _timeline_table(page: TimelinePage, tenant: str | None) -> None:
    table = Table(title=f"journal of {tenant}" if tenant else "journal (all tenants, lean)")
    for col in ("started at", "tenant", "actor", "command", "status", "subjects", "events"):
        table.add_column(col, no_wrap=True)
    table.add_column("body / error", overflow="fold")
    for e in page.entries:
        detail = e["error_message"] if e["status"] != "succeeded" else (
            "(body excluded)" if e["cmd_body"] is None else json.dumps(e["cmd_body"], ensure_ascii=False))
        table.add_row(e["started_at"][:19].replace("T", " "), escape(e["tenant_id"]), escape(e["actor_id"]),
                      escape(e["cmd_class"]), f"[{STATUS_STYLE.get(e['status'], '')}]{e['status']}[/]",
                      escape(", ".join(e["subjects"])), escape(", ".join(ev["event_type"] for ev in e["events"])),
                      escape((detail or "")[:160]))
    _common.console.print(table)
    if page.next_cursor:
        _common.console.print(f"more: --cursor {page.next_cursor}", highlight=False)


def _timeline_csv(entries: list[dict]) -> None:
    cols = ["cmd_uuid", "started_at", "finished_at", "tenant_id", "actor_id", "cmd_class", "status", "subjects",
            "cmd_body", "error_type", "error_message", "correlation_id", "causation_id", "events"]
    out = csv.DictWriter(sys.stdout, fieldnames=cols, lineterminator="\n")
    out.writeheader()
    for e in entries:
        row = dict(e, subjects=";".join(e["subjects"]), events=";".join(ev["event_type"] for ev in e["events"]),
                   cmd_body=json.dumps(e["cmd_body"]) if e["cmd_body"] is not None else "")
        out.writerow({k: row.get(k) for k in cols})


@app.command("sql")
def sql_cmd(
    sql: str = typer.Argument(..., help="One SELECT over commands, events, frontend_actions (, tenant_commands)."),
    tenant: str | None = typer.Option(None, "--tenant", help="Add the view tenant_commands with this tenant only."),
    fmt: SqlFormat = typer.Option(SqlFormat.table, "--format", help="table, csv, json or parquet."),
    out: str | None = typer.Option(None, "--out", help="Write to this file instead of stdout (needed for parquet)."),
    max_rows: int = typer.Option(200, "--max-rows", min=1, help="Rows shown by the table format."),
) -> None:
    """Query the lake with DuckDB (in-memory, read-only; the operational database is not touched)."""
    from commandlog.journal.analytics import lake_connection, run_sql  # noqa: PLC0415 — start-up cost: DuckDB
    from storage.lake.duckdb_journal import TenantViewError  # noqa: PLC0415 — start-up cost: DuckDB

    if fmt is SqlFormat.parquet and not out:
        _common.fail("--format parquet needs --out FILE")
    con = lake_connection(_common.settings(), tenant=tenant)
    try:
        reader = run_sql(con, sql)
    except TenantViewError:
        _common.fail("tenant_commands holds one tenant's full log: add --tenant TENANT to query it")
    _write_result(reader, fmt, out, max_rows=max_rows)


@app.command("report")
def report_cmd(
    tenant: str | None = typer.Option(None, "--tenant", help="Report on this tenant's commands only."),
    since: str | None = typer.Option(None, "--since", help="From this ISO date/time."),
    until: str | None = typer.Option(None, "--until", help="Before this ISO date/time."),
    limit: int = typer.Option(10, "--limit", "-n", min=1, max=10_000, help="Rows per report."),
    fmt: TimelineFormat = typer.Option(TimelineFormat.table, "--format", help="table or json (csv: one table)."),
    html: str | None = typer.Option(None, "--html", help="Write the Activity charts (commands per hour by class, "
                                    "failure rate, p95 per class, top actors) to this self-contained HTML file."),
    bucket: str = typer.Option("hour", "--bucket", help="With --html: hour or day buckets."),
) -> None:
    """Built-in analytics: activity per actor and day, command mix, failure rate and p50/p95 duration per class,
    most-changed subjects, busiest hours. With --html, the Activity charts as one file that opens offline."""
    if html is not None:
        _html_report(html, tenant=tenant, since=since, until=until, bucket=bucket, top=limit)
        return
    from commandlog.journal.analytics import lake_connection, reports  # noqa: PLC0415 — start-up cost: DuckDB

    con = lake_connection(_common.settings(), tenant=tenant)
    results = reports(con, tenant=tenant, since=since, until=until, limit=limit)
    if fmt is TimelineFormat.table:
        for r in results:
            _print_table(r.table, title=r.title)
            if r.total > r.table.num_rows:
                _common.console.print(f"{r.table.num_rows} of {r.total} rows; --limit N shows more", highlight=False)
        return
    doc = {r.name: r.table.to_pylist() for r in results}
    if fmt is TimelineFormat.json:
        sys.stdout.write(json.dumps(doc, indent=2, default=str) + "\n")
    else:
        out = csv.writer(sys.stdout, lineterminator="\n")
        out.writerow(["report", "row"])
        for name, rows in doc.items():
            for row in rows:
                out.writerow([name, json.dumps(row, default=str)])


def _html_report(path: str, *, tenant: str | None, since: str | None, until: str | None, bucket: str,
                 top: int) -> None:
    """The figures of ``GET /api/journal/stats`` for the window, drawn into ``path`` (written whole or not at all)."""
    from commandlog.journal.stats import MAX_TOP, activity  # noqa: PLC0415 — start-up cost: DuckDB
    from commandlog.web.report import render_html  # noqa: PLC0415 — start-up cost: reads the inlined assets

    s = _common.settings()
    with _common.database(s) as db:
        stats = activity(db, tenant=tenant, since=since, until=until, bucket=bucket, top=min(top, MAX_TOP),
                         lake_uri=s.lake)
    doc = stats.to_json()
    target = Path(path)
    partial = target.with_name(f".{target.name}.partial")
    partial.write_text(render_html(doc), encoding="utf-8")
    partial.replace(target)
    summary = doc["summary"]
    _common.console.print(f"wrote {target}: {summary['commands']:,} commands, {summary['failed']:,} failed, "
                          f"{len(doc['buckets'])} {bucket} buckets from {doc['since']} to {doc['until']} "
                          f"(source: {doc['source']})", highlight=False, soft_wrap=True)


def _write_result(reader: pa.RecordBatchReader, fmt: SqlFormat, out: str | None, *, max_rows: int) -> None:
    if fmt is SqlFormat.table:
        batches, n = [], 0
        for batch in reader:
            batches.append(batch)
            n += batch.num_rows
            if n >= max_rows:
                break
        _print_table(pa.Table.from_batches(batches, reader.schema).slice(0, max_rows))
        return
    if fmt is SqlFormat.parquet:
        import pyarrow.parquet as pq  # noqa: PLC0415 — start-up cost: pyarrow.parquet and its filesystems

        with pq.ParquetWriter(out, reader.schema) as writer:
            for batch in reader:
                writer.write_batch(batch)
        _common.console.print(f"wrote {pq.ParquetFile(out).metadata.num_rows} rows to {out}")
        return
    with open(out, "w", newline="") if out else contextlib.nullcontext(sys.stdout) as target:
        if fmt is SqlFormat.csv:
            w = csv.writer(target, lineterminator="\n")
            w.writerow(reader.schema.names)
            for batch in reader:
                for row in batch.to_pylist():
                    w.writerow([_cell(v) for v in row.values()])
        else:
            rows = [r for batch in reader for r in batch.to_pylist()]
            target.write(json.dumps(rows, indent=2, default=str) + "\n")


def _cell(v: object) -> object:
    return json.dumps(v, default=str) if isinstance(v, list | dict) else ("" if v is None else v)


def _print_table(table: pa.Table, *, title: str | None = None) -> None:
    t = Table(title=title)
    for name in table.column_names:
        t.add_column(escape(name), overflow="fold")
    for row in table.to_pylist():
        t.add_row(*(escape(str(_cell(v))) for v in row.values()))
    _common.console.print(t)
    if title is None:
        _common.console.print(f"{table.num_rows} row(s) shown", highlight=False)
