"""Draft commands: a command body kept without executing it, edited, projected, then approved (or rejected)."""

from commandlog.drafts.service import (
    DraftService, DraftRow, Projection, Approval,
)
from commandlog.drafts.subjects import loaders
from commandlog.drafts.errors import (
    DraftError, DraftNotFoundError, DraftValidationError, DraftConflictError, DraftNotOpenError, DraftAlreadyExecutedError, ProjectionRequiredError, StaleProjectionError, DraftExecutionError, DraftApprovalTimeoutError, ApprovalCodeError,
)

__all__ = ["loaders", "DraftService", "DraftRow", "Projection", "Approval", "DraftError", "DraftNotFoundError", "DraftValidationError", "DraftConflictError", "DraftNotOpenError", "DraftAlreadyExecutedError", "ProjectionRequiredError", "StaleProjectionError", "DraftExecutionError", "DraftApprovalTimeoutError", "ApprovalCodeError"]
