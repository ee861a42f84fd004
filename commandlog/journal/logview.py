"""The newest entries of the log: global lean rows, or one tenant's full rows through its tenant session."""

from __future__ import annotations

from storage import journal as store
from storage.postgres import Database


def newest(db: Database, *, tenant: str | None = None, limit: int = 20) -> list[dict]:
    """The ``limit`` newest commands, newest first; with ``tenant``, read under row-level security."""
    return store.newest(db, tenant=tenant, limit=limit)
