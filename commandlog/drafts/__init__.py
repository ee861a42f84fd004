"""Draft commands: a command body kept without executing it, edited, projected, then approved (or rejected)."""

from commandlog.drafts.errors import (
    ApprovalCodeError,
    DraftAlreadyExecutedError,
    DraftApprovalTimeoutError,
    DraftConflictError,
    DraftError,
    DraftExecutionError,
    DraftNotFoundError,
    DraftNotOpenError,
    DraftValidationError,
    ProjectionRequiredError,
    StaleProjectionError,
)
from commandlog.drafts.service import (
    Approval,
    DraftRow,
    DraftService,
    Projection,
)
from commandlog.drafts.subjects import loaders

__all__ = [
    "Approval",
    "ApprovalCodeError",
    "DraftAlreadyExecutedError",
    "DraftApprovalTimeoutError",
    "DraftConflictError",
    "DraftError",
    "DraftExecutionError",
    "DraftNotFoundError",
    "DraftNotOpenError",
    "DraftRow",
    "DraftService",
    "DraftValidationError",
    "Projection",
    "ProjectionRequiredError",
    "StaleProjectionError",
    "loaders",
]
