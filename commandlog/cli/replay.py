"""``cmdlog replay``: run logged commands again (a dry run that compares, or ``--execute``), by id or by filter.

    cmdlog replay 0192f0c4-… 0192f0c5-…                                  # dry run: compare, commit nothing
    cmdlog replay --failed --since 2h --class billing.IssueInvoice --execute

Runs the same service as the ``replay-commands`` flow, in this process, batch by batch, with the same defaults:
what an option leaves unset is left to ``ReplayRequest`` (a dry run, its cap and batch size). Registered as a single
command (``app.command("replay")(replay)``), not a group: it has no sub-commands.
"""

from __future__ import annotations

import getpass
import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated

import typer
from pydantic import ValidationError
from rich.markup import escape
from rich.table import Table

from commandlog.cli import _common
from commandlog.validation import errors_text, validation_errors

if TYPE_CHECKING:  # the CLI imports services where a command needs them (start-up time)
    from commandlog.replay.service import ReplayReport

OUTCOME_STYLE = {"succeeded": "green", "reproduced": "green", "now_succeeds": "green", "failed": "red",
                 "now_fails": "red", "diverged": "yellow", "not_replayable": "yellow", "not_found": "yellow",
                 "already_replayed": "cyan"}
_RELATIVE = re.compile(r"^(\d+)([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_when(value: str | None, *, option: str) -> datetime | None:
    """``2h``/``30m``/``7d`` ago, or an ISO date/datetime (UTC when no zone)."""
    if value is None:
        return None
    match = _RELATIVE.match(value.strip())
    if match:
        return datetime.now(UTC) - timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        raise typer.BadParameter(f"{value!r} is neither an ISO date/time nor a span like 2h, 30m, 7d",
                                 param_hint=option) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def replay(
    cmd_uuids: Annotated[list[str] | None, typer.Argument(help="Ids of the commands to replay.",
                                                          show_default=False)] = None,
    failed: bool = typer.Option(False, "--failed", help="Select failed commands (with the filters below)."),
    since: str | None = typer.Option(None, "--since", help="Started at or after: ISO time or a span (2h, 7d)."),
    until: str | None = typer.Option(None, "--until", help="Started before: ISO time or a span ago."),
    cmd_class: str | None = typer.Option(None, "--class", help="Only this command class."),
    tenant: str | None = typer.Option(None, "--tenant", help="Only this tenant."),
    correlation: str | None = typer.Option(None, "--correlation", help="Only this correlation id."),
    include_replayed: bool = typer.Option(False, "--include-replayed",
                                          help="Also originals that a replay already recovered."),
    execute: bool | None = typer.Option(None, "--execute/--dry-run", show_default=False,
                                        help="--execute runs the commands again (the flow's mode=execute); "
                                             "--dry-run (the default) compares with the original outcome and "
                                             "commits nothing."),
    max_commands: int | None = typer.Option(None, "--max", show_default=False,
                                            help="Refuse a selection larger than this (default: as in the flow)."),
    batch_size: int | None = typer.Option(None, "--batch-size", show_default=False,
                                          help="Commands per batch (default: as in the flow)."),
    actor: str = typer.Option(f"cli:{getpass.getuser()}", "--as", help="Requester (actor of the replays)."),
    request_id: str | None = typer.Option(None, "--request-id", help="Resume (or rerun) this replay request."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per command instead of a table."),
) -> None:
    """Replay commands by id, or select them with --failed and filters; a dry run unless --execute."""
    from commandlog.replay.service import ReplayRequest, run_replay  # noqa: PLC0415 — start-up cost: the bus, its pool

    given = {"mode": None if execute is None else ("execute" if execute else "dry_run"),
             "max_commands": max_commands, "batch_size": batch_size}
    fields: dict = {k: v for k, v in given.items() if v is not None}  # unset: ReplayRequest's default, as in the flow
    fields.update(requested_by=actor, request_id=_uuid(request_id, "--request-id") if request_id else None)
    if cmd_uuids:
        if failed or since or until or cmd_class or tenant or correlation:
            _common.fail("give command ids or --failed/--since/--until/--class/--tenant/--correlation, not both")
        fields["cmd_uuids"] = [_uuid(u, "CMD_UUIDS") for u in cmd_uuids]
    else:
        if not (failed or since or until or cmd_class or tenant or correlation):
            _common.fail("give command ids, or select with --failed (and --since, --class, --tenant)")
        fields.update(status="failed" if failed else None, since=parse_when(since, option="--since"),
                      until=parse_when(until, option="--until"), cmd_class=cmd_class, tenant_id=tenant,
                      correlation_id=_uuid(correlation, "--correlation") if correlation else None,
                      include_replayed=include_replayed)
    try:
        request = ReplayRequest(**fields)
    except ValidationError as e:
        _common.fail(errors_text(validation_errors(e), whole="request"))
    with _common.bus() as bus:
        report = run_replay(bus.db, bus, request)
    if as_json:
        for item in report.items:
            typer.echo(json.dumps(item.row(), default=str))
        return
    _print(report)


def _uuid(value: str, hint: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a UUID", param_hint=hint) from None


def _print(report: ReplayReport) -> None:
    table = Table(title=f"replay {report.plan.request_id} ({report.plan.mode.replace('_', ' ')})")
    for col, width in (("original", 36), ("class", 12), ("tenant", 6), ("was", 6), ("outcome", 12),
                       ("replay", 36), ("detail", 20)):
        table.add_column(col, overflow="fold", min_width=width)
    for item in report.items:
        style = OUTCOME_STYLE.get(item.outcome, "")
        table.add_row(str(item.original_cmd_uuid), escape(item.cmd_class or ""), escape(item.tenant_id or ""),
                      item.original_status or "", f"[{style}]{item.outcome}[/]",
                      str(item.replay_cmd_uuid or ""), escape((item.message or "")[:300]))
    _common.console.print(table)
    counts = ", ".join(f"{k}: {v}" for k, v in sorted(report.counts().items())) or "nothing selected"
    _common.console.print(f"{len(report.items)} commands — {counts}", highlight=False)
    if report.plan.mode == "dry_run":
        _common.console.print("dry run: nothing was changed; run again with --execute to replay for real",
                              highlight=False)
