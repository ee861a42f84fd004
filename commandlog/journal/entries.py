"""The activity journal on Postgres: who did what, when, with what outcome — newest first, keyset-paginated.

Tenant callers read ``tenant_command_log`` (full bodies) and ``domain_event`` through the tenant session, so
Postgres row-level security decides what they see. Admin callers read the lean global ``command_log``.

The cursor is an opaque token over ``(started_at, cmd_uuid)`` of the last entry of a page; the next page is the
rows strictly older in that order, so rows arriving meanwhile (newer ones) never shift or repeat a page.

    CommandLogError
     └── JournalError
          └── InvalidFilterError     a timeline filter or the cursor has an unusable value (``field`` names it)
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid
from dataclasses import dataclass, field
from typing import Any, overload

from commandlog.errors import CommandLogError
from storage import journal as store
from storage import replica as replicas
from storage.postgres import Database

STATUSES = ("succeeded", "failed", "rejected")
MAX_LIMIT = 1000
TimeBound = dt.datetime | dt.date | str | None
"""A time filter as callers give it: an instant, a day or ISO 8601 text (``parse_time`` reads it)."""


class JournalError(CommandLogError):
    """Root of the journal's errors."""


class InvalidFilterError(JournalError):
    """A timeline filter (or the cursor) has an unusable value; ``field`` names it."""

    def __init__(self, field_name: str, problem: str) -> None:
        self.field = field_name
        self.problem = problem
        super().__init__(f"{field_name}: {problem}")


@dataclass(kw_only=True)
class TimelinePage:
    """One page of the timeline, newest first."""

    entries: list[dict] = field(default_factory=list)
    """JSON-ready entries, each with its domain events under ``events``."""
    next_cursor: str | None = None
    """Token for the next (older) page; None on the last page."""


