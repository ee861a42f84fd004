"""The ``export_snapshot`` ledger: one row per run that changes a lake (export or compaction).

A lake has at most one unfinished row (a partial unique index); runs on the same lake are serialised with a
session advisory lock held for the whole run.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, overload

from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from storage.errors import StorageError
from storage.locks import advisory_lock
from storage.postgres import Database
from storage.rows import one_row


class ExportBusyError(StorageError):
    """Another run holds this lake."""


CLOSED = frozenset({"published", "abandoned"})
"""Statuses of a lake run that is over: its staging folder may go (``writing``/``publishing`` runs are open)."""


@dataclass(kw_only=True)
class SnapshotRow:
    """A ledger row."""

    snapshot_id: int
    """Identity of the run; also names its files."""
    lake_uri: str
    """The lake it changes."""
    kind: str
    """``export`` or ``compaction``."""
    status: str
    """``writing``, ``publishing`` or ``published``."""
    from_tx: int | None = None
    """Lowest exported ``tx_id`` (inclusive)."""
    to_tx: int | None = None
    """Export bound (exclusive): the snapshot's ``xmin``."""
    files: list[dict] = field(default_factory=list)
    """Files published by the run."""
    replaced_files: list[dict] = field(default_factory=list)
    """Files a compaction replaced."""
    row_counts: dict = field(default_factory=dict)
    """Rows per dataset (and per partition under ``partitions``)."""
    attempts: int = 1
    """How many times the run was started (1 + resumptions after a crash)."""


_COLS = ("snapshot_id, lake_uri, kind, status, from_tx::text AS from_tx, to_tx::text AS to_tx, files, replaced_files, "
         "row_counts, attempts")


@overload
def _row(d: dict[str, Any]) -> SnapshotRow: ...
@overload
def _row(d: None) -> None: ...
def _row(d: dict[str, Any] | None) -> SnapshotRow | None:
    if d is None:
        return None
    d = dict(d)
    for k in ("from_tx", "to_tx"):
        d[k] = int(d[k]) if d[k] is not None else None
    return SnapshotRow(**d)


@contextlib.contextmanager
def lake_lock(db: Database, lake_uri: str, *, wait: float | None = None) -> Iterator[None]:
    """Hold the lake's advisory lock for the block; ExportBusyError when another run holds it (after ``wait``
    seconds with one; at once without)."""
    key = int.from_bytes(hashlib.sha256(f"cmdlog-lake:{lake_uri}".encode()).digest()[:8], "big", signed=True)
    with advisory_lock(db.url, key, wait=wait,
                       busy=lambda: ExportBusyError(f"another export or compaction is running on {lake_uri}")):
        yield


def open_run(db: Database, lake_uri: str) -> SnapshotRow | None:
    """The lake's unfinished run (left by a crash), counted as one more attempt; None when there is none."""
    with db.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        return _row(cur.execute(
            "UPDATE export_snapshot SET attempts = attempts + 1 WHERE lake_uri = %s "
            "AND status IN ('writing', 'publishing') "
            f"RETURNING {_COLS}", (lake_uri,)).fetchone())


def run_of(db: Database, snapshot_id: int) -> SnapshotRow | None:
    """The ledger row ``snapshot_id`` (None when there is none)."""
    with db.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        return _row(cur.execute(f"SELECT {_COLS} FROM export_snapshot WHERE snapshot_id = %s",
                                (snapshot_id,)).fetchone())


def last_export_bound(db: Database, lake_uri: str) -> int:
    """``to_tx`` of the lake's newest published export: where the next export starts (0 for a new lake)."""
    with db.connection() as conn:
        row = one_row(conn.execute("SELECT max(to_tx)::text FROM export_snapshot WHERE lake_uri = %s "
                                   "AND kind = 'export' AND status = 'published'", (lake_uri,)))
    return int(row[0]) if row[0] is not None else 0


def has_runs(db: Database, lake_uri: str) -> bool:
    """True once any run (export or compaction) was recorded for the lake."""
    with db.connection() as conn:
        return bool(one_row(conn.execute("SELECT EXISTS (SELECT 1 FROM export_snapshot WHERE lake_uri = %s)",
                                         (lake_uri,)))[0])


def start_run(db: Database, lake_uri: str, *, kind: str, from_tx: int | None = None,
              to_tx: int | None = None) -> SnapshotRow:
    """Insert a ``writing`` row for a new run."""
    with db.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        return _row(one_row(cur.execute(
            f"INSERT INTO export_snapshot (lake_uri, kind, status, from_tx, to_tx) "
            f"VALUES (%s, %s, 'writing', %s::text::xid8, %s::text::xid8) RETURNING {_COLS}",
            (lake_uri, kind, from_tx, to_tx))))


def mark_publishing(db: Database, snapshot_id: int, *, files: list[dict], replaced: list[dict],
                    row_counts: dict) -> None:
    """Record the staged files: from here on a crash is rolled forward, not redone."""
    with db.connection() as conn:
        conn.execute("UPDATE export_snapshot SET status = 'publishing', files = %s, replaced_files = %s, "
                     "row_counts = %s WHERE snapshot_id = %s",
                     (Jsonb(files), Jsonb(replaced), Jsonb(row_counts), snapshot_id))


def mark_published(db: Database, snapshot_id: int) -> None:
    """The run's files are all in place and the manifest names them."""
    with db.connection() as conn:
        conn.execute("UPDATE export_snapshot SET status = 'published', finished_at = now() WHERE snapshot_id = %s",
                     (snapshot_id,))


def abandon(db: Database, snapshot_id: int) -> None:
    """Close a run that will not be finished (a compaction interrupted before publishing)."""
    with db.connection() as conn:
        conn.execute("UPDATE export_snapshot SET status = 'abandoned', finished_at = now(), files = '[]' "
                     "WHERE snapshot_id = %s", (snapshot_id,))


def runs(db: Database, lake_uri: str, *, limit: int = 20) -> list[SnapshotRow]:
    """The lake's newest runs, newest first."""
    with db.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        return [_row(r) for r in cur.execute(
            f"SELECT {_COLS} FROM export_snapshot WHERE lake_uri = %s ORDER BY snapshot_id DESC LIMIT %s",
            (lake_uri, limit)).fetchall()]
