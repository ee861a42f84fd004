"""Errors of the tamper-evident log; each carries what the caller needs.

    CommandLogError
     └── SealError
          ├── SealKeyError        the signing key or public key is missing, unreadable or not Ed25519 (``path``)
          ├── RowNotFoundError    no row with that uuid in that log table (``table``, ``key``)
          ├── NotSealedError      the row exists but no seal covers it yet (``table``, ``key``)
          └── ProofError          the row no longer matches its seal, so no inclusion proof exists (``reason``)

Tampering found by ``verify`` is not an error: it is a list of ``Finding``s (``commandlog.integrity.verify``).
"""

from __future__ import annotations

from pathlib import Path

from commandlog.errors import CommandLogError


class SealError(CommandLogError):
    """Root of the integrity errors."""


class SealKeyError(SealError):
    """The signing key or the public key cannot be used; ``path`` names the file."""

    def __init__(self, path: Path | str, problem: str) -> None:
        self.path = Path(path)
        super().__init__(f"seal key {path}: {problem}")


class RowNotFoundError(SealError):
    """No row with uuid ``key`` in the log table ``table``."""

    def __init__(self, table: str, key: str) -> None:
        self.table, self.key = table, key
        super().__init__(f"{table}: no row {key}")


class NotSealedError(SealError):
    """The row exists but was committed after the last sealing run (run ``cmdlog seal``)."""

    def __init__(self, table: str, key: str) -> None:
        self.table, self.key = table, key
        super().__init__(f"{table}: row {key} is not sealed yet (run `cmdlog seal`)")


class ProofError(SealError):
    """The row does not match its seal any more (``reason`` says how): ``cmdlog verify`` names the tampering."""

    def __init__(self, table: str, key: str, reason: str) -> None:
        self.table, self.key, self.reason = table, key, reason
        super().__init__(f"{table}: row {key}: {reason}; no inclusion proof (run `cmdlog verify`)")
