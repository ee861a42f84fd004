"""Running one batch of a replay plan: dry run (compare, write nothing) or execute (at most once per request).

Execute, per batch: one transaction reads the originals and items, closes what a previous run already finished or
refused, and assigns replay ids to the rest (``pending``); then each command runs through ``bus.execute`` with
``in_transaction`` closing its item in the command's own transaction. A failed replay is logged by the bus (with its
pre-assigned id) and its item closed right after; if the process dies in between, the next run finds that id in the
log and closes the item without running the command again.

The steps for one original (``prepare``, ``replay_context``, ``dry_run_verdict``) live here too: the batches are
their only callers, and the service imports this module, never the reverse.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Sequence

from pydantic import ValidationError

from commandlog.bus import CommandBus
from commandlog.commands import Command
from commandlog.context import ExecutionContext
from commandlog.errors import CommandLogError
from commandlog.ids import uuid7
from commandlog.records import Outcome
from commandlog.redaction import scrub_for
from commandlog.replay.diff import compare, summarize
from commandlog.replay.models import ReplayError, ReplayItemResult, ReplayPlan
from commandlog.validation import errors_text, validation_errors
from storage import replays as repo
from storage.postgres import Connection, Database


class ReplayConflictError(ReplayError):
    """Another run of the same request closed this item first; this replay is rolled back."""


def dry_run_batch(db: Database, bus: CommandBus, the_plan: ReplayPlan,
                  cmd_uuids: Sequence[uuid.UUID]) -> list[ReplayItemResult]:
    """Dry-run each original against today's code and data and compare with what it did then."""
    with db.connection() as conn:
        originals = repo.load_originals(conn, cmd_uuids)
        events = repo.original_events(conn, list(originals))
    results = []
    for cmd_uuid in cmd_uuids:
        original = originals.get(cmd_uuid)
        if original is None:
            results.append(_not_found(cmd_uuid))
            continue
        command = prepare(bus, original)
        if isinstance(command, str):
            results.append(_refused(original, command))
            continue
        outcome = bus.dry_run(command, replay_context(the_plan, original))
        results.append(dry_run_verdict(original, events.get(cmd_uuid, []), outcome))
    return results


def execute_batch(db: Database, bus: CommandBus, the_plan: ReplayPlan,
                  cmd_uuids: Sequence[uuid.UUID]) -> list[ReplayItemResult]:
    """Execute each original of the batch that this request has not executed yet.

    Runs of the same request are serialised by an advisory lock held for the batch: a second run waits, then
    finds the items done. (The deployment allows one run at a time anyway; this also covers the CLI.)
    """
    with db.connection() as lock_conn:
        repo.lock_request(lock_conn, the_plan.request_id)
        return _execute_batch(db, bus, the_plan, cmd_uuids)


def _execute_batch(db: Database, bus: CommandBus, the_plan: ReplayPlan,
                   cmd_uuids: Sequence[uuid.UUID]) -> list[ReplayItemResult]:
    rid = the_plan.request_id
    results: dict[uuid.UUID, ReplayItemResult] = {}
    runnable: list[tuple[repo.OriginalRow, Command, uuid.UUID]] = []
    with db.connection() as conn:
        originals = repo.load_originals(conn, cmd_uuids)
        items = repo.load_items(conn, rid, cmd_uuids)
        logged = repo.logged_status(conn, [i.replay_cmd_uuid for i in items.values()
                                                  if i.state == "pending" and i.replay_cmd_uuid is not None])
        closes: list[tuple[uuid.UUID, str, str | None]] = []
        assign: list[tuple[uuid.UUID, uuid.UUID]] = []
        for cmd_uuid in cmd_uuids:
            item, original = items.get(cmd_uuid), originals.get(cmd_uuid)
            if item is None or original is None:
                results[cmd_uuid] = _not_found(cmd_uuid)
            elif item.state == "done":
                results[cmd_uuid] = _already(original, item.replay_cmd_uuid, item.outcome, item.message)
            elif item.state == "pending" and item.replay_cmd_uuid in logged:
                status, message = logged[item.replay_cmd_uuid]  # attempted before a crash: close, never rerun
                closes.append((cmd_uuid, status, message))
                results[cmd_uuid] = _already(original, item.replay_cmd_uuid, status, message)
            else:
                command = prepare(bus, original)
                if isinstance(command, str):
                    closes.append((cmd_uuid, "not_replayable", command))
                    results[cmd_uuid] = _refused(original, command)
                    continue
                replay_uuid = item.replay_cmd_uuid or uuid7()
                if item.state == "planned":
                    assign.append((cmd_uuid, replay_uuid))
                runnable.append((original, command, replay_uuid))
        repo.mark_done_many(conn, rid, closes)
        repo.assign_replay_uuids(conn, rid, assign)
    failures: list[tuple[uuid.UUID, str, str | None]] = []
    for original, command, replay_uuid in runnable:
        results[original.cmd_uuid] = _execute_one(bus, the_plan, original, command, replay_uuid, failures)
    if failures:
        with db.connection() as conn:
            repo.mark_done_many(conn, rid, failures)
    return [results[u] for u in cmd_uuids]


