"""``cmdlog log``: look at the command log."""

from __future__ import annotations

import csv
import json
import sys
from enum import StrEnum
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from commandlog.cli import _common

app = typer.Typer(help="The command log.", no_args_is_help=True)

STATUS_STYLE = {"succeeded": "green", "failed": "red", "rejected": "yellow"}
COLUMNS = ("cmd_uuid", "started_at", "tenant_id", "actor_id", "cmd_class", "status", "subjects", "cmd_body",
           "error_message")
"""Fields of the json and csv formats (``cmd_body`` JSON text in csv, subjects joined with ``;``)."""


class TailFormat(StrEnum):
    """Output formats of ``log tail``."""

    table = "table"
    json = "json"
    csv = "csv"


@app.command("tail")
def tail(
    tenant: str | None = typer.Option(None, "--tenant", help="Only this tenant (read through its tenant session)."),
    n: int = typer.Option(20, "-n", min=1, max=10_000, help="How many of the newest entries."),
    fmt: TailFormat = typer.Option(TailFormat.table, "--format",
                                   help="table; json: one JSON object per line; csv with a header. Oldest first."),
) -> None:
    """Show the newest entries of the global log (or of one tenant's log), oldest of them first."""
    from commandlog.journal.logview import newest  # noqa: PLC0415 — start-up cost: the connection pool

    with _common.database() as db:
        rows = list(reversed(newest(db, tenant=tenant, limit=n)))
    if fmt is TailFormat.json:
        for r in rows:
            sys.stdout.write(json.dumps(_plain(r), ensure_ascii=False) + "\n")
    elif fmt is TailFormat.csv:
        out = csv.writer(sys.stdout, lineterminator="\n")
        out.writerow(COLUMNS)
        for r in rows:
            out.writerow([_csv_cell(k, v) for k, v in _plain(r).items()])
    else:
        _table(rows, tenant)


def _plain(row: dict) -> dict:
    """A row with JSON-ready values: ids as text, times in ISO 8601."""
    out = {k: row[k] for k in COLUMNS}
    out["cmd_uuid"] = str(row["cmd_uuid"])
    out["started_at"] = row["started_at"].isoformat()
    out["subjects"] = list(row["subjects"] or [])
    return out


def _csv_cell(key: str, value: Any) -> Any:
    if key == "subjects":
        return ";".join(value)
    if value is None:
        return ""
    return json.dumps(value, ensure_ascii=False) if key == "cmd_body" else value


def _table(rows: list[dict], tenant: str | None) -> None:
    table = Table(title=f"newest {len(rows)} commands" + (f" of {tenant}" if tenant else ""))
    for col in ("started at", "tenant", "actor", "command", "status", "subjects"):
        table.add_column(col, no_wrap=True)
    table.add_column("body / error", overflow="fold")
    for r in rows:
        detail = r["error_message"] if r["status"] != "succeeded" else (
            "(body excluded)" if r["cmd_body"] is None else json.dumps(r["cmd_body"], ensure_ascii=False))
        table.add_row(r["started_at"].strftime("%Y-%m-%d %H:%M:%S"), escape(r["tenant_id"]), escape(r["actor_id"]),
                      escape(r["cmd_class"]), f"[{STATUS_STYLE.get(r['status'], '')}]{r['status']}[/]",
                      escape(", ".join(r["subjects"])), escape((detail or "")[:160]))
    _common.table_console().print(table)
