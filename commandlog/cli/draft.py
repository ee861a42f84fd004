"""``cmdlog draft``: prepare a command without running it, see what it would do, then approve (or discard) it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.markdown import Markdown
from rich.markup import escape
from rich.table import Table

from commandlog import command_json
from commandlog.auth.tokens import authenticate
from commandlog.cli import _common
from commandlog.drafts.review import issue_approval_code, review_markdown
from commandlog.drafts.service import DraftService
from commandlog.errors import UnstorableValueError

if TYPE_CHECKING:  # the CLI imports services where a command needs them (start-up time)
    from storage.drafts import DraftRow

app = typer.Typer(help="Draft commands: create, edit, project, approve exactly once.", no_args_is_help=True)

TENANT = typer.Option(..., "--tenant", help="The tenant the draft belongs to.")
AS_JSON = typer.Option(False, "--json", help="Print JSON instead of a table.")


def _body(text: str) -> Any:
    """A JSON body given inline or as ``@path``."""
    if text.startswith("@"):
        try:
            text = Path(text[1:]).read_text()
        except OSError as e:
            _common.fail(f"body: cannot read {text[1:]}: {e}")
    try:
        return command_json.loads(text, field="body")
    except UnstorableValueError as e:
        _common.fail(str(e))
    except json.JSONDecodeError as e:
        _common.fail(f"body: not valid JSON: {e}")


def _sets(pairs: list[str]) -> dict[str, Any]:
    """``field=value`` pairs; a value that parses as JSON is taken as JSON, otherwise as text."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            _common.fail(f"set: expected field=value, got {pair!r}")
        try:
            out[key] = command_json.loads(value, field=key)
        except UnstorableValueError as e:
            _common.fail(str(e))
        except json.JSONDecodeError:
            out[key] = value
    return out


def _row_json(d: DraftRow) -> dict[str, Any]:
    keep = ("draft_uuid", "tenant_id", "cmd_class", "cmd_version", "cmd_body", "subjects", "version", "status",
            "created_by", "created_at", "updated_at", "executed_at", "executed_as_cmd_uuid", "projection_fingerprint",
            "projected_version", "projected_at", "decided_by", "decided_at", "decision_comment")
    return {k: (v if isinstance(v, (dict, list, int, type(None))) else str(v)) for k in keep
            for v in [getattr(d, k)]}


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False, default=str))


@app.command("create")
def create(cmd_class: str = typer.Argument(..., help="Registered command class, e.g. billing.RenameCustomer."),
           tenant: str = TENANT,
           actor: str = typer.Option(..., "--actor", help="Who prepares the draft."),
           body: str = typer.Option(..., "--body", help="The command body as JSON, or @file.json.")) -> None:
    """Create a draft from a JSON body (validated; errors name the field); prints its id."""
    with _common.bus() as bus:
        d = DraftService(bus).create(tenant, actor, cmd_class=cmd_class, body=_body(body))
    print(d.draft_uuid)


@app.command("list")
def list_(tenant: str = TENANT, status: str = typer.Option(None, "--status", help="open|executed|rejected|discarded."),
          n: int = typer.Option(50, "-n", min=1, max=1000, help="How many."), as_json: bool = AS_JSON) -> None:
    """The tenant's drafts, most recently changed first."""
    with _common.bus() as bus:
        rows = DraftService(bus).list(tenant, status=status, limit=n)
    if as_json:
        return _print_json([_row_json(d) for d in rows])
    table = Table(title=f"{len(rows)} drafts of {tenant}")
    for col in ("draft", "command", "version", "status", "subjects", "updated", "by / decided by"):
        table.add_column(col, no_wrap=col != "subjects")
    for d in rows:
        table.add_row(str(d.draft_uuid), escape(d.cmd_class), str(d.version), d.status, escape(", ".join(d.subjects)),
                      d.updated_at.strftime("%Y-%m-%d %H:%M:%S"), escape(d.decided_by or d.created_by))
    _common.console.print(table)


@app.command("show")
def show(draft_uuid: str = typer.Argument(...), tenant: str = TENANT, as_json: bool = AS_JSON) -> None:
    """One draft: its body, version, status and last projection."""
    with _common.bus() as bus:
        d = DraftService(bus).get(draft_uuid, tenant_id=tenant)
    out = _row_json(d)
    if as_json:
        return _print_json({**out, "projection": d.projection})
    for key, value in out.items():
        if value is not None:
            text = json.dumps(value, ensure_ascii=False) if isinstance(value, (dict, list)) else str(value)
            _common.console.print(f"[bold]{key}[/]: {escape(text)}")


