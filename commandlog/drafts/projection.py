"""What a draft would do: the projection of a command (result, events, before/after diff, fingerprint).

The command runs through ``bus.project`` — one transaction, always rolled back, no after-commit effect, no log row —
with the domain's subject loader observing its subjects before and after the handler.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from commandlog.bus import CommandBus
from commandlog.commands import Command
from commandlog.context import ExecutionContext
from commandlog.drafts.subjects import SubjectLoaders, diff, fingerprint
from commandlog.records import Outcome
from storage.postgres import Connection


@dataclass(frozen=True, kw_only=True)
class Projection:
    """The would-be outcome of a draft version, and the state it was based on."""

    draft_uuid: uuid.UUID | None
    """The projected draft (None for a bare command)."""
    draft_version: int | None
    """The projected draft version."""
    cmd_class: str
    """Command class."""
    status: str
    """``succeeded`` or ``failed``: how the handler would end."""
    result: Any = None
    """The handler's would-be result."""
    events: list[dict[str, Any]] = field(default_factory=list)
    """``{event_type, payload}`` of every event it would emit."""
    error_type: str | None = None
    """Exception class of a would-be failure."""
    error_message: str | None = None
    """Message of a would-be failure."""
    subjects: list[str] = field(default_factory=list)
    """The command's subjects."""
    before: dict[str, Any] | None = None
    """The subjects' state before (None when the domain has no subject loader)."""
    after: dict[str, Any] | None = None
    """The subjects' state after the handler, inside the rolled-back transaction."""
    diff: list[dict[str, Any]] = field(default_factory=list)
    """Per subject: ``{subject, change, fields: [{path, before, after}]}``."""
    fingerprint: str = ""
    """Hash of ``before``: an approval is refused when the subjects no longer hash to it."""
    projected_at: str = ""
    """When it was projected (ISO 8601, UTC)."""

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready map (stored in ``command_draft.projection``, returned by the API)."""
        out = asdict(self)
        out["draft_uuid"] = str(self.draft_uuid) if self.draft_uuid else None
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Projection:
        """The projection stored by ``to_json``."""
        data = dict(data)
        data["draft_uuid"] = uuid.UUID(data["draft_uuid"]) if data.get("draft_uuid") else None
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


@dataclass(frozen=True, kw_only=True)
class Approval:
    """An approved draft: the command it executed as, and what came of it."""

    draft_uuid: uuid.UUID
    """The executed draft."""
    cmd_uuid: uuid.UUID
    """The command it executed as (``command_log.cmd_uuid``)."""
    approver: str
    """Who approved it (the command's actor)."""
    result: Any = None
    """The handler's result."""
    events: list[dict[str, Any]] = field(default_factory=list)
    """The events it emitted."""

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready map."""
        return {**asdict(self), "draft_uuid": str(self.draft_uuid), "cmd_uuid": str(self.cmd_uuid)}


def project_command(bus: CommandBus, loaders: SubjectLoaders, command: Command, context: ExecutionContext, *,
                    draft_version: int | None = None) -> Projection:
    """Project ``command`` on ``bus``; its domain's loader observes its subjects before and after."""
    cls = type(command)
    subjects = [str(s) for s in command.subjects()]

    def observe(conn: Connection) -> dict[str, Any] | None:
        return loaders.load(conn, context.tenant_id, cls.cmd_class, subjects)

    outcome = bus.project(command, context, observe=observe)
    return Projection(
        draft_uuid=context.draft_uuid, draft_version=draft_version, cmd_class=cls.cmd_class, status=outcome.status,
        result=outcome.result, events=[{"event_type": e.event_type, "payload": e.payload} for e in outcome.events],
        error_type=outcome.error_type, error_message=_public_error(outcome), subjects=subjects,
        before=outcome.before, after=outcome.after, diff=diff(outcome.before, outcome.after),
        fingerprint=fingerprint(outcome.before), projected_at=datetime.now(UTC).isoformat(),
    )


def _public_error(outcome: Outcome) -> str | None:
    """The failure message scrubbed of the body's sensitive values (projections are shown to reviewers)."""
    return outcome.public_error_message
