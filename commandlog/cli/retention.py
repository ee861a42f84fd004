"""``cmdlog retention``: run a dry run (or, with ``--purge``, a purge) once, and manage legal holds (each change logged
as a command)."""

from __future__ import annotations

import dataclasses
import getpass
import json
import sys
from typing import Annotated

import typer
from rich.table import Table

from commandlog.cli import _common
from commandlog.retention.policy import (
    DRY_RUN,
    EXPORT_FIRST,
    PURGE_TAKERS,
    RetentionPolicy,
    add_hold,
    list_holds,
    remove_hold,
)

app = typer.Typer(help="Retention cleanup and legal holds.", no_args_is_help=True)
hold_app = typer.Typer(help="Legal holds: held rows are never purged.", no_args_is_help=True)
app.add_typer(hold_app, name="hold")


def _actor(actor: str | None) -> str:
    return actor or f"cli:{getpass.getuser()}"


@app.command("run")
def run(
    dry_run: bool = typer.Option(DRY_RUN, "--dry-run/--purge",
                                 help="--dry-run counts what would be removed and removes nothing; "
                                      "--purge removes it (the flow's dry_run=False)."),
    lake: str | None = typer.Option(None, "--lake", help="Lake to guard and purge (default: CMDLOG_RETENTION_LAKE)."),
    no_lake: bool = typer.Option(False, "--no-lake", help="Ignore the lake: no archive guard, no lake purge."),
    export_first: bool = typer.Option(EXPORT_FIRST, "--export-first/--no-export-first",
                                      help="Export new rows to the lake before purging."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    takers: int = typer.Option(PURGE_TAKERS, "--takers",
                               help="Units of the purge worked on at once by this process (threads): more shortens "
                                    "the purge phase and lengthens the writers' tail."),
) -> None:
    """Purge entries older than their class allows (policy from CMDLOG_RETENTION_*), in Postgres and the lake.

    A dry run unless --purge, like the retention-cleanup flow.
    """
    from commandlog.bootstrap import build_bus  # noqa: PLC0415 — start-up cost: the bus and its connection pool
    from commandlog.retention.cleanup import run_cleanup  # noqa: PLC0415 — start-up cost: ADBC, via the export
    from commandlog.retention.purge import FanOut, lake_for  # noqa: PLC0415 — start-up cost: ADBC, via the lake purge

    s = _common.settings()
    policy = RetentionPolicy.from_settings(s)
    with _common.database(s) as db:
        uri = None if no_lake else (lake or lake_for(db, s))
        report = run_cleanup(db, build_bus(db, s), policy, dry_run=dry_run, export_first=export_first, lake_uri=uri,
                             fan=FanOut(takers=takers))
    if as_json:
        out = dataclasses.asdict(report) | {"total_rows": report.total_rows}
        sys.stdout.write(json.dumps(out, default=str) + "\n")
        return
    title = (f"{'dry run: would purge' if dry_run else 'removed'} {report.total_rows} rows "
             f"(as of {report.as_of:%Y-%m-%d %H:%M} UTC)")
    table = Table(title=title)
    for col in ("table", "retention", "tenant", "rows"):
        table.add_column(col, justify="right" if col == "rows" else "left")
    for c in report.counts:
        table.add_row(c["table"], c["retention"], c["tenant_id"], str(c["rows"]))
    _common.console.print(table)
    _common.console.print(f"partitions dropped: {report.partitions_dropped}, bytes freed: {report.bytes_freed}, "
                          f"lake: {report.lake_uri or 'none'}"
                          + (f", finished interrupted run(s) {report.resumed}" if report.resumed else ""))
    if dry_run:
        _common.console.print(f"dry run: nothing was changed; would purge {report.total_rows} rows — "
                              "run again with --purge to remove them", highlight=False)


# The options the hold commands share.
_Tenant = Annotated[str, typer.Option("--tenant", help="The tenant held (or to hold).")]
_Subject = Annotated[str | None, typer.Option("--subject", help="One subject only, e.g. invoice:42 (omit for the "
                                                                 "whole tenant).")]
_Actor = Annotated[str | None, typer.Option("--actor", help="Who does it (default cli:<user>).")]


@hold_app.command("add")
def hold_add(tenant: _Tenant, reason: Annotated[str, typer.Option("--reason", help="Why (kept in the log).")],
             subject: _Subject = None, actor: _Actor = None) -> None:
    """Put a tenant (or one subject of it) under a legal hold; logged as retention.AddLegalHold."""
    with _common.bus() as bus:
        hold_id = add_hold(bus, tenant=tenant, subject=subject, reason=reason, actor=_actor(actor))
    _common.console.print(f"hold {hold_id} added on {tenant}{'/' + subject if subject else ''}")


@hold_app.command("remove")
def hold_remove(tenant: _Tenant, subject: _Subject = None,
                reason: Annotated[str | None, typer.Option("--reason", help="Why it is released.")] = None,
                actor: _Actor = None) -> None:
    """Release a legal hold; logged as retention.RemoveLegalHold."""
    with _common.bus() as bus:
        hold_id = remove_hold(bus, tenant=tenant, subject=subject, reason=reason, actor=_actor(actor))
    _common.console.print(f"hold {hold_id} released")


@hold_app.command("list")
def hold_list(
    tenant: str | None = typer.Option(None, "--tenant", help="Only this tenant's holds."),
    include_released: bool = typer.Option(False, "--all", help="Include released holds."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List legal holds, newest first."""
    with _common.database() as db:
        holds = list_holds(db, tenant=tenant, include_released=include_released)
    if as_json:
        sys.stdout.write(json.dumps([dataclasses.asdict(h) for h in holds], default=str) + "\n")
        return
    table = Table(title=f"{len(holds)} legal hold(s)")
    for col in ("id", "tenant", "subject", "reason", "by", "since", "released"):
        table.add_column(col)
    for h in holds:
        table.add_row(str(h.hold_id), h.tenant_id, h.subject or "(whole tenant)", h.reason, h.created_by,
                      f"{h.created_at:%Y-%m-%d %H:%M}", f"{h.released_at:%Y-%m-%d %H:%M}" if h.released_at else "")
    _common.console.print(table)
