"""What an execution knows: who runs it for which tenant (``ExecutionContext``) and what a handler may do
(``HandlerContext``: write through the transaction's connection, emit events, defer side effects, run sub-commands).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from commandlog.commands import Command
from commandlog.ids import uuid7
from storage.postgres import Connection

Mode = Literal["live", "projection", "dry_run"]


@dataclass(frozen=True, kw_only=True)
class ExecutionContext:
    """Who executes a command, for which tenant, and how it links to other commands."""

    tenant_id: str
    """The tenant the command acts for."""
    actor_id: str
    """Who runs it (a user id, or ``system:<name>``)."""
    correlation_id: uuid.UUID | None = None
    """Groups the commands of one user intent; a new one is made when absent."""
    causation_id: uuid.UUID | None = None
    """The command that caused this one."""
    replay_of: uuid.UUID | None = None
    """The original command when this execution is a replay."""
    draft_uuid: uuid.UUID | None = None
    """The draft this execution comes from."""

    def with_(self, **changes: Any) -> ExecutionContext:
        """A copy with some fields changed."""
        if not changes.keys() <= _CONTEXT_FIELDS:
            return replace(self, **changes)  # raises the TypeError naming the unknown field
        # Copying the field dict directly: ``dataclasses.replace`` re-runs ``__init__`` field by field, a cost the
        # bus pays on every command (it fills in the correlation id).
        copy = object.__new__(ExecutionContext)
        copy.__dict__.update(self.__dict__, **changes)
        return copy


_CONTEXT_FIELDS = frozenset(ExecutionContext.__dataclass_fields__)


@dataclass(frozen=True, kw_only=True)
class EventRecord:
    """A domain event emitted by a handler."""

    event_uuid: uuid.UUID
    """Time-ordered id of the event."""
    cmd_uuid: uuid.UUID
    """The command whose handler emitted it."""
    event_type: str
    """Past-tense name, e.g. ``CustomerRenamed``."""
    payload: dict[str, Any]
    """JSON payload."""
    occurred_at: datetime
    """When it was emitted."""


class NestedExecution(Protocol):
    """Runs a sub-command in its parent's transaction: the bus hands one to every ``HandlerContext`` it makes, so this
    module, below the bus, never imports it."""

    def __call__(self, command: Command, parent: HandlerContext) -> Any:
        """Execute ``command`` as a sub-command of ``parent`` and return its result."""


@dataclass(kw_only=True)
class HandlerContext:
    """Given to a handler: its transaction's connection and the ways to emit events, defer effects and nest commands."""

    conn: Connection
    """The connection of the execution's transaction: every write of the handler goes through it."""
    execution: ExecutionContext
    """Tenant, actor, correlation and links of this execution."""
    cmd_uuid: uuid.UUID
    """Id of the command being handled."""
    mode: Mode
    """``live``, or ``projection``/``dry_run`` (always rolled back, no after-commit effects)."""
    _execute_nested: NestedExecution = field(repr=False)
    events: list[EventRecord] = field(default_factory=list)
    _after_commit: list[Callable[[], None]] = field(default_factory=list, repr=False)

    @property
    def tenant_id(self) -> str:
        """The tenant the command acts for."""
        return self.execution.tenant_id

    @property
    def actor_id(self) -> str:
        """Who runs the command."""
        return self.execution.actor_id

    def emit(self, event_type: str, payload: dict[str, Any] | None = None) -> uuid.UUID:
        """Record a domain event; it is written with the command's log rows, in the same transaction."""
        event = EventRecord(event_uuid=uuid7(), cmd_uuid=self.cmd_uuid, event_type=event_type,
                            payload=dict(payload or {}), occurred_at=datetime.now(UTC))
        self.events.append(event)
        return event.event_uuid

    def after_commit(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` once the live execution has committed; never in projection or dry run, never on failure."""
        self._after_commit.append(fn)

    def execute(self, command: Command) -> Any:
        """Execute a sub-command in this transaction: it inherits the correlation and records this one as cause."""
        return self._execute_nested(command, self)
