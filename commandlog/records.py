"""The record of one execution attempt, as written to the global and tenant logs and handed to lifecycle hooks."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from commandlog.commands import Command
from commandlog.context import EventRecord, ExecutionContext

Status = Literal["succeeded", "failed", "rejected"]


@dataclass(kw_only=True)
class CommandRecord:
    """One command execution attempt."""

    cmd_uuid: uuid.UUID
    """Time-ordered id of the attempt."""
    cmd_class: str
    """Registered name of the command class."""
    cmd_version: int
    """Schema version of the body."""
    tenant_id: str
    """Tenant the command acted for."""
    actor_id: str
    """Who ran it."""
    correlation_id: uuid.UUID
    """Correlation shared by the commands of one intent."""
    causation_id: uuid.UUID | None
    """The command that caused this one."""
    replay_of: uuid.UUID | None
    """The original, when this is a replay."""
    draft_uuid: uuid.UUID | None
    """The draft it came from."""
    retention: str
    """Retention class."""
    subjects: list[str]
    """Entities touched, ``kind:id``."""
    started_at: datetime
    """When the attempt began."""
    finished_at: datetime | None = None
    """When it ended."""
    status: Status | None = None
    """``succeeded``, ``failed`` or ``rejected`` once finished."""
    error_type: str | None = None
    """Exception class name of a failure or rejection."""
    error_message: str | None = None
    """Full error message (tenant log)."""
    public_error_message: str | None = None
    """Error message scrubbed of sensitive values (global log)."""
    body_json: str | None = None
    """Full body as JSON text (tenant log); None when not stored."""
    public_body_json: str | None = None
    """Redacted body as JSON text (global log); None when excluded."""
    body_excluded: bool = False
    """True when the global log holds no body."""
    result: Any = None
    """JSON-ready result of the handler."""
    events: list[EventRecord] = field(default_factory=list)
    """Domain events the handler emitted."""
    secrets: list[str] = field(default_factory=list, repr=False)
    """Sensitive values of the body, scrubbed from the global log's error message."""

    def lean(self) -> dict[str, Any]:
        """The global log's view: no full body, no unscrubbed error, no result."""
        return {
            "cmd_uuid": str(self.cmd_uuid), "cmd_class": self.cmd_class, "cmd_version": self.cmd_version,
            "tenant_id": self.tenant_id, "actor_id": self.actor_id, "correlation_id": str(self.correlation_id),
            "causation_id": _s(self.causation_id), "replay_of": _s(self.replay_of), "draft_uuid": _s(self.draft_uuid),
            "status": self.status, "error_type": self.error_type, "error_message": self.public_error_message,
            "started_at": self.started_at.isoformat(), "retention": self.retention, "subjects": list(self.subjects),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "body_excluded": self.body_excluded,
        }


def _s(u: uuid.UUID | None) -> str | None:
    return str(u) if u is not None else None


@dataclass(kw_only=True)
class Outcome:
    """What an execution produced: returned by the bus in every mode."""

    cmd_uuid: uuid.UUID
    """Id of the attempt."""
    status: Status
    """How it ended."""
    result: Any = None
    """JSON-ready handler result (None on failure)."""
    events: list[EventRecord] = field(default_factory=list)
    """Events emitted (by the command and its sub-commands)."""
    error_type: str | None = None
    """Exception class name on failure."""
    error_message: str | None = None
    """Error message on failure."""
    before: Any = None
    """What the ``observe`` callback saw before the handler (projection / dry run)."""
    after: Any = None
    """What the ``observe`` callback saw after the handler (projection / dry run)."""
    record: CommandRecord | None = None
    """The full record of the attempt."""

    @property
    def public_error_message(self) -> str | None:
        """The failure message scrubbed of the body's sensitive values (what may be shown beyond the tenant)."""
        if self.record is not None and self.record.public_error_message is not None:
            return self.record.public_error_message
        return self.error_message


@dataclass(frozen=True, kw_only=True)
class HistoricalCommand:
    """A command that already ran, for ``CommandBus.import_history``."""

    command: Command
    """The validated command."""
    context: ExecutionContext
    """Who ran it for which tenant."""
    started_at: datetime
    """When it started (UTC)."""
    finished_at: datetime | None = None
    """When it finished; ``started_at`` when absent."""
    status: Status = "succeeded"
    """``succeeded``, ``failed`` or ``rejected``."""
    error_type: str | None = None
    """Exception class name of a failure."""
    error_message: str | None = None
    """Error message of a failure."""
    result: Any = None
    """JSON-ready result."""
    events: tuple[tuple[str, dict], ...] = ()
    """``(event_type, payload)`` pairs it emitted."""
    cmd_uuid: uuid.UUID | None = None
    """Its id; a UUIDv7 of ``started_at`` when absent."""
