"""What every CLI command shares: settings read once, the database opened once, errors shown without tracebacks."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator

import typer
from rich.console import Console

from commandlog.errors import CommandLogError
from commandlog.platform.prefect_auth import local_client_settings
from commandlog.settings import Settings
from storage.errors import StorageError

console = Console()
err_console = Console(stderr=True)


def table_console() -> Console:
    """The console for tables: the terminal's width, or unbounded when output is piped or redirected (rich would
    otherwise cut and wrap every column to 80 characters)."""
    return console if console.is_terminal else Console(width=100_000)


def settings() -> Settings:
    """Settings from the environment."""
    return Settings.from_env()


@contextlib.contextmanager
def database(s: Settings | None = None) -> Iterator:
    """The migrated database for a command; closed (embedded server released) at the end."""
    from commandlog.bootstrap import open_db  # noqa: PLC0415 — start-up cost: the bus and its connection pool

    db = open_db(s or settings())
    try:
        yield db
    finally:
        db.close()


@contextlib.contextmanager
def bus(s: Settings | None = None) -> Iterator:
    """A bus with the configured apps registered, on the migrated database."""
    from commandlog.bootstrap import build_bus  # noqa: PLC0415 — start-up cost: the bus and its connection pool

    s = s or settings()
    with database(s) as db:
        yield build_bus(db, s)


@contextlib.contextmanager
def prefect_client(s: Settings | None = None) -> Iterator:
    """Prefect settings for a command that calls the Prefect API: while ``cmdlog up`` runs on this home with its own
    server, that server's URL and auth string (``commandlog.platform.prefect_auth``); otherwise what the user
    configured."""
    updates = local_client_settings((s or settings()).home, os.environ)
    if not updates:
        yield
        return
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings  # noqa: PLC0415 — start-up cost: Prefect

    with temporary_settings(updates={PREFECT_API_URL: updates["PREFECT_API_URL"],
                                     PREFECT_API_AUTH_STRING: updates["PREFECT_API_AUTH_STRING"]}):
        yield


def fail(message: str, code: int = 2) -> None:
    """Print ``message`` on stderr and exit with ``code``."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def run(app: typer.Typer) -> None:
    """Run the typer app; known errors become one line on stderr and exit code 2."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        app(standalone_mode=True)
    except (CommandLogError, StorageError) as e:
        err_console.print(f"[bold red]error:[/] {e}", highlight=False)
        sys.exit(2)
