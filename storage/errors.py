"""Storage errors: the one place where driver exceptions become ours.

    StorageError
     ├── DatabaseUnavailableError   the server cannot be reached or started
     └── TenantIsolationError       a tenant session was asked for without a valid tenant id
"""

from __future__ import annotations


class StorageError(Exception):
    """Root of the storage layer's errors."""


class DatabaseUnavailableError(StorageError):
    """The database server cannot be reached or started."""


class TenantIsolationError(StorageError):
    """A tenant-scoped session was requested without a usable tenant id."""
