"""The newest entries of the log: global lean rows, or one tenant's full rows through its tenant session."""

from __future__ import annotations

from psycopg.rows import dict_row

from storage.postgres import Database

_COLUMNS = "cmd_uuid, started_at, tenant_id, actor_id, cmd_class, status, subjects, cmd_body, error_message"


def newest(db: Database, *, tenant: str | None = None, limit: int = 20) -> list[dict]:
    """The ``limit`` newest commands, newest first; with ``tenant``, read under row-level security."""
    query = f"SELECT {_COLUMNS} FROM %s ORDER BY started_at DESC, cmd_uuid DESC LIMIT %%s"
    if tenant is None:
        with db.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            return cur.execute(query % "command_log", (limit,)).fetchall()
    with db.tenant_session(tenant) as conn, conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query % "tenant_command_log", (limit,)).fetchall()
