"""``cmdlog sql-login``: Postgres logins bound to one tenant, for a BI tool or psql (the password is shown once)."""

from __future__ import annotations

import dataclasses
import getpass
import json
import sys

import typer
from rich.markup import escape
from rich.table import Table

from commandlog.auth.sql_logins import DEFAULT_CONNECTION_LIMIT, create_login, list_logins, revoke_login
from commandlog.cli import _common

app = typer.Typer(help="SQL logins bound to one tenant (row-level security takes the tenant from the login).",
                  no_args_is_help=True)


@app.command("create")
def create(
    tenant: str = typer.Option(..., "--tenant", help="The tenant whose rows the login sees (and nothing else)."),
    name: str | None = typer.Option(None, "--name", help="Role name; every role of the server can read role names, "
                                    "so put no tenant id in it (default: tl_<random>)."),
    connection_limit: int = typer.Option(DEFAULT_CONNECTION_LIMIT, "--connection-limit",
                                         help="Sessions the login may hold at once (CONNECTION LIMIT of the role)."),
) -> None:
    """Create a login and print its connection URI once; keep it, the password cannot be shown again."""
    with _common.database() as db:
        created = create_login(db, tenant=tenant, name=name, connection_limit=connection_limit,
                               created_by=f"cli:{getpass.getuser()}")
    _common.err_console.print(f"login {escape(created.login.role_name)} bound to tenant "
                              f"{escape(created.login.tenant_id)}; its URI (shown once):", highlight=False)
    # Plain print: the URI is the one line on stdout, so scripts can capture it.
    print(created.uri)


@app.command("revoke")
def revoke(name: str = typer.Argument(..., help="The login's role name (see `cmdlog sql-login list`).")) -> None:
    """Drop a login: its URI stops working and its open sessions are ended."""
    with _common.database() as db:
        revoke_login(db, name)
    _common.console.print(f"revoked {escape(name)}", highlight=False)


@app.command("list")
def list_(
    tenant: str | None = typer.Option(None, "--tenant", help="Only this tenant's logins."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List the tenant-bound logins (never their passwords)."""
    with _common.database() as db:
        logins = list_logins(db, tenant=tenant)
    if as_json:
        sys.stdout.write(json.dumps([dataclasses.asdict(x) for x in logins], default=str) + "\n")
        return
    table = Table(title=f"{len(logins)} tenant-bound SQL login(s)")
    for col in ("login", "tenant", "created", "by", "sessions"):
        table.add_column(col)
    for x in logins:
        table.add_row(escape(x.role_name), escape(x.tenant_id), f"{x.created_at:%Y-%m-%d %H:%M}", escape(x.created_by),
                      str(x.active_sessions))
    _common.console.print(table)
