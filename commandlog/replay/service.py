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
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from commandlog.bus import CommandBus
from commandlog.commands import Command
from commandlog.context import ExecutionContext
from commandlog.errors import CommandLogError
from commandlog.ids import uuid7
from commandlog.records import Outcome
from commandlog.replay.diff import compare, summarize
from commandlog.validation import errors_text, validation_errors
from storage import replays as repo
from storage.postgres import Connection, Database

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
    # replay_run builds on this module's types, hence the import here rather than at the top
    if the_plan.mode == "dry_run":
        from commandlog.replay.run import dry_run_batch

        return dry_run_batch(db, bus, the_plan, cmd_uuids)
    from commandlog.replay.run import execute_batch

    return execute_batch(db, bus, the_plan, cmd_uuids)


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
