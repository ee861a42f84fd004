"""Session advisory locks on a dedicated connection, and the retry loop for statements that wait on locks.

A dedicated connection, not a pooled one: a holder keeps its lock for a whole run while the pool serves the run's
work, and waiters must not starve the pool the holder needs. The lock is session-level and dies with the
connection, so a crashed holder never leaves it taken
(https://www.postgresql.org/docs/current/explicit-locking.html#ADVISORY-LOCKS). Locks taken inside one transaction
(``pg_advisory_xact_lock``) stay with the statements they guard.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import psycopg
from psycopg import sql

from storage.errors import OperationalError, translated
from storage.rows import one_row

T = TypeVar("T")
LockKey = int | tuple[int, str]
"""A bigint key, or a (class, text) pair locked as ``(class, hashtext(text))``."""


def _key_sql(fn: str, key: LockKey) -> tuple[sql.Composed, tuple]:
    if isinstance(key, tuple):
        return sql.SQL("SELECT {}(%s, hashtext(%s))").format(sql.Identifier(fn)), key
    return sql.SQL("SELECT {}(%s)").format(sql.Identifier(fn)), (key,)


@contextlib.contextmanager
def advisory_lock(url: str, key: LockKey, *, wait: float | None = None,
                  busy: Callable[[], Exception] = lambda: OperationalError("the advisory lock is taken")
                  ) -> Iterator[None]:
    """Hold the session advisory lock ``key`` on a connection of its own for the ``with`` block.

    ``wait=None``: try once (``pg_try_advisory_lock``); else wait at most ``wait`` seconds (``lock_timeout``).
    When the lock is not granted, ``busy()`` is raised. A failed connection is ``DatabaseUnavailableError``.
    """
    with translated("cannot connect to Postgres"):
        conn = psycopg.connect(url, autocommit=True)
    locked = False
    try:
        if wait is None:
            stmt, params = _key_sql("pg_try_advisory_lock", key)
            with translated():
                locked = bool(one_row(conn.execute(stmt, params))[0])
        else:
            stmt, params = _key_sql("pg_advisory_lock", key)
            try:
                with translated():
                    conn.execute("SELECT set_config('lock_timeout', %s, false)", (f"{int(wait * 1000)}ms",))
                    conn.execute(stmt, params)
                locked = True
            except OperationalError as e:
                raise busy() from e
        if not locked:
            raise busy()
        yield
    finally:
        # Unlock before closing: the server ends a closed session's backend (and drops its locks) asynchronously,
        # so a run starting right after this one could still find the lock taken (seen under load).
        if locked and not conn.broken:
            with contextlib.suppress(psycopg.Error):
                stmt, params = _key_sql("pg_advisory_unlock", key)
                conn.execute(stmt, params)
        conn.close()  # ends the session, which releases the lock in any case


def lock_held(conn: psycopg.Connection, key: int) -> bool:
    """True when some session of this database holds the session advisory lock ``key`` (a bigint key: its high
    and low 32 bits are ``classid`` and ``objid`` in ``pg_locks``, ``objsubid`` 1)."""
    with translated():
        return bool(one_row(conn.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1 "
            "AND classid::bigint = %s AND objid::bigint = %s "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()))",
            (key >> 32, key & 0xFFFFFFFF)))[0])


class Retry:
    """The retry loop for statements that wait on locks: ``retry(attempt)`` calls ``attempt()`` until it returns,
    again after each ``OperationalError`` (lock not granted in time, deadlock, cancelled statement), sleeping
    ``pause(tries)`` s in between. The failures are counted over every call on the same ``Retry``; at ``attempts``
    of them ``give_up(tries, error)`` is raised from the last error. ``attempt`` raises storage errors
    (``with translated(): …``)."""

    def __init__(self, *, attempts: int, pause: Callable[[int], float],
                 give_up: Callable[[int, OperationalError], Exception]) -> None:
        self.attempts = attempts
        self.pause = pause
        self.give_up = give_up
        self.tries = 0
        """Failures so far."""

    def __call__(self, attempt: Callable[[], T]) -> T:
        """``attempt()``'s result once it succeeds."""
        while True:
            try:
                return attempt()
            except OperationalError as e:
                self.tries += 1
                if self.tries >= self.attempts:
                    raise self.give_up(self.tries, e) from e
                time.sleep(self.pause(self.tries))