def encode_cursor(started_at: dt.datetime, cmd_uuid: uuid.UUID | str) -> str:
    """The opaque cursor pointing just after ``(started_at, cmd_uuid)``."""
    raw = json.dumps([started_at.isoformat(), str(cmd_uuid)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[dt.datetime, uuid.UUID]:
    """The ``(started_at, cmd_uuid)`` a cursor points after; a forged or damaged cursor is an InvalidFilterError."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        when, ident = json.loads(raw)
        started = dt.datetime.fromisoformat(when)
        if started.tzinfo is None:
            raise ValueError("naive time")
        return started, uuid.UUID(ident)
    except (ValueError, TypeError, json.JSONDecodeError, UnicodeDecodeError):
        raise InvalidFilterError("cursor", "not a cursor returned by a previous page") from None


def timeline(db: Database, *, tenant: str | None, admin: bool = False, subject: str | None = None,
             actor: str | None = None, cmd_class: str | None = None, status: str | None = None,
             since: TimeBound = None, until: TimeBound = None, correlation_id: uuid.UUID | str | None = None,
             cursor: str | None = None, limit: int = 50, replica: bool = False) -> TimelinePage:
    """A page of the journal, newest first, filtered by any of subject, actor, class, status, window, correlation.

    ``tenant`` with ``admin=False`` reads that tenant's full log under row-level security; ``admin=True`` reads the
    lean global log (``tenant`` then only filters). Bad filter values raise ``InvalidFilterError``.
    ``replica=True`` (the CLI and web timelines) reads ``db``'s hot standby when one is configured and usable: the
    page may then lag the primary by up to its max lag. Callers that must see every committed row (the monitor's
    backfill) keep the default.
    """
    if not admin and not (isinstance(tenant, str) and tenant.strip()):
        raise InvalidFilterError("tenant", "a tenant is required unless the caller is an admin")
    # Tenant callers filter on tenant_id explicitly too: RLS enforces it, the explicit equality lets the planner
    # use the (tenant_id, …) indexes with a plain parameter.
    flt = _filters(tenant=tenant, subject=subject, actor=actor, cmd_class=cmd_class, status=status, since=since,
                   until=until, correlation_id=correlation_id, cursor=cursor)
    limit = _limit(limit)
    scope = None if admin else tenant
    if replica:
        page = replicas.read(db, lambda d: store.timeline_page(d, flt, tenant=scope, limit=limit))
    else:
        page = store.timeline_page(db, flt, tenant=scope, limit=limit)
    entries = [_entry(r, [_event(e) for e in page.events.get(r["cmd_uuid"], [])]) for r in page.rows]
    last = page.rows[-1] if page.rows else None
    next_cursor = encode_cursor(last["started_at"], last["cmd_uuid"]) if page.more and last else None
    return TimelinePage(entries=entries, next_cursor=next_cursor)


def _filters(*, tenant: str | None, subject: str | None, actor: str | None, cmd_class: str | None,
             status: str | None, since: TimeBound, until: TimeBound, correlation_id: uuid.UUID | str | None,
             cursor: str | None) -> store.TimelineFilter:
    tenant_id = _text("tenant", tenant) if tenant is not None else None
    subject = _text("subject", subject) if subject is not None else None
    actor_id = _text("actor", actor) if actor is not None else None
    cmd_class = _text("cmd_class", cmd_class) if cmd_class is not None else None
    if status is not None and status not in STATUSES:
        raise InvalidFilterError("status", f"must be one of {', '.join(STATUSES)}, not {status!r}")
    lo, hi = parse_time("since", since), parse_time("until", until)
    if lo is not None and hi is not None and lo >= hi:
        raise InvalidFilterError("until", "must be later than since")
    correlation = _uuid("correlation_id", correlation_id) if correlation_id is not None else None
    before = decode_cursor(_text("cursor", cursor)) if cursor is not None else None
    return store.TimelineFilter(tenant_id=tenant_id, subject=subject, actor_id=actor_id, cmd_class=cmd_class,
                                status=status, since=lo, until=hi, correlation_id=correlation, before=before)


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidFilterError(name, "must be a non-empty string")
    if len(value) > 1000 or "\x00" in value:
        raise InvalidFilterError(name, "is too long or contains a NUL character")
    return value


def _uuid(name: str, value: Any) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise InvalidFilterError(name, f"must be a UUID, not {value!r}") from None


@overload
def parse_time(name: str, value: str | dt.date) -> dt.datetime: ...
@overload
def parse_time(name: str, value: Any) -> dt.datetime | None: ...
def parse_time(name: str, value: Any) -> dt.datetime | None:
    """A timezone-aware instant from a datetime, a date or an ISO 8601 string (naive means UTC)."""
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        when = value
    elif isinstance(value, dt.date):
        when = dt.datetime.combine(value, dt.time())
    elif isinstance(value, str):
        try:
            when = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise InvalidFilterError(name, f"must be an ISO 8601 date or time, not {value!r}") from None
    else:
        raise InvalidFilterError(name, f"must be a date or time, not {type(value).__name__}")
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def _limit(limit: Any) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise InvalidFilterError("limit", f"must be an integer from 1 to {MAX_LIMIT}")
    return limit


def _event(e: dict) -> dict:
    return {"event_uuid": str(e["event_uuid"]), "event_type": e["event_type"], "payload": e["payload"],
            "occurred_at": e["occurred_at"].isoformat()}


def _entry(r: dict, events: list[dict]) -> dict:
    return {
        "cmd_uuid": str(r["cmd_uuid"]), "started_at": r["started_at"].isoformat(),
        "finished_at": r["finished_at"].isoformat() if r["finished_at"] else None,
        "actor_id": r["actor_id"], "tenant_id": r["tenant_id"], "cmd_class": r["cmd_class"], "status": r["status"],
        "subjects": list(r["subjects"] or []), "cmd_body": r["cmd_body"], "error_type": r["error_type"],
        "error_message": r["error_message"],
        "correlation_id": str(r["correlation_id"]) if r["correlation_id"] else None,
        "causation_id": str(r["causation_id"]) if r["causation_id"] else None,
        "events": events,
    }