def _execute_one(bus: CommandBus, the_plan: ReplayPlan, original: repo.OriginalRow, command: Command,
                 replay_uuid: uuid.UUID, failures: list[tuple[uuid.UUID, str, str | None]]) -> ReplayItemResult:
    rid = the_plan.request_id

    def close_item(conn: Connection, outcome: Outcome) -> None:
        """In the replayed command's transaction: mark its item done, or roll it back if a rival run did."""
        if not repo.mark_done(conn, rid, original.cmd_uuid, outcome="succeeded"):
            raise ReplayConflictError(f"original {original.cmd_uuid} was already replayed by request {rid}")

    base = functools.partial(ReplayItemResult, original_cmd_uuid=original.cmd_uuid, cmd_class=original.cmd_class,
                             tenant_id=original.tenant_id, original_status=original.status, replay_cmd_uuid=replay_uuid)
    try:
        bus.execute(command, replay_context(the_plan, original), cmd_uuid=replay_uuid, in_transaction=close_item)
    except Exception as e:  # noqa: BLE001 — any handler error fails this replay only; the bus logged it
        message = scrub_for(command, f"{type(e).__name__}: {e}")  # reports and artifacts reach operators
        failures.append((original.cmd_uuid, "failed", message))
        return base(outcome="failed", message=message)
    return base(outcome="succeeded")


def _not_found(cmd_uuid: uuid.UUID) -> ReplayItemResult:
    return ReplayItemResult(original_cmd_uuid=cmd_uuid, outcome="not_found",
                            message="not found in tenant_command_log (unknown id, or purged by retention)")


def _refused(original: repo.OriginalRow, reason: str) -> ReplayItemResult:
    return ReplayItemResult(original_cmd_uuid=original.cmd_uuid, outcome="not_replayable", cmd_class=original.cmd_class,
                            tenant_id=original.tenant_id, original_status=original.status, message=reason)


def _already(original: repo.OriginalRow, replay_uuid: uuid.UUID | None, outcome: str | None,
             message: str | None) -> ReplayItemResult:
    if outcome == "not_replayable" or replay_uuid is None:
        return _refused(original, message or "not replayable")
    text = f"already replayed as {replay_uuid} ({outcome})" + (f": {message}" if message else "")
    return ReplayItemResult(original_cmd_uuid=original.cmd_uuid, outcome="already_replayed",
                            cmd_class=original.cmd_class, tenant_id=original.tenant_id,
                            original_status=original.status, replay_cmd_uuid=replay_uuid, message=text)


def prepare(bus: CommandBus, original: repo.OriginalRow) -> Command | str:
    """The original as a current-version command, or the reason it cannot be replayed."""
    if original.body is None:
        return "not replayable: body unavailable"
    try:
        command_type = bus.registry.get(original.cmd_class)
    except CommandLogError as e:
        return f"not replayable: {e}"
    if not command_type.replayable:
        return f"not replayable: {original.cmd_class} opts out of replay (replayable = False)"
    if original.cmd_version > command_type.cmd_version:
        return (f"not replayable: body version {original.cmd_version} is newer than {original.cmd_class} "
                f"version {command_type.cmd_version}")
    try:
        body = bus.registry.upcast(original.cmd_class, original.cmd_version, original.body)
    except Exception as e:  # noqa: BLE001 — an upcaster is user code: any failure refuses this one command only
        return f"not replayable: upcasting from version {original.cmd_version} failed: {e}"
    try:
        return command_type.model_validate(body)
    except ValidationError as e:
        return f"not replayable: {errors_text(validation_errors(e))}"


def replay_context(the_plan: ReplayPlan, original: repo.OriginalRow) -> ExecutionContext:
    """The replay runs for the original's tenant, by the requester, in the original's correlation."""
    return ExecutionContext(tenant_id=original.tenant_id, actor_id=the_plan.requested_by,
                            correlation_id=original.correlation_id, replay_of=original.cmd_uuid)


def dry_run_verdict(original: repo.OriginalRow, events: list[dict], outcome: Outcome) -> ReplayItemResult:
    """Compare a dry run with the original and name the result."""
    verdict, diffs = compare(original_status=original.status, original_result=original.result,
                             original_events=events, original_error=(original.error_type, original.error_message),
                             outcome=outcome)
    message = summarize(diffs) if diffs else None
    if verdict == "now_fails" or (verdict == "reproduced" and outcome.status != "succeeded"):
        message = f"{outcome.error_type}: {outcome.public_error_message}"  # scrubbed: reports reach operators
    return ReplayItemResult(original_cmd_uuid=original.cmd_uuid, outcome=verdict, cmd_class=original.cmd_class,
                            tenant_id=original.tenant_id, original_status=original.status, message=message,
                            diff=tuple(diffs))
