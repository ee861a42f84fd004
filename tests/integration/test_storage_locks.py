"""Contract of ``storage.locks`` and ``storage.errors.translated`` on real Postgres: the one advisory-lock helper,
the one retry loop and the one translation of driver errors."""

from __future__ import annotations

import time
import uuid

import psycopg
import pytest

from storage.errors import DatabaseUnavailableError, IntegrityError, OperationalError, StorageError, translated
from storage.locks import Retry, advisory_lock


class BusyError(StorageError):
    """Raised by the tests' ``busy`` factory."""


def _key() -> int:
    return uuid.uuid4().int >> 65  # a positive bigint no other test uses


def test_try_lock_is_refused_while_held_and_granted_once_released(pg_url):
    key = _key()
    with advisory_lock(pg_url, key, busy=lambda: BusyError("held")):
        with pytest.raises(BusyError), advisory_lock(pg_url, key, busy=lambda: BusyError("held")):
            pass
    with advisory_lock(pg_url, key, busy=lambda: BusyError("held")):
        pass  # released on leaving the first block


def test_waiting_lock_gives_up_after_its_timeout_with_the_busy_error(pg_url):
    key = (0x74657374, f"draft-{uuid.uuid4()}")  # the (class, text) form the draft approval lock uses
    with advisory_lock(pg_url, key, wait=5):
        started = time.monotonic()
        with pytest.raises(BusyError) as err, advisory_lock(pg_url, key, wait=0.2, busy=lambda: BusyError("busy")):
            pass
        assert 0.15 < time.monotonic() - started < 3
        assert isinstance(err.value.__cause__, OperationalError)
        assert isinstance(err.value.__cause__.__cause__, psycopg.errors.LockNotAvailable)


def test_an_error_in_the_block_releases_the_lock(pg_url):
    key = _key()
    with pytest.raises(ZeroDivisionError), advisory_lock(pg_url, key):
        raise ZeroDivisionError
    with advisory_lock(pg_url, key):
        pass


def test_unreachable_server_is_database_unavailable():
    with pytest.raises(DatabaseUnavailableError, match="cannot connect to Postgres"):
        with advisory_lock("postgresql://nobody@/none?host=/nonexistent-socket-dir", 1):
            pass


def test_translated_raises_our_error_from_the_driver_error(db):
    name = f"t_{uuid.uuid4().hex[:8]}"
    with db.connection() as conn:
        conn.execute(f"CREATE TEMP TABLE {name} (k int PRIMARY KEY)")
        conn.execute(f"INSERT INTO {name} VALUES (1)")
        with pytest.raises(IntegrityError) as err, translated(), conn.transaction():
            conn.execute(f"INSERT INTO {name} VALUES (1)")
    assert isinstance(err.value.__cause__, psycopg.errors.UniqueViolation)
    assert "duplicate key" in str(err.value)


def test_retry_counts_failures_over_every_call_and_gives_up_from_the_last():
    failures = iter([OperationalError("one"), OperationalError("two"), OperationalError("three")])

    def attempt() -> str:
        raise next(failures)

    retry = Retry(attempts=3, pause=lambda n: 0.0, give_up=lambda n, e: BusyError(f"gave up after {n}: {e}"))
    with pytest.raises(BusyError, match="gave up after 3: three") as err:
        retry(attempt)
    assert str(err.value.__cause__) == "three"
    assert Retry(attempts=2, pause=lambda n: 0.0, give_up=lambda n, e: BusyError())(lambda: 42) == 42
