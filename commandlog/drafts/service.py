"""Draft commands: a command body kept without executing it, edited, projected, then approved (or rejected).

    drafts = DraftService(bus)
    d = drafts.create("acme", "alice", RenameCustomer(customer_id=7, name="Nova Labs"))
    p = drafts.project(d.draft_uuid)                     # result, events, before/after diff, fingerprint
    drafts.approve(d.draft_uuid, approver="bob", fingerprint=p.fingerprint)   # executes exactly once

Every state change (edit, approve, reject, discard) runs under the draft's approval lock and is a conditional
update, so concurrent callers see a clean error ("already executed as <uuid>") instead of a second execution or a
spurious failed command. ``tenant_id=None`` means a system caller (a flow) acting on any tenant's draft.
"""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Mapping
from typing import Any, NoReturn

from commandlog.bus import CommandBus
from commandlog.commands import Command
from commandlog.context import ExecutionContext
from commandlog.drafts.bodies import from_json_map, to_json_map
from commandlog.drafts.errors import (
    DraftAlreadyExecutedError,
    DraftConflictError,
    DraftError,
    DraftExecutionError,
    DraftNotFoundError,
    DraftNotOpenError,
    DraftValidationError,
    ProjectionRequiredError,
    StaleProjectionError,
)
from commandlog.drafts.projection import Approval, Projection, project_command
from commandlog.drafts.subjects import SubjectLoaders, fingerprint
from commandlog.drafts.subjects import loaders as default_loaders
from commandlog.errors import CommandLogError
from commandlog.ids import uuid7
from commandlog.records import Outcome
from commandlog.validation import dumps, encode_body
from storage import drafts as repo
from storage.drafts import DraftRow
from storage.postgres import Connection

__all__ = ["Approval", "DraftRow", "DraftService", "Projection"]


