"""The Postgres connection: a psycopg pool for the hot path, a SQLAlchemy engine for Core queries, tenant sessions.

With no URL, the embedded server under ``<home>/pg`` is started (or reused) and the ``cmdlog`` database created.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool

from storage import embedded
from storage.errors import DatabaseUnavailableError, TenantIsolationError, translated

if TYPE_CHECKING:  # SQLAlchemy is imported when the engine is first used (start-up cost of the hot path)
    from sqlalchemy.engine import Engine

TENANT_ROLE = "cmdlog_tenant"

Connection = psycopg.Connection
"""The connection handlers, unit-of-work callbacks and repositories share: the driver's, named here so code above
storage needs no driver import."""


def transaction_open(conn: Connection) -> bool:
    """True while ``conn`` has a transaction open (running, or aborted by an error and awaiting its rollback)."""
    return conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE


def as_uri(conninfo: str) -> str:
    """A libpq connection string in URI form (``key=value`` strings are converted)."""
    if "://" in conninfo:
        return conninfo

    params = {k: str(v) for k, v in conninfo_to_dict(conninfo).items()}
    user = quote(params.pop("user", ""), safe="")
    password = params.pop("password", None)
    dbname = quote(params.pop("dbname", ""), safe="")
    auth = f"{user}:{quote(password, safe='')}@" if password else (f"{user}@" if user else "")
    query = f"?{urlencode(params)}" if params else ""
    return f"postgresql://{auth}/{dbname}{query}"


def sqlalchemy_url(url: str) -> str:
    """The same URL with the psycopg 3 driver named, as SQLAlchemy wants it."""
    scheme, rest = as_uri(url).split("://", 1)
    return f"postgresql+psycopg://{rest}" if scheme in ("postgres", "postgresql") else url


@dataclass(kw_only=True)
class Database:
    """One Postgres database: a connection pool and, on demand, a SQLAlchemy engine."""

    url: str
    """libpq connection URI (``postgresql://…``)."""
    max_connections: int = 10
    """Upper bound of the pool."""
    server: Any = None
    """The embedded server handle when this process started or reused one."""
    replica: Any = None
    """A ``storage.replica.Replica``: a hot standby for reads that may lag; None: every read on this database.
    (Typed ``Any``: ``storage.replica`` builds on this module, which must not import it back.)"""
    pool_timeout: float = 30.0
    """How long a caller waits for a pooled connection by default."""
    _pool: ConnectionPool | None = field(default=None, init=False, repr=False)
    _engine: Any = field(default=None, init=False, repr=False)

    @property
    def pool(self) -> ConnectionPool:
        """The psycopg pool, opened on first use."""
        if self._pool is None:
            self._pool = ConnectionPool(
                self.url, min_size=1, max_size=self.max_connections, open=True, timeout=self.pool_timeout,
                kwargs={"prepare_threshold": 1}, name="cmdlog",
            )
        return self._pool

    @property
    def engine(self) -> Engine:
        """A SQLAlchemy Core engine on the same database."""
        if self._engine is None:
            from sqlalchemy import create_engine  # noqa: PLC0415 — start-up cost: SQLAlchemy, used by migrations only

            self._engine = create_engine(sqlalchemy_url(self.url), pool_size=2, max_overflow=8, pool_pre_ping=True)
        return self._engine

    @contextlib.contextmanager
    def connection(self, *, timeout: float | None = None) -> Iterator[psycopg.Connection]:
        """A pooled connection (waiting at most ``timeout`` seconds, the pool's default when None); its transaction
        is committed on success and rolled back on error."""
        with translated("cannot connect to Postgres"):
            cm = self.pool.connection(timeout=timeout)
            conn = cm.__enter__()
        try:
            yield conn
        except BaseException as e:
            cm.__exit__(type(e), e, e.__traceback__)
            raise
        else:
            cm.__exit__(None, None, None)

    def ping(self, *, timeout: float | None = None) -> None:
        """``SELECT 1`` on a pooled connection (waiting at most ``timeout`` s for one); DatabaseUnavailableError
        when the server does not answer."""
        with self.connection(timeout=timeout) as conn, translated("Postgres does not answer"):
            conn.execute("SELECT 1").fetchone()

    @contextlib.contextmanager
    def tenant_session(self, tenant_id: str) -> Iterator[psycopg.Connection]:
        """A transaction running as ``cmdlog_tenant`` with ``cmdlog.tenant_id`` set: Postgres shows one tenant only.

        Both settings are transaction-local (``SET LOCAL``), so the pooled connection goes back clean.
        """
        if not isinstance(tenant_id, str) or not tenant_id.strip():
            raise TenantIsolationError("tenant_id must be a non-empty string")
        with self.connection() as conn, conn.transaction():
            conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(TENANT_ROLE)))
            conn.execute("SELECT set_config('cmdlog.tenant_id', %s, true)", (tenant_id,))
            yield conn

    def close(self, *, lock_timeout: float | None = None) -> None:
        """Close the pool and the engine; stop the embedded server if this process holds its last handle.

        ``lock_timeout``: see ``storage.embedded.stop_server`` (``cmdlog up`` passes one to stop promptly).
        """
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        if self.replica is not None:
            self.replica.close()
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
        if self.server is not None:
            embedded.stop_server(self.server, lock_timeout=lock_timeout)
            self.server = None


def open_database(url: str | None, *, home: Path, dbname: str = "cmdlog", migrate: bool = True,
                  max_connections: int = 10, keep_server: bool = False) -> Database:
    """Open the database at ``url`` or, with none, the embedded server under ``home/pg``; apply migrations."""
    server = None
    if url is None:
        try:
            server = embedded.start_server(Path(home) / "pg", keep_running=keep_server)
            url = embedded.ensure_database(server, dbname)
        except Exception as e:  # the wheel raises subprocess/OS errors of many kinds
            raise DatabaseUnavailableError(f"cannot start the embedded Postgres under {home}/pg: {e}") from e
    db = Database(url=url, server=server, max_connections=max_connections)
    if migrate:
        from storage.migrate import upgrade  # noqa: PLC0415 — start-up cost: Alembic + SQLAlchemy, only to migrate

        upgrade(db)
    return db