@app.command("edit")
def edit(draft_uuid: str = typer.Argument(...), tenant: str = TENANT,
         version: int = typer.Option(..., "--version", help="The version you are editing (optimistic concurrency)."),
         body: str = typer.Option(None, "--body", help="The whole new body as JSON, or @file.json."),
         set_: list[str] = typer.Option(None, "--set", help="field=value (repeatable): change single fields.")) -> None:
    """Change a draft's body; an edit of an old version is refused and names the current one."""
    if (body is None) == (not set_):
        _common.fail("give either --body or one or more --set")
    new_body, merge = (_body(body), False) if body is not None else (_sets(set_), True)
    with _common.bus() as bus:
        d = DraftService(bus).edit(draft_uuid, tenant_id=tenant, body=new_body, expected_version=version, merge=merge)
    _common.console.print(f"draft {d.draft_uuid} is now version {d.version}")


@app.command("project")
def project(draft_uuid: str = typer.Argument(...), tenant: str = TENANT, as_json: bool = AS_JSON) -> None:
    """Run the draft without committing anything: result, events, before/after diff, fingerprint."""
    with _common.bus() as bus:
        drafts = DraftService(bus)
        p = drafts.project(draft_uuid, tenant_id=tenant)
        if as_json:
            return _print_json(p.to_json())
        _common.console.print(Markdown(review_markdown(drafts, drafts.get(draft_uuid, tenant_id=tenant), p)))


@app.command("approve")
def approve(draft_uuid: str = typer.Argument(...), tenant: str = TENANT,
            approver: str = typer.Option(..., "--approver", help="Who approves (the command's actor)."),
            comment: str = typer.Option(None, "--comment"),
            fingerprint: str = typer.Option(None, "--fingerprint", help="The projection you reviewed (default: the "
                                                                        "latest).")) -> None:
    """Execute the projected draft, exactly once; refused when its projection is stale."""
    with _common.bus() as bus:
        a = DraftService(bus).approve(draft_uuid, tenant_id=tenant, approver=approver, comment=comment,
                                      fingerprint=fingerprint)
    _common.console.print(f"draft {a.draft_uuid} executed as {a.cmd_uuid}")


@app.command("approval-code")
def approval_code(draft_uuid: str = typer.Argument(...),
                  token: str = typer.Option(None, "--token", envvar="CMDLOG_TOKEN", show_envvar=True,
                                            help="Your operator token (cl_…); default: $CMDLOG_TOKEN."),
                  tenant: str = typer.Option(None, "--tenant", help="Admin tokens only: the draft's tenant."),
                  as_json: bool = AS_JSON) -> None:
    """A single-use code to decide on this draft version in the Prefect UI's review form, recorded as your token's
    subject (15 minutes)."""
    if not token:
        _common.fail("token: give your operator token with --token or CMDLOG_TOKEN (cmdlog token create --role "
                     "operator --subject you@tenant)")
    with _common.bus() as bus:
        principal = authenticate(bus.db, token)
        if not principal.is_admin and tenant not in (None, principal.tenant_id):
            _common.fail("tenant: this token may only use its own tenant's drafts")
        issued = issue_approval_code(DraftService(bus), principal, draft_uuid,
                                     tenant_id=tenant if principal.is_admin else principal.tenant_id)
    if as_json:
        return _print_json(issued.to_json())
    print(issued.code)  # the one line on stdout, so scripts can capture it
    _common.err_console.print(f"for draft {issued.draft_uuid} version {issued.draft_version}, as {issued.subject}, "
                              f"until {issued.expires_at:%Y-%m-%d %H:%M:%S %Z}; type it into the draft-approval form",
                              highlight=False)


@app.command("reject")
def reject(draft_uuid: str = typer.Argument(...), tenant: str = TENANT,
           by: str = typer.Option(..., "--by", help="Who rejects."), comment: str = typer.Option(None, "--comment"),
           ) -> None:
    """Reject a draft with a comment."""
    with _common.bus() as bus:
        DraftService(bus).reject(draft_uuid, tenant_id=tenant, rejecter=by, comment=comment)
    _common.console.print(f"draft {draft_uuid} rejected")


@app.command("discard")
def discard(draft_uuid: str = typer.Argument(...), tenant: str = TENANT,
            actor: str = typer.Option(..., "--actor", help="Who discards it.")) -> None:
    """Discard an open draft."""
    with _common.bus() as bus:
        DraftService(bus).discard(draft_uuid, tenant_id=tenant, actor=actor)
    _common.console.print(f"draft {draft_uuid} discarded")
