"""What a replay takes and returns: the request (also the flow's parameter form), the resolved plan, one result per
original, the report, and the replay errors.

    ReplayError                        a replay request cannot be carried out as asked
     ├── ReplaySelectionTooLargeError  the selection matches more commands than ``max_commands``
     ├── ReplayRequestConflictError    a request id is reused with another mode
     └── ReplayConflictError           another run of the same request closed an item first (``commandlog.replay.run``)
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from commandlog.errors import CommandLogError

ItemOutcome = Literal["succeeded", "failed", "reproduced", "diverged", "now_succeeds", "now_fails",
                      "not_replayable", "already_replayed", "not_found"]


class ReplayError(CommandLogError):
    """A replay request cannot be carried out as asked."""


class ReplaySelectionTooLargeError(ReplayError):
    """The selection matches more commands than the request's cap (``max_commands``)."""

    def __init__(self, matched: int, cap: int) -> None:
        self.matched, self.cap = matched, cap
        super().__init__(f"the selection matches {matched} commands, more than max_commands={cap}: "
                         "narrow the filter (class, time window, tenant) or raise max_commands")


class ReplayRequestConflictError(ReplayError):
    """A request id is reused with another mode."""


class ReplayRequest(BaseModel):
    """What to replay and how: explicit ``cmd_uuids`` or a filter, a mode, a cap; also the flow's parameter form."""

    model_config = ConfigDict(extra="forbid")

    cmd_uuids: list[uuid.UUID] = Field(default_factory=list, description="Originals to replay (or use a filter).")
    tenant_id: str | None = Field(None, min_length=1, description="Filter: only this tenant.")
    cmd_class: str | None = Field(None, min_length=1, description="Filter: only this class, e.g. billing.IssueInvoice.")
    status: Literal["failed", "rejected", "succeeded"] | None = Field(None, description="Filter: original status.")
    since: datetime | None = Field(None, description="Filter: started at or after (UTC when no zone).")
    until: datetime | None = Field(None, description="Filter: started before (UTC when no zone).")
    correlation_id: uuid.UUID | None = Field(None, description="Filter: one correlation.")
    include_replayed: bool = Field(False, description="Filter: also originals that a replay already recovered.")
    mode: Literal["dry_run", "execute"] = Field("dry_run", description="dry_run compares and commits nothing.")
    requested_by: str = Field(min_length=1, max_length=200, description="Who asks: the actor of the replays.")
    max_commands: int = Field(1000, ge=1, le=1_000_000, description="Refuse a selection larger than this.")
    batch_size: int = Field(500, ge=1, le=10_000, description="Commands per batch (one task per batch).")
    request_id: uuid.UUID | None = Field(None, description="Reuse to resume a request; new when empty.")

    @field_validator("since", "until")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value

    @model_validator(mode="after")
    def _selection(self) -> ReplayRequest:
        if self.cmd_uuids and self.has_filter():
            raise ValueError("give cmd_uuids or a filter (tenant_id, cmd_class, status, since, until, "
                             "correlation_id), not both")
        if not self.cmd_uuids and not self.has_filter():
            raise ValueError("cmd_uuids: give at least one command id, or a filter")
        if self.since and self.until and self.since >= self.until:
            raise ValueError("until: must be later than since")
        return self

    def has_filter(self) -> bool:
        """True when any filter field is set."""
        return any(v is not None for v in (self.tenant_id, self.cmd_class, self.status, self.since, self.until,
                                           self.correlation_id))

    def filters(self) -> dict[str, Any]:
        """The filter as keyword arguments of ``storage.replays.select_uuids``."""
        return {"tenant_id": self.tenant_id, "cmd_class": self.cmd_class, "status": self.status, "since": self.since,
                "until": self.until, "correlation_id": self.correlation_id, "include_replayed": self.include_replayed}


@dataclass(frozen=True, kw_only=True)
class ReplayPlan:
    """A resolved request: its id and the originals to process, in order."""

    request_id: uuid.UUID
    """Stable id: items are keyed by it."""
    mode: Literal["dry_run", "execute"]
    """How to replay."""
    requested_by: str
    """Actor of the replays."""
    cmd_uuids: tuple[uuid.UUID, ...]
    """The originals, oldest first (unknown ids last)."""
    resumed: bool = False
    """True when the request already existed (a rerun)."""

    def header(self) -> ReplayPlan:
        """The plan without its list of originals: what a batch needs (light to pass to every Prefect task)."""
        return replace(self, cmd_uuids=())


@dataclass(frozen=True, kw_only=True)
class ReplayItemResult:
    """What happened to one original in this run."""

    original_cmd_uuid: uuid.UUID
    """The original."""
    outcome: ItemOutcome
    """``succeeded``/``failed`` (execute), a dry-run verdict, or why nothing ran."""
    cmd_class: str | None = None
    """Its class."""
    tenant_id: str | None = None
    """Its tenant."""
    original_status: str | None = None
    """How the original ended."""
    replay_cmd_uuid: uuid.UUID | None = None
    """The replay's id (execute mode)."""
    message: str | None = None
    """Error, refusal reason, or a summary of the diff."""
    diff: tuple[dict, ...] = ()
    """Field-level differences (dry run, ``diverged``)."""

    def row(self) -> dict[str, Any]:
        """JSON-ready view (CLI, artifacts, flow results)."""
        d = asdict(self)
        d["original_cmd_uuid"] = str(self.original_cmd_uuid)
        d["replay_cmd_uuid"] = str(self.replay_cmd_uuid) if self.replay_cmd_uuid else None
        d["diff"] = list(self.diff)
        return d


@dataclass(kw_only=True)
class ReplayReport:
    """Every item of a run, in order."""

    plan: ReplayPlan
    """The request it ran."""
    items: list[ReplayItemResult] = field(default_factory=list)
    """Per-original results."""

    def counts(self) -> dict[str, int]:
        """How many items ended with each outcome."""
        counts: dict[str, int] = {}
        for item in self.items:
            counts[item.outcome] = counts.get(item.outcome, 0) + 1
        return counts


def summary_line(mode: Literal["dry_run", "execute"], counts: Mapping[str, int]) -> str:
    """One line for the run's log and final state, most frequent outcome first.

    ``replay dry run: 52 commands — 30 reproduced, 12 now_succeeds, 10 diverged``
    """
    label = "replay dry run" if mode == "dry_run" else "replay"
    total = sum(counts.values())
    if not total:
        return f"{label}: nothing selected"
    parts = ", ".join(f"{n:,} {outcome}" for outcome, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    return f"{label}: {total:,} command{'' if total == 1 else 's'} — {parts}"
