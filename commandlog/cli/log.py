"""``cmdlog log``: look at the command log."""

from __future__ import annotations

import json

import typer
from rich.markup import escape
from rich.table import Table

from commandlog.cli import _common

app = typer.Typer(help="The command log.", no_args_is_help=True)

STATUS_STYLE = {"succeeded": "green", "failed": "red", "rejected": "yellow"}


@app.command("tail")
def tail(
    tenant: str | None = typer.Option(None, "--tenant", help="Only this tenant (read through its tenant session)."),
    n: int = typer.Option(20, "-n", min=1, max=10_000, help="How many of the newest entries."),
) -> None:
    """Show the newest entries of the global log (or of one tenant's log)."""
    from commandlog.logview import newest

    with _common.database() as db:
        rows = newest(db, tenant=tenant, limit=n)
    table = Table(title=f"newest {len(rows)} commands" + (f" of {tenant}" if tenant else ""))
    for col in ("started at", "tenant", "actor", "command", "status", "subjects"):
        table.add_column(col, no_wrap=True)
    table.add_column("body / error", overflow="fold")
    for r in reversed(rows):
        detail = r["error_message"] if r["status"] != "succeeded" else (
            "(body excluded)" if r["cmd_body"] is None else json.dumps(r["cmd_body"], ensure_ascii=False))
        table.add_row(r["started_at"].strftime("%Y-%m-%d %H:%M:%S"), escape(r["tenant_id"]), escape(r["actor_id"]),
                      escape(r["cmd_class"]), f"[{STATUS_STYLE.get(r['status'], '')}]{r['status']}[/]",
                      escape(", ".join(r["subjects"])), escape((detail or "")[:160]))
    _common.console.print(table)
