"""``cmdlog token``: api tokens for the web app (only a hash is stored; the token is printed once)."""

from __future__ import annotations

import datetime as dt

import typer

from commandlog.auth.tokens import create_token, revoke_token
from commandlog.cli import _common

app = typer.Typer(help="Api tokens for the web app.", no_args_is_help=True)


@app.command("create")
def create(
    tenant: str = typer.Option(None, "--tenant", help="Tenant the token may read (viewer/operator); omit for admin."),
    role: str = typer.Option("viewer", "--role", help="viewer | operator | admin."),
    ttl_days: float = typer.Option(None, "--ttl-days", help="Expire after this many days (default: never)."),
    subject: str = typer.Option(None, "--subject", help="Who the token stands for, e.g. alice@acme: recorded as the "
                                                        "actor/approver of what it does (default: token:<id>)."),
) -> None:
    """Create a token and print it once; keep it, it cannot be shown again."""
    ttl = dt.timedelta(days=ttl_days) if ttl_days is not None else None
    with _common.database() as db:
        token = create_token(db, tenant=tenant, role=role, ttl=ttl, subject=subject)
    # Plain print: the token is the one line on stdout, so scripts can capture it.
    print(token)


@app.command("revoke")
def revoke(token_id: str = typer.Argument(..., help="The id part of the token (after `cl_`, before the dot).")) -> None:
    """Revoke a token by its id."""
    with _common.database() as db:
        if not revoke_token(db, token_id):
            _common.fail(f"token_id: no valid token with id {token_id!r}")
    _common.console.print(f"revoked {token_id}")
