"""The command bus: runs a command's handler and records the attempt in the same transaction.

Live execution: handler writes, ``command_log``, ``tenant_command_log`` and ``domain_event`` rows commit together
(the log rows go out in the same pipeline sync as the ``COMMIT``); a handler exception rolls everything back, a
``failed`` row is written on its own and the exception propagates; a refused command leaves a ``rejected`` row.
Projection and dry run execute in a transaction that is always rolled back, run no after-commit effect and fire
no hooks. Lifecycle hooks (started / succeeded / failed) run after the outcome is known; a failing hook is logged.
"""

from __future__ import annotations

import functools
import json
import logging
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import ValidationError
from pydantic_core import PydanticSerializationError, to_jsonable_python

from commandlog.command_json import check_storable, may_be_unstorable, storable_text, text_problem
from commandlog.commands import Command, CommandRegistry
from commandlog.commands import registry as default_registry
from commandlog.context import EventRecord, ExecutionContext, HandlerContext, Mode
from commandlog.errors import CommandRejectedError, NoHandlerError, UnknownCommandError, UnstorableValueError
from commandlog.ids import uuid7
from commandlog.records import CommandRecord, HistoricalCommand, Outcome
from commandlog.redaction import has_sensitive, redact, scrub, sensitive_values
from commandlog.validation import context_errors, errors_text, validation_errors
from commandlog.validation import dumps as _dumps
from commandlog.validation import encode_body as _encode_body
from commandlog.validation import json_or_none as _json_or_none
from commandlog.validation import serialisation_error as _serialisation_error
from commandlog.validation import to_json as _to_json
from storage import logs
from storage.errors import original_error
from storage.postgres import Connection, Database, transaction_open

log = logging.getLogger(__name__)

Handler = Callable[[Any, HandlerContext], Any]
Hook = Callable[[CommandRecord], None]
HookEvent = Literal["started", "succeeded", "failed"]
DEFAULT_MAX_BODY_BYTES = 256 * 1024
_MAX_NAME = 200
_MAX_ERROR = 10_000
NO_TENANT = " "
"""``tenant_id`` of a rejected row whose tenant was missing or blank: no tenant session can have it (sessions refuse
blank tenants), whereas ``''`` is what ``current_setting('cmdlog.tenant_id', true)`` reads after a reset."""


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class _UnitOfWork:
    """The records of one root transaction: written at its commit, or (failures only) after its rollback."""

    records: list[CommandRecord] = field(default_factory=list)
    failures: list[CommandRecord] = field(default_factory=list)


