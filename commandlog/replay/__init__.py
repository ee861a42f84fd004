"""Command replay: run logged commands again, as a dry run compared with the original, or for real to recover."""

from commandlog.replay import service
from commandlog.replay.service import *  # noqa: F403 — the public API is the service's ``__all__`` (models included)

__all__ = service.__all__
