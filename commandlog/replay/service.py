"""Command replay: run logged commands again, as a dry run compared with the original, or for real to recover.

    request = ReplayRequest(status="failed", since=..., mode="execute", requested_by="ops@acme")
    report = run_replay(db, bus, request)

The payload always comes from ``tenant_command_log`` (the full body), upcast to the class's current version and
validated again. *Dry run*: ``bus.dry_run`` (always rolled back, no after-commit effect), compared with the
recorded outcome (``commandlog.replay.diff``); nothing is written anywhere. *Execute*: a new command with
``replay_of`` = the original, actor = the requester, the original's correlation; its item is closed in the SAME
transaction (``in_transaction``), so each original runs at most once per request, whatever crashes or retries:

    plan ─► items ``planned`` ─► per batch: replay ids assigned (``pending``, committed) ─► execute, item ``done``

A rerun closes a ``pending`` item whose replay id is already logged (a failed attempt) instead of running it again,
and reports every ``done`` item as "already replayed as <uuid>".
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Sequence

from commandlog.bus import CommandBus
from commandlog.ids import uuid7
from commandlog.replay.models import (
    ItemOutcome,
    ReplayError,
    ReplayItemResult,
    ReplayPlan,
    ReplayReport,
    ReplayRequest,
    ReplayRequestConflictError,
    ReplaySelectionTooLargeError,
    summary_line,
)
from commandlog.replay.run import dry_run_batch, dry_run_verdict, execute_batch, prepare, replay_context
from storage import replays as repo
from storage.postgres import Connection, Database

# The service is what callers import (the CLI, the tasks, the flow): it also hands out the models it takes and returns.
__all__ = [
    "ItemOutcome",
    "ReplayError",
    "ReplayItemResult",
    "ReplayPlan",
    "ReplayReport",
    "ReplayRequest",
    "ReplayRequestConflictError",
    "ReplaySelectionTooLargeError",
    "batches",
    "dry_run_verdict",
    "finish",
    "plan",
    "prepare",
    "replay_batch",
    "replay_context",
    "run_replay",
    "summary_line",
]


# -- planning --------------------------------------------------------------------------------------------------------

def plan(db: Database, request: ReplayRequest, *, default_request_id: uuid.UUID | None = None) -> ReplayPlan:
    """Resolve the selection (refusing one over the cap); in execute mode record the request and its items.

    An execute request that already exists keeps the originals it selected the first time (a rerun resumes it).
    """
    request_id = request.request_id or default_request_id or uuid7()
    with db.connection() as conn:
        if request.mode == "execute":
            existing = repo.request_mode(conn, request_id)
            if existing is not None:
                if existing != request.mode:
                    raise ReplayRequestConflictError(f"replay request {request_id} exists in mode {existing}")
                return ReplayPlan(request_id=request_id, mode="execute", requested_by=request.requested_by,
                                  cmd_uuids=tuple(_planned_then_unknown(conn, request_id, request)), resumed=True)
        if request.cmd_uuids:
            wanted = list(dict.fromkeys(request.cmd_uuids))
            if len(wanted) > request.max_commands:
                raise ReplaySelectionTooLargeError(len(wanted), request.max_commands)
        else:
            wanted = repo.select_uuids(conn, **request.filters(), limit=request.max_commands + 1)
            if len(wanted) > request.max_commands:
                raise ReplaySelectionTooLargeError(repo.count_selection(conn, **request.filters()),
                                                   request.max_commands)
        originals = repo.load_originals(conn, wanted, with_body=False)
        found = sorted(originals.values(), key=lambda o: (o.started_at, o.cmd_uuid))
        ordered = [o.cmd_uuid for o in found] + [u for u in wanted if u not in originals]
        if request.mode == "execute":
            selection = request.model_dump(mode="json", exclude={"request_id", "mode", "requested_by"})
            repo.create_request(conn, request_id, mode="execute", requested_by=request.requested_by,
                                selection=selection)
            repo.plan_items(conn, request_id, found)
    return ReplayPlan(request_id=request_id, mode=request.mode, requested_by=request.requested_by,
                      cmd_uuids=tuple(ordered))


def _planned_then_unknown(conn: Connection, request_id: uuid.UUID, request: ReplayRequest) -> list[uuid.UUID]:
    planned = repo.planned_uuids(conn, request_id)
    known = set(planned)
    return planned + [u for u in request.cmd_uuids if u not in known]


def batches(cmd_uuids: Sequence[uuid.UUID], size: int) -> Iterator[list[uuid.UUID]]:
    """``cmd_uuids`` in consecutive batches of ``size``."""
    for start in range(0, len(cmd_uuids), size):
        yield list(cmd_uuids[start:start + size])


# -- running ---------------------------------------------------------------------------------------------------------

def run_replay(db: Database, bus: CommandBus, request: ReplayRequest, *,
               after_batch: Callable[[int, list[ReplayItemResult]], None] | None = None) -> ReplayReport:
    """Plan and run a whole request, batch by batch (the CLI's path; the flow runs the same steps as tasks)."""
    the_plan = plan(db, request)
    report = ReplayReport(plan=the_plan)
    for number, batch in enumerate(batches(the_plan.cmd_uuids, request.batch_size)):
        results = replay_batch(db, bus, the_plan, batch)
        report.items.extend(results)
        if after_batch is not None:
            after_batch(number, results)
    finish(db, the_plan)
    return report


def finish(db: Database, the_plan: ReplayPlan) -> None:
    """Stamp an execute request finished (dry runs write nothing)."""
    if the_plan.mode == "execute":
        with db.connection() as conn:
            repo.finish_request(conn, the_plan.request_id)


def replay_batch(db: Database, bus: CommandBus, the_plan: ReplayPlan,
                 cmd_uuids: Sequence[uuid.UUID]) -> list[ReplayItemResult]:
    """Replay one batch of originals of a plan; safe to call again with the same batch."""
    if the_plan.mode == "dry_run":
        return dry_run_batch(db, bus, the_plan, cmd_uuids)
    return execute_batch(db, bus, the_plan, cmd_uuids)
