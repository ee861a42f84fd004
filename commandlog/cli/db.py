"""``cmdlog db``: schema management."""

from __future__ import annotations

import typer

from commandlog.cli._common import console, settings

app = typer.Typer(help="Database schema.", no_args_is_help=True)


@app.command("upgrade")
def upgrade() -> None:
    """Apply the migrations (starts the embedded Postgres when no CMDLOG_DATABASE_URL is set)."""
    from commandlog.bootstrap import open_db  # noqa: PLC0415 — start-up cost: the bus and its connection pool
    from storage.migrate import current_revision, head_revision  # noqa: PLC0415 — start-up cost: Alembic
    from storage.migrate import upgrade as do_upgrade  # noqa: PLC0415 — start-up cost: Alembic

    s = settings()
    db = open_db(s, migrate=False)
    try:
        before = current_revision(db)
        do_upgrade(db)
        after = current_revision(db)
    finally:
        db.close()
    if before == after:
        console.print(f"schema is current (revision {after})")
    else:
        console.print(f"schema upgraded from {before or 'empty'} to {after} (head {head_revision()})")
