"""The ``cmdlog`` command line: one sub-application per concern, each in its own module."""

from __future__ import annotations

import typer

from commandlog.cli import db as _db
from commandlog.cli import demo as _demo
from commandlog.cli import deploy as _deploy
from commandlog.cli import draft as _draft
from commandlog.cli import export as _export
from commandlog.cli import integrity as _integrity
from commandlog.cli import journal as _journal
from commandlog.cli import log as _log
from commandlog.cli import replay as _replay
from commandlog.cli import retention as _retention
from commandlog.cli import sql_login as _sql_login
from commandlog.cli import token as _token
from commandlog.cli import up as _up
from commandlog.cli import worker as _worker
from commandlog.cli._common import run

app = typer.Typer(help="commandlog: record every command, and turn the log into products.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
app.add_typer(_db.app, name="db")
app.add_typer(_demo.app, name="demo")
app.add_typer(_log.app, name="log")
app.add_typer(_up.app, name="up")
app.add_typer(_deploy.app, name="deploy")
app.add_typer(_worker.app, name="worker")
app.add_typer(_token.app, name="token")
app.command("replay")(_replay.replay)
app.add_typer(_journal.app, name="journal")
app.command("export")(_export.export)
app.add_typer(_draft.app, name="draft")
# Sub-applications of later features register here, one line each.
app.add_typer(_retention.app, name="retention")
app.add_typer(_sql_login.app, name="sql-login")
app.command("seal")(_integrity.seal)
app.command("verify")(_integrity.verify)


def main() -> None:
    """Entry point of the ``cmdlog`` script."""
    run(app)
