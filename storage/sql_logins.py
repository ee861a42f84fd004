"""Tenant-bound SQL logins: LOGIN roles of the server, each bound to one tenant in ``tenant_sql_login`` (0008).

A login is created in one transaction (``CREATE ROLE`` is transactional): the role, its membership of
``cmdlog_sql_login`` (SELECT on the tenant-scoped parents), ``CONNECT`` on this database and the binding row that
``cmdlog_current_tenant()`` — hence every ``tenant_isolation`` policy — reads by ``session_user``. The password
reaches the server only as a SCRAM-SHA-256 verifier computed here (libpq's ``PQencryptPasswordConn``), so the
clear text is in no statement and no server log (https://www.postgresql.org/docs/current/sql-createrole.html).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from urllib.parse import quote

from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from storage.errors import IntegrityError, translated
from storage.postgres import Database
from storage.rows import one_row

LOGIN_GROUP = "cmdlog_sql_login"


class SqlLoginExistsError(IntegrityError):
    """A role of that name already exists on the server."""


@dataclass(frozen=True, kw_only=True)
class LoginRow:
    """One tenant-bound login (never its password: only the server holds its SCRAM verifier)."""

    role_name: str
    """The Postgres role the login connects as."""
    tenant_id: str
    """The tenant every policy shows it, whatever the session sets."""
    created_at: dt.datetime
    """When the login was created."""
    created_by: str
    """Who created it (``cli:<os user>``)."""
    active_sessions: int = 0
    """Sessions connected as the login right now."""


def create_login(db: Database, *, role_name: str, tenant_id: str, password: str, created_by: str,
                 connection_limit: int = -1) -> LoginRow:
    """Create the role (at most ``connection_limit`` sessions at once; -1, Postgres' default: no limit) and its
    binding in one transaction; raises SqlLoginExistsError if the name is taken."""
    role = sql.Identifier(role_name)
    try:
        with db.connection() as conn, translated(), conn.transaction():
            verifier = conn.pgconn.encrypt_password(password.encode(), role_name.encode(), b"scram-sha-256")
            conn.execute(sql.SQL(
                "CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT "
                "CONNECTION LIMIT {} PASSWORD {} IN ROLE {}").format(
                    role, sql.Literal(int(connection_limit)), sql.Literal(verifier.decode()),
                    sql.Identifier(LOGIN_GROUP)))
            conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                sql.Identifier(conn.info.dbname), role))
            row = one_row(conn.execute(
                "INSERT INTO tenant_sql_login (role_name, tenant_id, created_by) VALUES (%s, %s, %s) "
                "RETURNING role_name, tenant_id, created_at, created_by", (role_name, tenant_id, created_by)))
    except IntegrityError as e:
        raise SqlLoginExistsError(f"name: a role named {role_name!r} already exists on the server") from e
    return LoginRow(role_name=row[0], tenant_id=row[1], created_at=row[2], created_by=row[3])


def revoke_login(db: Database, role_name: str) -> bool:
    """Drop a bound login: no new connection, its open sessions ended; True if it existed."""
    with db.connection() as conn, conn.transaction():
        bound = conn.execute("DELETE FROM tenant_sql_login WHERE role_name = %s RETURNING 1", (role_name,)).fetchone()
        if not bound:
            return False
        oid = conn.execute("SELECT oid FROM pg_roles WHERE rolname = %s", (role_name,)).fetchone()
        if oid:
            role = sql.Identifier(role_name)
            # DROP OWNED also revokes its privileges on shared objects (CONNECT on this database);
            # https://www.postgresql.org/docs/current/sql-drop-owned.html
            conn.execute(sql.SQL("DROP OWNED BY {}").format(role))
            conn.execute(sql.SQL("DROP ROLE {}").format(role))
    if oid:
        # Sessions already open outlive DROP ROLE; end them by the role's oid (``usename`` is NULL once it is gone).
        with db.connection() as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usesysid = %s", (oid[0],))
    return True


def list_logins(db: Database, *, tenant_id: str | None = None) -> list[LoginRow]:
    """Bound logins (all, or of one tenant), oldest first, with their open session counts."""
    with db.connection() as conn:
        rows = conn.execute(
            "SELECT b.role_name, b.tenant_id, b.created_at, b.created_by, "
            "       (SELECT count(*) FROM pg_stat_activity a WHERE a.usename = b.role_name) "
            "FROM tenant_sql_login b WHERE %(t)s::text IS NULL OR b.tenant_id = %(t)s "
            "ORDER BY b.created_at, b.role_name", {"t": tenant_id}).fetchall()
    return [LoginRow(role_name=r[0], tenant_id=r[1], created_at=r[2], created_by=r[3], active_sessions=r[4])
            for r in rows]


def login_uri(owner_url: str, *, role_name: str, password: str) -> str:
    """The URI of the same server and database as ``owner_url`` for the login (host, port and TLS options kept)."""
    params = {k: str(v) for k, v in conninfo_to_dict(owner_url).items() if v is not None}
    params.pop("user", None)
    params.pop("password", None)
    dbname = quote(params.pop("dbname", ""), safe="")
    host = params.get("host", "")
    netloc = ""
    if host and not host.startswith("/") and "," not in host:  # one TCP host: name it in the authority
        params.pop("host")
        netloc = f"[{host}]" if ":" in host else host
        if "port" in params:
            netloc += f":{params.pop('port')}"
    query = "&".join(f"{k}={quote(v, safe='/')}" for k, v in params.items())
    auth = f"{quote(role_name, safe='')}:{quote(password, safe='')}@"
    return f"postgresql://{auth}{netloc}/{dbname}" + (f"?{query}" if query else "")
