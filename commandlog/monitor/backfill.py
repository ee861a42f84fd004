"""Backfill for a watcher resuming from a cursor: the items it may have missed, read from the journal.

The cursor is the ``at`` of the newest item a watcher saw (or the ``cursor`` of the last heartbeat). Items are
published in commit order but stamped by the processes that ran them, so the backfill starts ``MARGIN`` before
the cursor; a resumed watcher may see an item twice and drops ids it already has (items carry a stable ``id``).
Backfilled commands are final rows (succeeded / failed / rejected); ``started`` is only ever live.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from commandlog.journal import entries as journal
from commandlog.monitor.filters import ActivityFilter
from commandlog.monitor.publisher import action_item, command_item, event_item, stamp
from storage import frontend_actions as actions_store
from storage.postgres import Database

MARGIN = dt.timedelta(seconds=5)
"""How far before the cursor the backfill starts (commit order vs. the processes' clocks)."""
LONGEST_COMMAND = dt.timedelta(minutes=5)
"""Commands are found by start time: one that started this long before the cursor and finished after it is found."""
MAX_ITEMS = 2000
"""At most this many items are backfilled; ``truncated`` tells the watcher to reload the journal instead."""


def parse_cursor(cursor: str) -> dt.datetime:
    """The instant of a cursor (an ISO 8601 time); InvalidFilterError names ``cursor`` when it is not one."""
    when = journal.parse_time("cursor", cursor)
    now = dt.datetime.now(dt.UTC)
    if when < now - dt.timedelta(days=7) or when > now + dt.timedelta(minutes=5):
        raise journal.InvalidFilterError("cursor", "must be within the last 7 days")
    return when


def backfill(db: Database, activity_filter: ActivityFilter, since: dt.datetime, *, admin: bool,
             max_items: int = MAX_ITEMS) -> tuple[list[dict], bool]:
    """Items at or after ``since - MARGIN`` that pass ``activity_filter``, oldest first, and whether truncated."""
    lower = stamp(since - MARGIN)
    items: list[dict] = []
    kinds = activity_filter.kinds
    if kinds is None or kinds & {"command", "event"}:
        items += _command_items(db, activity_filter, since, admin=admin, lower=lower, max_items=max_items)
    if kinds is None or "frontend_action" in kinds:
        items += _action_items(db, activity_filter, since, admin=admin, max_items=max_items)
    items = [i for i in items if i["at"] >= lower and activity_filter.accepts(i)]
    items.sort(key=lambda i: (i["at"], i["id"]))
    return items[:max_items], len(items) > max_items


def _command_items(db: Database, activity_filter: ActivityFilter, since: dt.datetime, *, admin: bool, lower: str,
                   max_items: int) -> list[dict[str, Any]]:
    single_class = next(iter(activity_filter.classes)) if activity_filter.classes and len(
        activity_filter.classes) == 1 else None
    cursor, out, fetched = None, [], 0
    while fetched <= max_items:
        page = journal.timeline(db, tenant=activity_filter.tenant_id, admin=admin, actor=activity_filter.actor,
                                cmd_class=single_class, since=since - MARGIN - LONGEST_COMMAND, cursor=cursor,
                                limit=500)
        for entry in page.entries:
            fetched += 1
            item = command_item(entry, entry["status"])
            if item["at"] >= lower:
                out.append(item)
            out += [event_item(item, event_uuid=e["event_uuid"], event_type=e["event_type"],
                               occurred_at=e["occurred_at"]) for e in entry.get("events", [])]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    return out


def _action_items(db: Database, activity_filter: ActivityFilter, since: dt.datetime, *, admin: bool,
                  max_items: int) -> list[dict[str, Any]]:
    lower = since - MARGIN
    if admin:
        rows = actions_store.all_actions_since(db, lower, tenant_id=activity_filter.tenant_id, limit=max_items + 1)
    else:
        assert activity_filter.tenant_id is not None, "a tenant's watcher has its tenant (web/activity builds it so)"
        rows = actions_store.tenant_actions(db, activity_filter.tenant_id, since=lower, limit=max_items + 1)
    return [action_item(action_uuid=r["action_uuid"], tenant_id=r["tenant_id"], actor_id=r["actor_id"],
                        action=r["action"], correlation_id=r["correlation_id"], occurred_at=r["occurred_at"])
            for r in rows]
