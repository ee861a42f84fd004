"""Alembic migrations, applied programmatically (``cmdlog db upgrade`` and every command that needs the schema)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Protocol

import psycopg
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Engine

from storage.partitions import UTC_TODAY, ensure_ahead
from storage.rows import one_row


class Database(Protocol):
    """What migrating needs of ``storage.postgres.Database`` (which runs the migrations when it opens a database,
    so this module does not import it back)."""

    url: str

    @property
    def engine(self) -> Engine: ...

    def connection(self) -> contextlib.AbstractContextManager[psycopg.Connection]: ...

MIGRATIONS = Path(__file__).parent / "migrations"
_LOCK_KEY = 0x636D646C  # 'cmdl': one migrator at a time across processes


def _config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def head_revision() -> str | None:
    """The newest migration's revision id (None only in a tree without migrations)."""
    return ScriptDirectory.from_config(_config()).get_current_head()


def current_revision(db: Database) -> str | None:
    """The revision the database is at, or None before the first migration."""
    with db.connection() as conn:
        exists = one_row(conn.execute("SELECT to_regclass('alembic_version') IS NOT NULL"))[0]
        if not exists:
            return None
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        return row[0] if row else None


def upgrade(db: Database) -> bool:
    """Bring the schema to head (no-op when current) and keep partitions a week ahead; True if anything ran."""
    ran = False
    if current_revision(db) != head_revision():
        cfg = _config()
        with db.engine.begin() as conn:
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
        ran = True
    # Keep a week of partitions ahead. ``ensure_ahead`` creates each as a plain table and attaches it, which locks
    # the parent only in SHARE UPDATE EXCLUSIVE mode: concurrent writers neither wait for it nor queue behind it.

    ensure_ahead(db.url, days=7)
    return ran


def ensure_partitions(db: Database, *, days_back: int, days_ahead: int) -> int:
    """Create the missing log partitions from ``days_back`` days ago to ``days_ahead`` days ahead (UTC days)."""
    return ensure_partitions_between(db, f"{UTC_TODAY} - {int(days_back)}", f"{UTC_TODAY} + {int(days_ahead)}")


def ensure_partitions_between(db: Database, start_sql: str, end_sql: str) -> int:
    """Create the missing partitions between two SQL date expressions (trusted, built here or from dates)."""
    with db.connection() as conn:
        return one_row(conn.execute(f"SELECT cmdlog_ensure_partitions(({start_sql})::date, ({end_sql})::date)"))[0]