class DraftService:
    """Create, read, edit, project, approve, reject and discard drafts on a bus's database."""

    def __init__(self, bus: CommandBus, *, loaders: SubjectLoaders | None = None, lock_timeout_s: float = 60.0) -> None:
        self.bus = bus
        self.db = bus.db
        self.loaders = loaders or default_loaders
        self.lock_timeout_s = lock_timeout_s

    # -- create and read ----------------------------------------------------------------------------------------

    def create(self, tenant_id: str, created_by: str, command: Command | None = None, *,
               cmd_class: str | None = None, body: Mapping[str, Any] | None = None) -> DraftRow:
        """A new open draft from a command instance, or from ``cmd_class`` and a JSON map ``body`` (validated)."""
        _require_text(tenant_id=tenant_id, created_by=created_by)
        if command is None:
            if cmd_class is None or body is None:
                raise DraftValidationError(str(cmd_class), [{"field": "cmd_class" if cmd_class is None else "body",
                                                             "message": "is required"}])
            command = from_json_map(cmd_class, body, registry=self.bus.registry)
        else:  # an instance may be built with model_construct: re-validate it like any JSON map
            command = from_json_map(type(command), to_json_map(command), registry=self.bus.registry)
        body_json, subjects = self._check_storable(command)
        with self.db.connection() as conn:
            return repo.insert(conn, draft_uuid=uuid7(), tenant_id=tenant_id, cmd_class=type(command).cmd_class,
                               cmd_version=type(command).cmd_version, body_json=body_json, subjects=subjects,
                               created_by=created_by)

    def get(self, draft_uuid: uuid.UUID | str, *, tenant_id: str | None = None) -> DraftRow:
        """The draft; read through the tenant's RLS session when ``tenant_id`` is given."""
        draft_uuid = _uuid(draft_uuid)
        if tenant_id is None:
            with self.db.connection() as conn:
                row = repo.get(conn, draft_uuid)
        else:
            with self.db.tenant_session(tenant_id) as conn:
                row = repo.get(conn, draft_uuid, tenant_id=tenant_id)
        if row is None:
            raise DraftNotFoundError(draft_uuid)
        return row

    def list(self, tenant_id: str, *, status: str | None = None, limit: int = 50) -> list[DraftRow]:
        """The tenant's drafts (through its RLS session), most recently changed first."""
        if status is not None and status not in ("open", "executed", "rejected", "discarded"):
            raise DraftValidationError("draft", [{"field": "status", "message": f"unknown status {status!r}"}])
        with self.db.tenant_session(tenant_id) as conn:
            return repo.list_for_tenant(conn, tenant_id, status=status, limit=max(1, min(limit, 1000)))

    def command_of(self, draft: DraftRow) -> Command:
        """The draft's body as a validated command (upcast when stored at an older version)."""
        return from_json_map(draft.cmd_class, draft.cmd_body, cmd_version=draft.cmd_version,
                             registry=self.bus.registry)

    # -- change -------------------------------------------------------------------------------------------------

    def edit(self, draft_uuid: uuid.UUID | str, *, tenant_id: str, body: Mapping[str, Any],
             expected_version: int, merge: bool = False) -> DraftRow:
        """Replace (or, with ``merge``, update top-level fields of) the body of the draft at ``expected_version``.

        An invalid body raises ``DraftValidationError`` and leaves the draft as it was; an edit of an older
        version raises ``DraftConflictError`` naming the current version.
        """
        draft_uuid = _uuid(draft_uuid)
        with repo.approval_lock(self.db.url, draft_uuid, timeout_s=self.lock_timeout_s):
            current = self._get_open(draft_uuid, tenant_id)
            if current.version != expected_version:
                raise DraftConflictError(draft_uuid, expected_version=expected_version, current_version=current.version)
            if not isinstance(body, Mapping):
                raise DraftValidationError(current.cmd_class, [{"field": "body", "message": "must be a JSON object"}])
            new_body = {**current.cmd_body, **body} if merge else dict(body)
            command = from_json_map(current.cmd_class, new_body, registry=self.bus.registry)
            body_json, subjects = self._check_storable(command)
            with self.db.connection() as conn:
                row = repo.update_body(conn, draft_uuid, tenant_id, expected_version=expected_version,
                                       body_json=body_json, cmd_version=type(command).cmd_version, subjects=subjects)
        return row or self._explain_missed(draft_uuid, tenant_id, expected_version)

    def discard(self, draft_uuid: uuid.UUID | str, *, tenant_id: str, actor: str) -> DraftRow:
        """Open → discarded (a discarded draft stays discarded: repeating is harmless)."""
        draft_uuid = _uuid(draft_uuid)
        _require_text(actor=actor)
        with repo.approval_lock(self.db.url, draft_uuid, timeout_s=self.lock_timeout_s), self.db.connection() as conn:
            row = repo.mark_discarded(conn, draft_uuid, tenant_id, decided_by=actor)
        if row is None:
            row = self.get(draft_uuid, tenant_id=tenant_id)
            if row.status != "discarded":
                self._raise_not_open(row)
        return row

    def reject(self, draft_uuid: uuid.UUID | str, *, rejecter: str, comment: str | None = None,
               tenant_id: str | None = None) -> DraftRow:
        """Open → rejected, recording who rejected it and why."""
        draft_uuid = _uuid(draft_uuid)
        _require_text(rejecter=rejecter)
        with repo.approval_lock(self.db.url, draft_uuid, timeout_s=self.lock_timeout_s):
            current = self._get_open(draft_uuid, tenant_id)
            with self.db.connection() as conn:
                row = repo.mark_rejected(conn, draft_uuid, current.tenant_id, decided_by=rejecter, comment=comment)
        return row or self._explain_missed(draft_uuid, tenant_id, None)

    # -- projection and approval --------------------------------------------------------------------------------

    def project(self, draft_uuid: uuid.UUID | str, *, tenant_id: str | None = None,
                actor: str | None = None) -> Projection:
        """Run the draft in an always-rolled-back transaction and remember what it would do, with a fingerprint."""
        draft = self._get_open(_uuid(draft_uuid), tenant_id)
        command = self.command_of(draft)
        ctx = ExecutionContext(tenant_id=draft.tenant_id, actor_id=actor or draft.created_by,
                               draft_uuid=draft.draft_uuid)
        projection = project_command(self.bus, self.loaders, command, ctx, draft_version=draft.version)
        with self.db.connection() as conn:
            saved = repo.save_projection(conn, draft.draft_uuid, version=draft.version,
                                         projection_json=dumps(projection.to_json()),
                                         fingerprint=projection.fingerprint)
        if saved is None:
            self._explain_missed(draft.draft_uuid, tenant_id, draft.version)
        return projection

    def last_projection(self, draft: DraftRow) -> Projection | None:
        """The stored projection of the draft's current version, or None."""
        if draft.projection is None or draft.projected_version != draft.version:
            return None
        return Projection.from_json(draft.projection)

    def approve(self, draft_uuid: uuid.UUID | str, *, approver: str, comment: str | None = None,
                fingerprint: str | None = None, tenant_id: str | None = None) -> Approval:
        """Execute the draft's current body through the bus, exactly once, if its projection still holds.

        ``fingerprint`` is the one of the projection the approver reviewed (the latest stored one when None).
        """
        draft_uuid = _uuid(draft_uuid)
        _require_text(approver=approver)
        with repo.approval_lock(self.db.url, draft_uuid, timeout_s=self.lock_timeout_s):
            draft = self._get_open(draft_uuid, tenant_id)
            self._check_fresh(draft, fingerprint)
            command = self.command_of(draft)
            ctx = ExecutionContext(tenant_id=draft.tenant_id, actor_id=approver, draft_uuid=draft_uuid)

            def mark_executed(conn: Connection, outcome: Outcome) -> None:
                if repo.mark_executed(conn, draft_uuid, version=draft.version, cmd_uuid=outcome.cmd_uuid,
                                      decided_by=approver, comment=comment) is None:
                    raise DraftNotOpenError(draft_uuid, "changed", f"draft {draft_uuid} changed during its approval")

            try:
                outcome = self.bus.execute(command, ctx, in_transaction=mark_executed)
            except CommandLogError:
                raise
            except Exception as e:
                raise DraftExecutionError(draft_uuid, getattr(e, "cmd_uuid", None), e) from e
        return Approval(draft_uuid=draft_uuid, cmd_uuid=outcome.cmd_uuid, approver=approver, result=outcome.result,
                        events=[{"event_type": ev.event_type, "payload": ev.payload} for ev in outcome.events])

    # -- internals ----------------------------------------------------------------------------------------------

    def _check_fresh(self, draft: DraftRow, reviewed: str | None) -> None:
        if draft.projection is None or draft.projected_version != draft.version:
            raise ProjectionRequiredError(f"draft {draft.draft_uuid} version {draft.version} has no projection; "
                                          "project it and review the result before approving")
        if reviewed is not None and reviewed != draft.projection_fingerprint:
            raise StaleProjectionError(f"draft {draft.draft_uuid} was projected again since the projection you "
                                       "reviewed; review the new projection and approve that")
        if draft.projection.get("status") != "succeeded":
            raise ProjectionRequiredError(f"draft {draft.draft_uuid}'s projection failed "
                                          f"({draft.projection.get('error_message')}); fix the draft and project again")
        with self.db.connection() as conn:
            now = fingerprint(self.loaders.load(conn, draft.tenant_id, draft.cmd_class, draft.subjects))
        if now != draft.projection_fingerprint:
            raise StaleProjectionError(f"the subjects of draft {draft.draft_uuid} ({', '.join(draft.subjects)}) "
                                       "changed since it was projected; project it again and review the new result")

    def _check_storable(self, command: Command) -> tuple[str, builtins.list[str]]:  # `list` is a method here
        cls = type(command)
        if not cls.body_stored():
            raise DraftValidationError(cls.cmd_class, [{"field": "cmd_class", "message": "its body may not be "
                                                        "stored (NeverStoreCmdBody), so it cannot be a draft"}])
        body_json = encode_body(command)  # the bus's bytes: the same size limit, the same stored body
        if len(body_json.encode()) > self.bus.max_body_bytes:
            raise DraftValidationError(cls.cmd_class, [{"field": "body", "message": f"over the limit of "
                                                        f"{self.bus.max_body_bytes} bytes"}])
        try:
            subjects = [str(s) for s in command.subjects()]
        except Exception as e:
            raise DraftValidationError(cls.cmd_class, [{"field": "subjects", "message": str(e)}]) from None
        return body_json, subjects

    def _get_open(self, draft_uuid: uuid.UUID, tenant_id: str | None) -> DraftRow:
        with self.db.connection() as conn:
            row = repo.get(conn, draft_uuid, tenant_id=tenant_id)
        if row is None:
            raise DraftNotFoundError(draft_uuid)
        if row.status != "open":
            self._raise_not_open(row)
        return row

    def _explain_missed(self, draft_uuid: uuid.UUID, tenant_id: str | None, expected_version: int | None) -> NoReturn:
        row = self._get_open(draft_uuid, tenant_id)
        if expected_version is not None and row.version != expected_version:
            raise DraftConflictError(draft_uuid, expected_version=expected_version, current_version=row.version)
        raise DraftError(f"draft {draft_uuid} changed concurrently; try again")

    @staticmethod
    def _raise_not_open(row: DraftRow) -> NoReturn:
        if row.status == "executed":
            raise DraftAlreadyExecutedError(row.draft_uuid, row.executed_as_cmd_uuid)
        raise DraftNotOpenError(row.draft_uuid, row.status)


def _uuid(value: uuid.UUID | str) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise DraftValidationError("draft", [{"field": "draft_uuid", "message": f"not a UUID: {value!r}"}]) from None


def _require_text(**values: Any) -> None:
    for name, value in values.items():
        if not isinstance(value, str) or not value.strip():
            raise DraftValidationError("draft", [{"field": name, "message": "must be a non-empty string"}])

