"""Reads on a streaming hot standby (``CMDLOG_REPLICA_URL``): which server a read that may lag goes to.

Sent to the standby: journal timelines (``cmdlog journal timeline``, ``GET /api/journal``) through ``read``, and
the export's snapshot through ``snapshot_url``. Everything else stays on the primary: writes, drafts, replay,
retention (its export too), sealing, the export ledger, tokens and tickets, and the live monitor's backfill — a
watcher resuming from a cursor must get every row committed before its LISTEN began, which a lagging standby may
not have replayed yet.

The export's watermark holds on a standby. A standby builds its snapshots from the transaction ids it has seen in
the WAL: an id the primary assigned is either at or above the snapshot's ``xmax`` (nothing seen of it or of any
later id) or held as still running until its commit or abort record is replayed
(``KnownAssignedXids``, src/backend/storage/ipc/procarray.c). So ``pg_snapshot_xmin(pg_current_snapshot())`` on
the standby has the meaning it has on the primary — every lower id has finished and its rows are visible — but as
of the standby's replay point: a lagging standby gives a lower ``xmin``, never a higher one, and the export's range
``last bound <= tx_id < xmin`` cannot pass what it has replayed (``max(xmin, last bound)`` also keeps the bound
from moving back when runs alternate between primary and standby). A standby's query can be cancelled by
recovery conflicts (https://www.postgresql.org/docs/current/hot-standby.html#HOT-STANDBY-CONFLICT): run it with
``hot_standby_feedback = on``; a cancelled export is left ``writing`` and redone by the next run, as after a crash.

Unreachable or lagging past ``max_lag_s``: the read goes to the primary and a warning is logged (once per change
of state). The primary holds the same rows, always at least as fresh, and carried these reads before a replica
existed, so falling back costs load, not correctness; failing instead would turn a replica outage into a journal
and export outage. The replica is probed at most every ``recheck_s`` seconds per process.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from storage.errors import DatabaseUnavailableError
from storage.postgres import Database

log = logging.getLogger(__name__)
T = TypeVar("T")

_PROBE_CONNECT_S = 2
"""``connect_timeout`` of the probes: an unreachable standby costs at most this long per check."""
_GRACE_S = 1.0
"""How long a journal read's check waits for the standby to replay the primary's position before judging by the
age of its last replayed commit."""


@dataclass(kw_only=True)
class ReplicaState:
    """What the last probe found."""

    usable: bool
    """Reads may go to the standby."""
    lag_s: float | None
    """Seconds behind the primary (0.0: replayed everything the primary had written when asked); None unknown."""
    reason: str = ""
    """Why it is not usable."""


@dataclass(kw_only=True)
class Replica:
    """A hot standby of the primary, with its own pool, probed for reachability and lag."""

    url: str
    """libpq URI of the standby (same database name and roles as the primary: it is a physical copy)."""
    max_lag_s: float = 30.0
    """``CMDLOG_REPLICA_MAX_LAG``: a standby further behind than this is not read."""
    recheck_s: float = 5.0
    """A verdict is reused this long before the standby is probed again."""
    max_connections: int = 10
    """Upper bound of the standby's pool."""
    _db: Database | None = field(default=None, init=False, repr=False)
    _state: ReplicaState | None = field(default=None, init=False, repr=False)
    _checked_at: float = field(default=float("-inf"), init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    @property
    def database(self) -> Database:
        """The standby as a ``Database`` (pool opened on first use; tenant sessions work as on the primary)."""
        if self._db is None:
            self._db = Database(url=self.url, max_connections=self.max_connections, pool_timeout=5.0)
        return self._db

    def state(self, primary: Database, *, wait: float = _GRACE_S) -> ReplicaState:
        """Probe now: reachable, a standby, and how far behind (waiting up to ``wait`` s for it to catch up)."""
        try:
            target = _primary_lsn(primary)
            with psycopg.connect(self.url, autocommit=True, connect_timeout=_PROBE_CONNECT_S) as conn:
                deadline = time.monotonic() + wait
                while True:
                    standby, replayed, age = conn.execute(
                        "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn() >= %s::pg_lsn, "
                        "extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8",
                        (target,)).fetchone() or (False, None, None)
                    if not standby:
                        return ReplicaState(usable=False, lag_s=None, reason="it is not a standby (not in recovery)")
                    if replayed:
                        return ReplicaState(usable=True, lag_s=0.0)
                    if time.monotonic() >= deadline:
                        break
                    time.sleep(0.01)
        except psycopg.Error as e:
            return ReplicaState(usable=False, lag_s=None, reason=f"it does not answer ({e})".strip())
        lag = max(0.0, age) if age is not None else None  # no commit replayed since it started: unknown
        if lag is None or lag > self.max_lag_s:
            shown = "unknown" if lag is None else f"{lag:.1f} s"
            return ReplicaState(usable=False, lag_s=lag, reason=f"it lags {shown} (limit {self.max_lag_s:g} s)")
        return ReplicaState(usable=True, lag_s=lag)

    def usable(self, primary: Database) -> bool:
        """The verdict for a journal read: probed at most every ``recheck_s`` s (other threads reuse the last)."""
        now = time.monotonic()
        if self._state is not None and now - self._checked_at < self.recheck_s:
            return self._state.usable
        if not self._lock.acquire(blocking=self._state is None):
            return self._state.usable if self._state else False
        try:
            self._remember(self.state(primary))
            return bool(self._state and self._state.usable)
        finally:
            self._lock.release()

    def caught_up(self, primary: Database) -> bool:
        """For an export: wait (up to ``max_lag_s``) until the standby has replayed what the primary had written
        when asked; False, with a warning, when it does not in time or cannot be reached."""
        state = self.state(primary, wait=self.max_lag_s)
        self._remember(state)
        return state.usable and state.lag_s == 0.0

    def mark_down(self, error: Exception) -> None:
        """A read on the standby failed to connect: read the primary until the next probe."""
        self._remember(ReplicaState(usable=False, lag_s=None, reason=f"it does not answer ({error})"))

    def _remember(self, state: ReplicaState) -> None:
        before = self._state
        self._state, self._checked_at = state, time.monotonic()
        if not state.usable and (before is None or before.usable or before.reason != state.reason):
            log.warning("replica %s is not used, reading the primary: %s", _safe(self.url), state.reason)
        elif state.usable and before is not None and not before.usable:
            log.warning("replica %s is used again", _safe(self.url))

    def close(self) -> None:
        """Close the standby's pool."""
        if self._db is not None:
            self._db.close()
            self._db = None


def read(db: Database, fn: Callable[[Database], T]) -> T:
    """``fn(database)`` on ``db``'s replica when one is set and usable, else on ``db`` (the primary).

    When the replica fails under the read (no connection, the connection lost, the query cancelled by a recovery
    conflict), ``fn`` runs again on the primary and the replica is not read until the next probe (``fn`` must be a
    read: it may have started on the replica). A statement timeout is the query's own fault and is raised.
    """
    replica = db.replica
    if replica is None or not replica.usable(db):
        return fn(db)
    try:
        return fn(replica.database)
    except (DatabaseUnavailableError, psycopg.OperationalError, psycopg.errors.SerializationFailure) as e:
        if isinstance(e, psycopg.errors.QueryCanceled):
            raise
        replica.mark_down(e)
        return fn(db)


def snapshot_url(db: Database) -> str:
    """Where the export takes its snapshot: the replica once it has replayed what the primary had written when the
    export started (waiting up to its ``max_lag_s``), else the primary."""
    replica = db.replica
    if replica is not None and replica.caught_up(db):
        return replica.url
    return db.url


def _primary_lsn(primary: Database) -> str:
    # The write position covers every commit acknowledged so far (a commit returns once its record is flushed,
    # and flushed <= written: https://www.postgresql.org/docs/current/functions-admin.html#FUNCTIONS-ADMIN-BACKUP).
    with primary.connection() as conn:
        row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
    assert row is not None, "SELECT returns a row"
    return str(row[0])


def _safe(url: str) -> str:
    """The URL without its password, for logs."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "(unparsable URL)"
    params.pop("password", None)
    return make_conninfo("", **params)
