"""Errors of draft commands; each carries what the caller needs to recover.

    CommandLogError
     └── DraftError
          ├── DraftNotFoundError          no such draft for this tenant
          ├── DraftValidationError        the body is not a valid command (``errors`` name each field)
          ├── DraftConflictError          an edit based on an old version (``current_version`` says which is current)
          ├── DraftNotOpenError           the draft was already decided (``status``)
          │    └── DraftAlreadyExecutedError   … executed, as ``cmd_uuid``
          ├── ProjectionRequiredError     approving needs a projection of the current version
          ├── StaleProjectionError        the subjects changed since the projection: project again
          ├── DraftExecutionError         the approved command failed (logged as failed; the draft stays open)
          └── DraftApprovalTimeoutError   nobody decided in the draft-approval flow in time (the draft stays open)
     └── ApprovalCodeError                an approval code is malformed, unknown, used, expired, for another draft
                                          version, or its token may not approve (``field`` = ``approval_code``);
                                          raised by ``commandlog.auth.approval_codes``, which knows nothing of
                                          drafts (drafts depend on auth), and importable from here as before
"""

from __future__ import annotations

import uuid

from commandlog.auth.approval_codes import ApprovalCodeError  # re-exported (__all__): see the tree above
from commandlog.errors import CommandLogError, errors_text

__all__ = [
    "ApprovalCodeError", "DraftAlreadyExecutedError", "DraftApprovalTimeoutError", "DraftConflictError", "DraftError",
    "DraftExecutionError", "DraftNotFoundError", "DraftNotOpenError", "DraftValidationError", "ProjectionRequiredError",
    "StaleProjectionError",
]

class DraftError(CommandLogError):
    """Root of the draft errors."""


class DraftNotFoundError(DraftError):
    """No draft with this id for this tenant."""

    def __init__(self, draft_uuid: uuid.UUID | str) -> None:
        self.draft_uuid = draft_uuid
        super().__init__(f"draft {draft_uuid} not found")


class DraftValidationError(DraftError):
    """The body is not a valid command of its class; ``errors`` are ``{field, message}`` maps."""

    def __init__(self, cmd_class: str, errors: list[dict]) -> None:
        self.cmd_class = cmd_class
        self.errors = errors
        super().__init__(f"invalid {cmd_class} body: {errors_text(errors)}")


class DraftConflictError(DraftError):
    """The edit was based on ``expected_version`` but the draft is at ``current_version``."""

    def __init__(self, draft_uuid: uuid.UUID, *, expected_version: int, current_version: int) -> None:
        self.draft_uuid = draft_uuid
        self.expected_version = expected_version
        self.current_version = current_version
        super().__init__(f"draft {draft_uuid} was changed: you edited version {expected_version}, the current "
                         f"version is {current_version}; reload it and edit again")


class DraftNotOpenError(DraftError):
    """The draft is no longer open (executed, rejected or discarded)."""

    def __init__(self, draft_uuid: uuid.UUID, status: str, message: str | None = None) -> None:
        self.draft_uuid = draft_uuid
        self.status = status
        super().__init__(message or f"draft {draft_uuid} is {status}, no longer open")


class DraftAlreadyExecutedError(DraftNotOpenError):
    """The draft was already executed, as command ``cmd_uuid``."""

    def __init__(self, draft_uuid: uuid.UUID, cmd_uuid: uuid.UUID | None) -> None:
        # typed as the row's column; never None for an executed draft (CHECK of command_draft, migration 0006)
        self.cmd_uuid = cmd_uuid
        super().__init__(draft_uuid, "executed", f"draft {draft_uuid} already executed as {cmd_uuid}")


class ProjectionRequiredError(DraftError):
    """Approval needs a projection of the draft's current version."""


class StaleProjectionError(DraftError):
    """What the projection showed no longer holds (subjects or body changed): project again before approving."""


class DraftExecutionError(DraftError):
    """The approved command failed; the failure is in the log as ``cmd_uuid`` and the draft stays open."""

    def __init__(self, draft_uuid: uuid.UUID, cmd_uuid: uuid.UUID | None, error: BaseException) -> None:
        self.draft_uuid = draft_uuid
        self.cmd_uuid = cmd_uuid
        super().__init__(f"draft {draft_uuid} failed as {cmd_uuid}: {type(error).__name__}: {error}")


class DraftApprovalTimeoutError(DraftError):
    """Nobody decided within the approval flow's timeout; the draft stays open."""
