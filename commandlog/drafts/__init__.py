"""Draft commands: a command body kept without executing it, edited, projected, then approved (or rejected)."""

from commandlog.drafts import errors
from commandlog.drafts.errors import *  # noqa: F403 — every draft error is public (``errors.__all__``)
from commandlog.drafts.service import Approval, DraftRow, DraftService, Projection
from commandlog.drafts.subjects import loaders

__all__ = ["Approval", "DraftRow", "DraftService", "Projection", "loaders"]
__all__ += errors.__all__