class CommandBus:
    """Executes registered commands through their handlers and records every attempt."""

    def __init__(self, db: Database, *, registry: CommandRegistry | None = None,
                 max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        self.db = db
        self.registry = registry or default_registry
        self.max_body_bytes = max_body_bytes
        self._handlers: dict[str, Handler] = {}
        self._hooks: dict[str, list[Hook]] = {"started": [], "succeeded": [], "failed": []}

    # -- registration -------------------------------------------------------------------------------------------

    def register(self, command_type: type[Command], handler: Handler) -> None:
        """Make ``handler(command, ctx)`` the handler of ``command_type``."""
        if not command_type.cmd_class:
            raise TypeError(f"{command_type.__name__} has no cmd_class")
        self.registry.register(command_type)
        self._handlers[command_type.cmd_class] = handler

    def handler(self, command_type: type[Command]) -> Callable[[Handler], Handler]:
        """Decorator form of ``register``."""

        def decorate(fn: Handler) -> Handler:
            self.register(command_type, fn)
            return fn

        return decorate

    def add_hook(self, event: HookEvent, hook: Hook) -> None:
        """Call ``hook(record)`` on every ``started``, ``succeeded`` or ``failed`` (incl. rejected) live attempt."""
        self._hooks[event].append(hook)

    # -- entry points -------------------------------------------------------------------------------------------

    def submit(self, cmd_class: str, body: Mapping[str, Any], context: ExecutionContext, **kw: Any) -> Outcome:
        """Validate a JSON map as ``cmd_class`` and execute it; a bad context, an unknown class or an invalid or
        unstorable body is ``rejected`` (logged, and raised naming the fields)."""
        cmd_uuid = kw.get("cmd_uuid")
        if errors := context_errors(context):
            raise self._refuse(cmd_class, 0, "long_lived", context, errors, cmd_uuid)
        try:
            command_type = self.registry.get(cmd_class)
        except UnknownCommandError as e:
            e.cmd_uuid = self._reject_raw(cmd_class, 0, "long_lived", context, e, cmd_uuid,  # type: ignore[attr-defined]
                                          [{"field": "cmd_class", "message": str(e)}], raw_body=None)
            raise
        refuse = functools.partial(self._refuse, cmd_class, command_type.cmd_version, command_type.retention, context)
        if not isinstance(body, Mapping):
            raise refuse([{"field": "body", "message": "must be a JSON object"}], cmd_uuid)
        try:
            check_storable(body)
        except UnstorableValueError as e:  # the log could not store it (nor, when too deep, validate it): no body
            raise refuse(e.errors, cmd_uuid) from None
        try:
            command = command_type.model_validate(dict(body))
        except ValidationError as e:
            raise refuse(validation_errors(e), cmd_uuid,
                         raw_body=body if command_type.body_stored() else None) from None
        return self.execute(command, context, **kw)

    def execute(self, command: Command, context: ExecutionContext, *, cmd_uuid: uuid.UUID | None = None,
                in_transaction: Callable[[Connection, Outcome], None] | None = None) -> Outcome:
        """Execute ``command`` live: its writes and its log rows commit together, or it is logged as failed.

        ``in_transaction(conn, outcome)`` runs after a successful handler, before the commit, in the same
        transaction (drafts and replays mark themselves executed there).
        """
        record = self._start(command, context, cmd_uuid)
        with self.db.connection() as conn:
            uow = _UnitOfWork()
            hctx = self._handler_context(conn, uow, record, context, "live")
            self._fire("started", record)
            # An explicit transaction, so that savepoints of sub-commands (and of handlers) nest inside it.
            tx = conn.transaction()
            tx.__enter__()
            try:
                handler = self._handler_for(record.cmd_class)
                record.result = _to_json(handler(command, hctx))
                outcome = self._finish_ok(record, hctx)
                if in_transaction is not None:
                    in_transaction(conn, outcome)
                uow.records.append(record)
                # The log rows and the COMMIT leave in one pipeline sync: tracing costs no extra round trip.
                # Sub-commands that failed (and were handled) are logged with the rest.
                with conn.pipeline():
                    self._write(conn, uow.failures + uow.records)
                    tx.__exit__(None, None, None)
            except BaseException as raised:
                e = original_error(raised)  # PipelineAborted or the statement's error: the same failure
                if transaction_open(conn):
                    tx.__exit__(type(e), e, e.__traceback__)  # rolls back
                if transaction_open(conn):
                    conn.rollback()  # a log write refused at the COMMIT's sync leaves the transaction aborted
                self._finish_failed(record, e)
                failures = [r for r in uow.failures if r is not record] + [record]
                with conn.transaction():
                    self._write(conn, failures)
                for r in failures:
                    self._fire("failed", r)
                e.cmd_uuid = record.cmd_uuid  # type: ignore[attr-defined]
                if e is raised:
                    raise
                raise e from None
        for fn in hctx._after_commit:
            try:
                fn()
            except Exception:
                log.exception("after-commit effect of %s %s failed", record.cmd_class, record.cmd_uuid)
        for r in uow.failures:
            self._fire("failed", r)
        for r in uow.records:
            self._fire("succeeded", r)
        return outcome

    def import_history(self, entries: Iterable[HistoricalCommand], *, batch_size: int = 20_000) -> int:
        """The batch path: record commands that already ran (demo seeding, importing an older audit log).

        Each body goes through the same checks and redaction as a live execution; rows are loaded with COPY in
        batches of ``batch_size`` commands, each batch in one transaction. Handlers do not run. Returns the count.
        """
        count = 0
        batch: list[CommandRecord] = []
        for entry in entries:
            batch.append(self.history_record(entry))
            if len(batch) >= batch_size:
                count += self._copy(batch)
                batch = []
        if batch:
            count += self._copy(batch)
        return count

    def history_record(self, entry: HistoricalCommand) -> CommandRecord:
        """The record of a command that already ran: checked and redacted like a live one."""
        record = self._start(entry.command, entry.context, entry.cmd_uuid, log_rejection=False,
                             started_at=entry.started_at)
        record.status = entry.status
        record.finished_at = entry.finished_at or entry.started_at
        record.result = entry.result
        if entry.status != "succeeded":
            record.error_type = storable_text(entry.error_type or "Error", limit=_MAX_NAME)
            record.error_message = storable_text(entry.error_message, limit=_MAX_ERROR) if entry.error_message else None
            record.public_error_message = scrub(entry.error_message, record.secrets)
            record.result = None
        else:
            record.events = [EventRecord(event_uuid=uuid7(record.finished_at), cmd_uuid=record.cmd_uuid,
                                         event_type=t, payload=p, occurred_at=record.finished_at)
                             for t, p in entry.events]
        return record

    @staticmethod
    def copy_rows_of(records: list[CommandRecord]) -> dict[str, list[tuple]]:
        """The COPY rows of ``records`` for each log table."""
        return {
            "global_rows": [logs.global_row(r) for r in records],
            "tenant_rows": [logs.tenant_row(r, _json_or_none(r.result)) for r in records],
            "event_rows_": [row for r in records for row in logs.event_rows(r, _dumps)],
        }

    def _copy(self, records: list[CommandRecord]) -> int:
        with self.db.connection() as conn:
            logs.copy_rows(conn, **self.copy_rows_of(records))
        return len(records)

    def project(self, command: Command, context: ExecutionContext, *,
                observe: Callable[[Connection], Any] | None = None) -> Outcome:
        """Execute in a transaction that is always rolled back: the would-be outcome, nothing committed."""
        return self._rolled_back(command, context, "projection", observe)

    def dry_run(self, command: Command, context: ExecutionContext, *,
                observe: Callable[[Connection], Any] | None = None) -> Outcome:
        """Like ``project``, for replays: outcome captured, nothing committed, no after-commit effect."""
        return self._rolled_back(command, context, "dry_run", observe)

    # -- internals ----------------------------------------------------------------------------------------------

    def _rolled_back(self, command: Command, context: ExecutionContext, mode: Mode,
                     observe: Callable[[Connection], Any] | None) -> Outcome:
        record = self._start(command, context, None, log_rejection=False)
        with self.db.connection() as conn, conn.transaction(force_rollback=True):
            uow = _UnitOfWork()
            hctx = self._handler_context(conn, uow, record, context, mode)
            before = observe(conn) if observe else None
            try:
                with conn.transaction():  # a savepoint: observe() can still read after a failure
                    record.result = _to_json(self._handler_for(record.cmd_class)(command, hctx))
                outcome = self._finish_ok(record, hctx)
            except Exception as e:
                self._finish_failed(record, e)
                outcome = _outcome(record, [])
            outcome.before = before
            outcome.after = observe(conn) if observe else None
        return outcome

    def _execute_nested(self, uow: _UnitOfWork, command: Command, parent: HandlerContext) -> Any:
        ctx = parent.execution.with_(causation_id=parent.cmd_uuid, replay_of=None, draft_uuid=None)
        record = self._start(command, ctx, None, log_rejection=parent.mode == "live")
        hctx = self._handler_context(parent.conn, uow, record, ctx, parent.mode)
        try:
            with parent.conn.transaction():  # savepoint: a failing sub-command undoes only its own writes
                record.result = _to_json(self._handler_for(record.cmd_class)(command, hctx))
        except BaseException as e:
            self._finish_failed(record, e)
            uow.failures.append(record)
            raise
        self._finish_ok(record, hctx)
        uow.records.append(record)
        parent.events.extend(hctx.events)
        parent._after_commit.extend(hctx._after_commit)
        return record.result

    def _start(self, command: Command, context: ExecutionContext, cmd_uuid: uuid.UUID | None,
               *, log_rejection: bool = True, started_at: datetime | None = None) -> CommandRecord:
        """Check the body (class, serialisation, size) and build the record; refused live commands are logged."""
        command_type = type(command)
        cmd_uuid = cmd_uuid or uuid7(started_at)
        if not isinstance(command, Command) or not command_type.cmd_class:
            raise UnknownCommandError(getattr(command_type, "cmd_class", "") or command_type.__name__)
        errors: list[dict] = context_errors(context)
        dumped: dict | None = None
        sensitive = has_sensitive(command_type)
        secrets: list[str] = []
        if not errors:
            try:
                body_json = _encode_body(command)  # serialised in Rust: the hot path's cheapest way to JSON
                dumped = json.loads(body_json) if sensitive else None
            except (PydanticSerializationError, TypeError, ValueError) as e:
                errors = [_serialisation_error(command, e)]
            else:
                secrets = sensitive_values(command, dumped) if dumped is not None else []
                errors = self._body_errors(command, body_json)
        subjects: list[str] = []
        if not errors:
            try:
                subjects = [str(s) for s in command.subjects()]
                if any(text_problem(s) for s in subjects):  # a flat list of text: only its text can be unstorable
                    check_storable(subjects, field="subjects")
            except UnstorableValueError as e:
                errors = e.errors
            except Exception as e:  # user code: its message may quote a sensitive value, scrubbed below
                errors = [{"field": "subjects", "message": f"{type(e).__name__}: {e}"}]
        if errors:
            if not log_rejection:
                raise CommandRejectedError(storable_text(command_type.cmd_class, limit=_MAX_NAME), errors,
                                           cmd_uuid=cmd_uuid)
            raise self._refuse(command_type.cmd_class, command_type.cmd_version, command_type.retention, context,
                               errors, cmd_uuid, secrets=secrets)
        excluded = command_type.body_excluded()
        return CommandRecord(
            cmd_uuid=cmd_uuid, cmd_class=command_type.cmd_class, cmd_version=command_type.cmd_version,
            tenant_id=context.tenant_id, actor_id=context.actor_id,
            correlation_id=context.correlation_id or uuid7(started_at), causation_id=context.causation_id,
            replay_of=context.replay_of, draft_uuid=context.draft_uuid, retention=command_type.retention,
            subjects=subjects, started_at=started_at or _now(),
            body_json=body_json if command_type.body_stored() else None,
            public_body_json=(None if excluded else
                              _dumps(redact(command, dumped)) if dumped is not None else body_json),
            body_excluded=excluded, secrets=secrets,
        )

    def _body_errors(self, command: Command, body_json: str) -> list[dict]:
        """The size limit, then the one storable rule (``command_json.check_storable``) when the cheap screen asks."""
        size = len(body_json.encode())
        if size > self.max_body_bytes:
            return [{"field": None, "message": f"body is {size} bytes, over the limit of {self.max_body_bytes}"}]
        if may_be_unstorable(body_json):  # pydantic writes NaN as null: the values themselves are checked
            try:
                check_storable(command.model_dump(), field="body")
            except UnstorableValueError as e:
                return e.errors
        return []

    def _handler_for(self, cmd_class: str) -> Handler:
        try:
            return self._handlers[cmd_class]
        except KeyError:
            raise NoHandlerError(f"no handler registered for {cmd_class}") from None

    def _handler_context(self, conn: Connection, uow: _UnitOfWork, record: CommandRecord,
                         context: ExecutionContext, mode: Mode) -> HandlerContext:
        execution = context if context.correlation_id else context.with_(correlation_id=record.correlation_id)
        # The context runs sub-commands through this bound method (it knows the unit of work, the context does not).
        return HandlerContext(conn=conn, execution=execution, cmd_uuid=record.cmd_uuid, mode=mode,
                              _execute_nested=functools.partial(self._execute_nested, uow))

    def _finish_ok(self, record: CommandRecord, hctx: HandlerContext) -> Outcome:
        record.status = "succeeded"
        record.finished_at = _now()
        record.events = [e for e in hctx.events if e.cmd_uuid == record.cmd_uuid]
        return _outcome(record, hctx.events)

    def _finish_failed(self, record: CommandRecord, e: BaseException) -> None:
        record.status = "failed"
        record.finished_at = _now()
        record.error_type = type(e).__name__
        record.error_message = storable_text(e, limit=_MAX_ERROR)  # any text, even with NUL, leaves its row
        record.public_error_message = scrub(record.error_message, record.secrets)
        record.result = None
        record.events = []

    def _refuse(self, cmd_class: str, version: int, retention: str, context: ExecutionContext, errors: list[dict],
                cmd_uuid: uuid.UUID | None, *, raw_body: Mapping[str, Any] | None = None,
                secrets: Sequence[str] = ()) -> CommandRejectedError:
        """Log a ``rejected`` attempt naming ``errors`` and return the error to raise (with its ``cmd_uuid``)."""
        exc = CommandRejectedError(storable_text(cmd_class, limit=_MAX_NAME), errors, cmd_uuid=cmd_uuid)
        exc.cmd_uuid = self._reject_raw(cmd_class, version, retention, context, exc, cmd_uuid, errors,
                                        raw_body=raw_body, secrets=secrets)
        return exc

    def _reject_raw(self, cmd_class: str, version: int, retention: str, context: ExecutionContext,
                    exc: Exception, cmd_uuid: uuid.UUID | None, errors: list[dict], *,
                    raw_body: Mapping[str, Any] | None,
                    secrets: Sequence[str] = ()) -> uuid.UUID:
        """Write a ``rejected`` attempt: no body in the global log; the raw body in the tenant log when it fits.

        Whatever the caller sent, the row is written: identifiers and messages go through ``storable_text`` (NUL
        and lone surrogates escaped, length capped), links that are not UUIDs are left out, and the global log's
        message is scrubbed of the body's sensitive values.
        """
        body_json = None
        if raw_body is not None:
            try:
                check_storable(raw_body)
                body_json = _dumps(to_jsonable_python(raw_body))
                if len(body_json.encode()) > self.max_body_bytes:
                    body_json = None
            except (PydanticSerializationError, TypeError, ValueError):
                body_json = None
        message = storable_text(errors_text(errors), limit=_MAX_ERROR)

        def link(name: str) -> uuid.UUID | None:
            value = getattr(context, name, None)
            return value if isinstance(value, uuid.UUID) else None

        now = _now()
        record = CommandRecord(
            cmd_uuid=cmd_uuid or uuid7(), cmd_class=storable_text(cmd_class, limit=_MAX_NAME), cmd_version=version,
            tenant_id=storable_text(getattr(context, "tenant_id", None), limit=_MAX_NAME).strip() or NO_TENANT,
            actor_id=storable_text(getattr(context, "actor_id", None), limit=_MAX_NAME),
            correlation_id=link("correlation_id") or uuid7(), causation_id=link("causation_id"),
            replay_of=link("replay_of"), draft_uuid=link("draft_uuid"),
            retention=retention, subjects=[], started_at=now, finished_at=now, status="rejected",
            error_type=type(exc).__name__, error_message=message, public_error_message=scrub(message, list(secrets)),
            body_json=body_json, public_body_json=None, body_excluded=True,
        )
        with self.db.connection() as conn:
            self._write(conn, [record])
        self._fire("failed", record)
        return record.cmd_uuid

    def _write(self, conn: Connection, records: list[CommandRecord]) -> None:
        logs.write_records(conn, records, result_json=_json_or_none, payload_json=_dumps)

    def _fire(self, event: str, record: CommandRecord) -> None:
        for hook in self._hooks[event]:
            try:
                hook(record)
            except Exception:
                log.exception("%s hook %r failed for %s %s", event, hook, record.cmd_class, record.cmd_uuid)


def _outcome(record: CommandRecord, events: Iterable[EventRecord]) -> Outcome:
    assert record.status is not None, "an outcome is built only for a finished record"
    return Outcome(cmd_uuid=record.cmd_uuid, status=record.status, result=record.result, events=list(events),
                   error_type=record.error_type, error_message=record.error_message, record=record)

