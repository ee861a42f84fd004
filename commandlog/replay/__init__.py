"""Command replay: run logged commands again, as a dry run compared with the original, or for real to recover."""

from commandlog.replay.service import (
    ItemOutcome, ReplayError, ReplaySelectionTooLargeError, ReplayRequestConflictError, ReplayRequest, ReplayPlan, ReplayItemResult, ReplayReport, summary_line, plan, batches, run_replay, finish, replay_batch, prepare, replay_context, dry_run_verdict,
)

__all__ = [
    "ItemOutcome", "ReplayError", "ReplaySelectionTooLargeError", "ReplayRequestConflictError", "ReplayRequest",
    "ReplayPlan", "ReplayItemResult", "ReplayReport", "summary_line", "plan", "batches", "run_replay", "finish",
    "replay_batch", "prepare", "replay_context", "dry_run_verdict",
]
