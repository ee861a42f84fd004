"""Retention: the policy (maximum age per class, per-tenant overrides), legal holds, and the retention commands.

Defaults: ``short_lived`` 30 days, ``long_lived`` 730 days, ``permanent`` never — permanent rows survive every
policy (the model has no field for them). Settings: ``CMDLOG_RETENTION_SHORT_LIVED_DAYS``,
``CMDLOG_RETENTION_LONG_LIVED_DAYS`` (a number of days or ``never``), ``CMDLOG_RETENTION_TENANT_OVERRIDES``
(JSON, e.g. ``{"acme": {"short_lived_days": 90}}``). Adding or removing a legal hold, and every purge, is itself a
``permanent`` command executed through the bus, so the log says who held what and what was removed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from commandlog.bus import CommandBus
from commandlog.commands import Command
from commandlog.context import ExecutionContext, HandlerContext
from commandlog.errors import CommandLogError, ConfigurationError
from commandlog.settings import Settings
from commandlog.validation import errors_text, validation_errors
from storage import retention as store
from storage.postgres import Database
from storage.retention import ClassCutoffs, Hold, HoldExistsError

# The defaults of a cleanup run, the only ones (commandlog.retention.cleanup; the CLI and the flow take theirs here).
DRY_RUN = True
"""Destructive only when asked: a run counts what would go unless ``dry_run=False``."""
EXPORT_FIRST = True
"""Export what the lake has not received before purging, so the archive guard lets expired rows go."""
PURGE_TAKERS = 1
"""Unit takers of one purge process by default. Two takers made the purge phase of a 300k-command purge 1.26× as
fast (24.4 s → 19.4 s) but the writers' p99 during it 2.7× their p99 before (one taker: 0.86×; one run each, load
3.5 to 6; docs/retention.md): detaches and counts of several leaves at once crowd the writers, and the phase is short
next to the paced reclaim anyway. More takers (``--takers``, the flow's ``takers``) or helpers on a pool trade the
writers' tail for a shorter purge phase."""

SYSTEM_TENANT = "_system"
"""Tenant id of the purge's own log entry (it spans every tenant)."""
SYSTEM_ACTOR = "system:retention"
"""Actor of scheduled and CLI purges."""
Days = int | Literal["never"]


class RetentionError(CommandLogError):
    """A retention operation cannot be done (bad policy, busy purge, missing hold)."""


def _positive_days(value: Days) -> Days:
    if isinstance(value, int) and value < 1:
        raise ValueError(f"must be at least 1 day or 'never', not {value}")
    return value


class TenantOverride(BaseModel):
    """One tenant's maximum ages; an absent class inherits the policy's default."""

    model_config = ConfigDict(extra="forbid")
    short_lived_days: Days | None = Field(None, description="Days, 'never', or empty to inherit.")
    long_lived_days: Days | None = Field(None, description="Days, 'never', or empty to inherit.")
    _positive = field_validator("short_lived_days", "long_lived_days")(_positive_days)


RETIRED_FIELDS = frozenset({"drop_rest", "drop_step_mb"})
"""Policy fields of earlier versions, ignored where they still come in (stored runs, deployments' parameters)."""


class RetentionPolicy(BaseModel):
    """Maximum age per retention class (``permanent`` is never purged) and per-tenant overrides."""

    model_config = ConfigDict(extra="forbid")
    short_lived_days: Days = Field(30, description="Maximum age of short_lived entries, in days, or 'never'.")
    long_lived_days: Days = Field(730, description="Maximum age of long_lived entries, in days, or 'never'.")
    tenant_overrides: dict[str, TenantOverride] = Field(default_factory=dict,
                                                        description="Per-tenant maximum ages.")
    batch_size: int = Field(5000, ge=100, le=100_000, description="Rows per batch delete (holds, overrides).")
    lock_timeout_ms: int = Field(2000, ge=10, le=60_000, description="lock_timeout of each step; retried.")
    purge_rest: float = Field(5.0, ge=0, le=100, description=(
        "After each leaf is detached and parked, rest this many times as long as that leaf took (0: no pause): "
        "each detach makes every writer rebuild the parent's partition descriptor, and each step's commit is "
        "flushed, so back to back they crowd the writers' own flushes."))
    reclaim_mb_per_s: float = Field(4.0, ge=0, le=100_000, description=(
        "After the purge, the purged leaves' files are removed one at a time at no more than this many MB per "
        "second on average (0: unpaced). Freeing a file on a file system that discards synchronously (ext4 "
        "mounted with 'discard') holds up every WAL flush meanwhile; at 4 MB/s that is under 1% of the time."))

    _positive = field_validator("short_lived_days", "long_lived_days")(_positive_days)

    @model_validator(mode="before")
    @classmethod
    def _without_retired(cls, data: Any) -> Any:
        """Fields of earlier versions (``RETIRED_FIELDS``) are ignored, not refused: a deployment registered, a run
        scheduled or a purge stored before the upgrade still carries them."""
        if isinstance(data, Mapping):
            return {k: v for k, v in data.items() if k not in RETIRED_FIELDS}
        return data

    @classmethod
    def from_settings(cls, settings: Settings) -> RetentionPolicy:
        """The policy configured by ``CMDLOG_RETENTION_*`` variables (defaults where unset)."""
        env = settings.extra
        raw: dict = {}
        for cls_name in ("short_lived", "long_lived"):
            value = env.get(f"CMDLOG_RETENTION_{cls_name.upper()}_DAYS")
            if value:
                raw[f"{cls_name}_days"] = value if value.strip() == "never" else _int(value, cls_name)
        if env.get("CMDLOG_RETENTION_TENANT_OVERRIDES"):
            try:
                raw["tenant_overrides"] = json.loads(env["CMDLOG_RETENTION_TENANT_OVERRIDES"])
            except json.JSONDecodeError as e:
                raise ConfigurationError(f"CMDLOG_RETENTION_TENANT_OVERRIDES: not JSON ({e})") from None
        for name in ("purge_rest", "reclaim_mb_per_s"):
            value = env.get(f"CMDLOG_RETENTION_{name.upper()}")
            if value:
                try:
                    raw[name] = float(value)
                except ValueError:
                    raise ConfigurationError(f"CMDLOG_RETENTION_{name.upper()}: a number, not {value!r}") from None
        try:
            return cls.model_validate(raw)
        except ValidationError as e:
            first = errors_text(validation_errors(e)[:1], whole="policy")
            raise ConfigurationError(f"retention settings: {first}") from None

    def max_days(self, retention: str, tenant: str | None = None) -> Days:
        """The maximum age of ``retention`` entries of ``tenant``."""
        if retention == "permanent":
            return "never"
        override = self.tenant_overrides.get(tenant) if tenant else None
        value = getattr(override, f"{retention}_days", None) if override else None
        return value if value is not None else getattr(self, f"{retention}_days")

    def cutoffs(self, retention: str, as_of: datetime) -> ClassCutoffs:
        """The class's cutoffs at ``as_of``: rows strictly older are expired."""
        def cut(days: Days) -> datetime | None:
            return None if days == "never" else as_of - timedelta(days=days)

        return ClassCutoffs(default=cut(self.max_days(retention)),
                            overrides={t: cut(self.max_days(retention, t)) for t in sorted(self.tenant_overrides)
                                       if getattr(self.tenant_overrides[t], f"{retention}_days") is not None})


def _int(value: str, name: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ConfigurationError(f"CMDLOG_RETENTION_{name.upper()}_DAYS: a number of days or 'never', "
                                 f"not {value!r}") from None


# -- commands ---------------------------------------------------------------------------------------------------

class PurgeCount(BaseModel):
    """Rows removed from one table (or lake dataset) for one retention class and tenant."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    table: str
    retention: str
    tenant_id: str
    rows: int


class Purge(Command):
    """Record of one retention purge (executed by the purge itself, as a system actor)."""

    cmd_class = "retention.Purge"
    retention = "permanent"
    replayable = False
    run_id: int
    as_of: datetime
    policy: dict
    counts: list[PurgeCount]
    partitions_dropped: int = 0
    bytes_freed: int = 0


class AddLegalHold(Command):
    """Put the context's tenant (or one of its subjects) under a legal hold: nothing of it is purged."""

    cmd_class = "retention.AddLegalHold"
    retention = "permanent"
    replayable = False
    subject: str | None = Field(None, min_length=1)
    reason: str = Field(min_length=1)

    def subjects(self) -> list[str]:
        return [self.subject] if self.subject else []


class RemoveLegalHold(Command):
    """Release the context's tenant's (or subject's) active legal hold."""

    cmd_class = "retention.RemoveLegalHold"
    retention = "permanent"
    replayable = False
    subject: str | None = Field(None, min_length=1)
    reason: str | None = None

    def subjects(self) -> list[str]:
        return [self.subject] if self.subject else []


class NoSuchHoldError(RetentionError):
    """There is no active hold for that tenant and subject."""


def handle_purge(cmd: Purge, ctx: HandlerContext) -> dict:
    """Close the run in the same transaction as its log entry; the summary becomes the result."""
    if not store.finish_run(ctx.conn, cmd.run_id, purge_cmd=ctx.cmd_uuid):
        raise RetentionError(f"retention run {cmd.run_id} is not open")
    by_table: dict[str, int] = {}
    for c in cmd.counts:
        by_table[c.table] = by_table.get(c.table, 0) + c.rows
    return {"run_id": cmd.run_id, "rows": sum(c.rows for c in cmd.counts if not c.table.startswith("lake:")),
            "by_table": by_table, "partitions_dropped": cmd.partitions_dropped, "bytes_freed": cmd.bytes_freed}


def handle_add_hold(cmd: AddLegalHold, ctx: HandlerContext) -> dict:
    """Insert the hold (waits for a purge step touching a partition to finish)."""
    hold_id = store.add_hold(ctx.conn, tenant_id=ctx.tenant_id, subject=cmd.subject, reason=cmd.reason,
                             actor=ctx.actor_id, cmd_uuid=ctx.cmd_uuid)
    return {"hold_id": hold_id}


def handle_remove_hold(cmd: RemoveLegalHold, ctx: HandlerContext) -> dict:
    """Release the active hold; ``NoSuchHoldError`` when there is none."""
    hold_id = store.release_hold(ctx.conn, tenant_id=ctx.tenant_id, subject=cmd.subject, actor=ctx.actor_id,
                                 cmd_uuid=ctx.cmd_uuid)
    if hold_id is None:
        what = f"subject {cmd.subject!r} of tenant {ctx.tenant_id!r}" if cmd.subject else f"tenant {ctx.tenant_id!r}"
        raise NoSuchHoldError(f"no active legal hold on {what}")
    return {"hold_id": hold_id}


def setup(bus: CommandBus) -> CommandBus:
    """Register the retention commands on ``bus`` (idempotent); returns the bus."""
    for command_type, handler in ((Purge, handle_purge), (AddLegalHold, handle_add_hold),
                                  (RemoveLegalHold, handle_remove_hold)):
        bus.register(command_type, handler)
    return bus


# -- holds service ----------------------------------------------------------------------------------------------

def add_hold(bus: CommandBus, *, tenant: str, reason: str, subject: str | None = None,
             actor: str = SYSTEM_ACTOR) -> int:
    """Add a legal hold through the bus (logged as ``retention.AddLegalHold``); the hold id."""
    setup(bus)
    try:
        out = bus.execute(AddLegalHold(subject=subject, reason=reason),
                          ExecutionContext(tenant_id=tenant, actor_id=actor))
    except HoldExistsError as e:
        raise RetentionError(str(e)) from None
    return out.result["hold_id"]


def remove_hold(bus: CommandBus, *, tenant: str, subject: str | None = None, reason: str | None = None,
                actor: str = SYSTEM_ACTOR) -> int:
    """Release a legal hold through the bus (logged as ``retention.RemoveLegalHold``); the hold id."""
    setup(bus)
    out = bus.execute(RemoveLegalHold(subject=subject, reason=reason),
                      ExecutionContext(tenant_id=tenant, actor_id=actor))
    return out.result["hold_id"]


def list_holds(db: Database, *, tenant: str | None = None, include_released: bool = False) -> list[Hold]:
    """Legal holds, newest first."""
    with db.connection() as conn:
        return store.list_holds(conn, tenant_id=tenant, include_released=include_released)


def now() -> datetime:
    """The current time (UTC)."""
    return datetime.now(UTC)

