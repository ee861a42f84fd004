"""Storage errors: the one place where driver exceptions become ours (``translated``).

    StorageError
     ├── DatabaseUnavailableError   the server cannot be reached or started
     ├── TenantIsolationError       a tenant session was asked for without a valid tenant id
     └── DatabaseError              the server refused a statement (any other driver error)
          ├── IntegrityError        a constraint refused a write, or the name is already taken
          └── OperationalError      a lock was not granted in time, a deadlock, a cancelled statement

Storage code that expects a driver error wraps the statement in ``with translated(): …`` and catches one of these
(the feature errors — ``HoldExistsError``, ``ApprovalLockTimeoutError``, … — subclass them). Nothing above
``storage/`` sees a psycopg exception from these paths. Errors raised by a command handler's own SQL on the bus's
connection are left as the driver raised them: the bus records them by their own name. The other engines have
one translating call site each: ADBC in ``storage.lake.arrow_export``, DuckDB in ``storage.lake.duckdb_journal``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import psycopg
import psycopg.errors


class StorageError(Exception):
    """Root of the storage layer's errors."""


class DatabaseUnavailableError(StorageError):
    """The database server cannot be reached or started."""


class TenantIsolationError(StorageError):
    """A tenant-scoped session was requested without a usable tenant id."""


class DatabaseError(StorageError):
    """The server refused a statement (PEP 249 ``DatabaseError``)."""


class IntegrityError(DatabaseError):
    """A constraint refused a write, or an object of that name already exists."""


class OperationalError(DatabaseError):
    """The statement gave up waiting: ``lock_timeout``, a deadlock, a cancelled statement."""


# First match wins: the specific SQLSTATE classes before their PEP 249 parents (``LockNotAvailable`` is an
# ``OperationalError`` to psycopg, as is a failed connection). https://www.psycopg.org/psycopg3/docs/api/errors.html
_TABLE: tuple[tuple[type[Exception], type[StorageError]], ...] = (
    (psycopg.errors.LockNotAvailable, OperationalError),
    (psycopg.errors.DeadlockDetected, OperationalError),
    (psycopg.errors.QueryCanceled, OperationalError),
    (psycopg.IntegrityError, IntegrityError),
    (psycopg.errors.DuplicateObject, IntegrityError),
    (psycopg.errors.DuplicateDatabase, IntegrityError),
    (psycopg.OperationalError, DatabaseUnavailableError),
    (psycopg.Error, DatabaseError),
)


def translate(e: BaseException) -> BaseException:
    """Our error for a driver error ``e`` (``e`` itself when it is not one); a statement that failed inside a
    pipeline is reported by the error that aborted it."""
    e = original_error(e)
    if not isinstance(e, psycopg.Error):
        return e
    for driver, ours in _TABLE:
        if isinstance(e, driver):
            return ours(str(e).strip())
    return e  # pragma: no cover - psycopg.Error closes the table


@contextlib.contextmanager
def translated(what: str | None = None) -> Iterator[None]:
    """Run the block with driver errors raised as storage errors (``raise … from e``); ``what`` prefixes the
    message (``cannot connect to Postgres: …``)."""
    try:
        yield
    except psycopg.Error as e:
        ours = translate(e)
        if what and ours is not e:
            ours.args = (f"{what}: {ours}",)
        raise ours from e


def original_error(e: BaseException) -> BaseException:
    """The error a pipeline really met: when a statement of a pipeline sync fails, psycopg may report it as
    ``PipelineAborted`` with the real error as its context."""
    if isinstance(e, psycopg.errors.PipelineAborted) and isinstance(e.__context__, psycopg.Error):
        return e.__context__
    return e
