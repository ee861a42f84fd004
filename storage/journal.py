"""The activity journal's reads on Postgres: a keyset page of the log, its domain events, the newest entries.

Tenant reads run in the tenant session (``Database.tenant_session``), so row-level security decides what is
seen; admin reads use the lean global ``command_log``. The caller (``commandlog.journal``) validates the filters
and encodes the cursor; this module turns checked values into SQL.
"""

from __future__ import annotations

import datetime as dt
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from storage.postgres import Database

TIMELINE_COLUMNS = ("cmd_uuid", "started_at", "finished_at", "actor_id", "tenant_id", "cmd_class", "status",
                    "subjects", "cmd_body", "error_type", "error_message", "correlation_id", "causation_id",
                    "retention")
NEWEST_COLUMNS = ("cmd_uuid", "started_at", "tenant_id", "actor_id", "cmd_class", "status", "subjects", "cmd_body",
                  "error_message")
# An event carries its command's retention and occurs while the command runs (between started_at and finished_at;
# the batch path stamps finished_at). Bounding both with literal values lets Postgres prune domain_event's
# partitions when planning, instead of planning (and probing) every partition — a correlated subquery per entry
# measured ~50 ms of planning at 2M rows, this separate statement well under 1 ms.
# A sparse page (a subject's rows over months) is bounded by each cluster of nearby rows, not by the page's whole
# span (``_in_ranges``): only the partitions holding the page's commands are planned and probed.
_EVENTS = ("SELECT cmd_uuid, event_uuid, event_type, payload, occurred_at FROM domain_event "
           "WHERE cmd_uuid = ANY(%s) AND retention = ANY(%s) AND {} ORDER BY occurred_at, event_uuid")
_EVENT_SLACK = dt.timedelta(minutes=5)
_LOWER = re.compile(r"FROM \('([^']+)'\)")


@dataclass(frozen=True, kw_only=True)
class TimelineFilter:
    """Checked filter values of a timeline page (None: not filtered)."""

    tenant_id: str | None = None
    """Only this tenant's entries."""
    subject: str | None = None
    """Entries touching this subject."""
    actor_id: str | None = None
    """Entries of this actor."""
    cmd_class: str | None = None
    """Entries of this command class."""
    status: str | None = None
    """``succeeded``, ``failed`` or ``rejected``."""
    since: dt.datetime | None = None
    """Started at or after (timezone-aware)."""
    until: dt.datetime | None = None
    """Started before (timezone-aware)."""
    correlation_id: uuid.UUID | None = None
    """Entries of this correlation."""
    before: tuple[dt.datetime, uuid.UUID] | None = None
    """Keyset position: entries strictly older than ``(started_at, cmd_uuid)``."""


@dataclass(kw_only=True)
class TimelineRows:
    """One page of log rows, newest first, with their events."""

    rows: list[dict] = field(default_factory=list)
    """At most ``limit`` rows (``TIMELINE_COLUMNS``)."""
    events: dict[uuid.UUID, list[dict]] = field(default_factory=dict)
    """Events per ``cmd_uuid``, in order of occurrence."""
    more: bool = False
    """Older rows exist past the page."""


def timeline_page(db: Database, flt: TimelineFilter, *, tenant: str | None, limit: int) -> TimelineRows:
    """Rows matching ``flt``, newest first, and their events: read in ``tenant``'s session (row-level security),
    or the global ``command_log`` when ``tenant`` is None (admin).

    The page is read window by window, newest first (``_windows``), until it holds ``limit + 1`` rows. The recent
    windows carry literal time bounds, so Postgres plans and probes only their partitions: a page of a busy filter
    costs the day partitions it reads, whatever the size of the log. The last window (everything older) is read
    with a generic plan prepared once per connection, which prunes at execution instead of planning every old
    partition (see ``_fetch``).
    """
    keyed = tenant is not None and (flt.subject is not None or flt.correlation_id is not None)
    where, params = _where(flt, subject=not keyed)
    table = "command_log" if tenant is None else "tenant_command_log"
    floor = _oldest_bound(db, table)
    session = db.connection() if tenant is None else db.tenant_session(tenant)
    rows: list[dict] = []
    with session as conn, conn.cursor(row_factory=dict_row) as cur:
        # A correlation holds a handful of commands: walking recent windows first only adds statements.
        walk = [_Window(flt.since, None, tail=True)] if flt.correlation_id is not None \
            else _windows(flt, floor=floor)
        for n, window in enumerate(walk):
            want = limit + 1 - len(rows)
            if keyed:
                rows += _keyed_window(cur, flt, where, params, table, window, want)
            else:
                # An admin's subject past the first window: its matches from the GIN, then sorted (``_window_sql``).
                # The walk got here because the window before held less than a page, which bounds how many there
                # are to sort; a subject too busy for that fills the first window, read with the order.
                rows += _window_rows(cur, where, params, table, window, want,
                                     fence=flt.subject is not None and (window.tail or n > 0))
            if len(rows) > limit:
                break
        more = len(rows) > limit
        rows = rows[:limit]
        events = _events(cur, rows) if rows else {}
    return TimelineRows(rows=rows, events=events, more=more)


@dataclass(frozen=True)
class _Window:
    """A slice of time read by one statement: ``lo <= started_at < hi`` (None: unbounded on that side)."""

    lo: dt.datetime | None
    hi: dt.datetime | None
    tail: bool = False
    """The open-ended last window over the old partitions: read with a generic plan (``_fetch``)."""


_FIRST_SPAN = dt.timedelta(days=2)
_GROWTH = 4
_PLANNED_WINDOWS = 3
"""Windows planned with literal bounds before the tail (2, 8 and 32 days: the last month or so)."""
_FLOOR_TTL = 30.0
_floors: dict[tuple[str, str], tuple[float, dt.datetime | None]] = {}


def _windows(flt: TimelineFilter, *, floor: dt.datetime | None) -> Iterator[_Window]:
    """Time windows covering the filter's range newest first, without gap or overlap, each ``_GROWTH`` times longer
    than the one before; after ``_PLANNED_WINDOWS`` of them, one tail window holds everything older.

    The first window starts a day before the UTC day holding the newest possible row (today, the cursor's or
    ``until``'s day) and is open above, so rows stamped in the future are not missed. ``floor`` (the oldest
    partition bound) only decides when the walk can stop early: the last window has no lower bound (``since``
    aside), so a stale floor costs time, never rows. Days are aligned on UTC midnight, the daily partitions' bounds.
    """
    hi = flt.until
    if flt.before is not None:
        hi = flt.before[0] if hi is None else min(hi, flt.before[0])
    now = dt.datetime.now(dt.UTC)
    anchor = now if hi is None else min(hi, now)
    edge = dt.datetime.combine(anchor.astimezone(dt.UTC).date(), dt.time(), tzinfo=dt.UTC) + dt.timedelta(days=1)
    upper: dt.datetime | None = None  # the first window is bounded above by the filter itself (until, cursor)
    span = _FIRST_SPAN
    for n in range(_PLANNED_WINDOWS + 1):
        edge = edge - span
        if (flt.since is not None and edge <= flt.since) or floor is None or edge <= floor:
            yield _Window(flt.since, upper)  # the rest fits in one planned window
            return
        if n == _PLANNED_WINDOWS:
            break
        yield _Window(edge, upper)
        upper, span = edge, span * _GROWTH
    yield _Window(flt.since, upper, tail=True)


def _fetch(cur: psycopg.Cursor[dict[str, Any]], statement: sql.Composed | str, values: list, *,
           generic: bool) -> list[dict]:
    """``statement``'s rows: prepared and run with a generic plan when ``generic`` (``plan_cache_mode``), else sent
    unprepared, so that Postgres plans it with its values (a custom plan).

    A custom plan of the tail window, or of keys spread far apart, would plan every partition it touches on every
    page (tens of milliseconds at a few hundred partitions); the generic plan is made once per connection and
    prunes when it runs, leaving the cost of locking and probing the partitions. Elsewhere a custom plan wins: a
    prepared statement soon runs a generic plan, which cannot skip the partitions a custom plan prunes or size
    itself for the values — measured 23 ms against 5 ms for a class timeline at 2M rows. ``SET LOCAL``, put back
    right after: the session's setting is untouched.
    """
    if not generic:
        return cur.execute(statement, values, prepare=False).fetchall()
    cur.execute("SET LOCAL plan_cache_mode = force_generic_plan")
    rows = cur.execute(statement, values, prepare=True).fetchall()
    cur.execute("SET LOCAL plan_cache_mode = DEFAULT")
    return rows


def _bounds(window: _Window) -> tuple[list[sql.Composable], list]:
    where: list[sql.Composable] = []
    params: list = []
    if window.lo is not None:
        where.append(sql.SQL("started_at >= %s"))
        params.append(window.lo)
    if window.hi is not None:
        where.append(sql.SQL("started_at < %s"))
        params.append(window.hi)
    return where, params


def window_statement(flt: TimelineFilter, *, table: str, lo: dt.datetime | None, hi: dt.datetime | None,
                     limit: int, keys_only: bool = False, fence: bool = False) -> tuple[sql.Composed, list]:
    """The statement (and its parameters) reading one window ``lo <= started_at < hi`` of a timeline page of
    ``table``, with every filter of ``flt`` in SQL (the subject as ``subjects @> …``): what a page sends, for
    EXPLAIN (tests/integration/test_timeline_indexes.py). ``keys_only``: ``(cmd_uuid, started_at)`` only;
    ``fence``: as an admin subject page's tail window sends it (``_window_sql``)."""
    where, params = _where(flt, subject=True)
    return _window_sql(where, params, table, _Window(lo, hi), limit,
                       ("cmd_uuid", "started_at") if keys_only else TIMELINE_COLUMNS, fence=fence)


def _window_sql(where: list[sql.Composable], params: list, table: str, window: _Window, want: int,
                columns: tuple[str, ...], *, fence: bool = False) -> tuple[sql.Composed, list]:
    """One window's statement. ``fence``: the matching rows are found in a subquery that neither orders nor limits
    (``OFFSET 0`` keeps the planner from pulling the order into it), then sorted. For an admin's subject page in the
    tail: its generic plan cannot see how rare the subject is, and planned with the order it walked each old leaf's
    ``(started_at, cmd_uuid)`` index backwards testing ``subjects @> …`` row by row — a whole leaf per rare subject,
    7.2 s p95 at 20M commands. Fenced, each leaf's matches come from the subjects GIN and only they are sorted.
    The recent windows past the first are fenced too: with its literal bounds, a custom plan misjudged a subject
    common to many tenants the same way (the month window's time index walked backwards, 1.0 s p95)."""
    extra, extra_params = _bounds(window)
    clauses = where + extra
    names = sql.SQL(", ").join(map(sql.Identifier, columns))
    found = sql.SQL(" AND ").join(clauses) if clauses else sql.SQL("true")
    source = sql.SQL("(SELECT {} FROM {} WHERE {} OFFSET 0) AS matched").format(names, sql.Identifier(table), found) \
        if fence else sql.SQL("{} WHERE {}").format(sql.Identifier(table), found)
    page = sql.SQL("SELECT {} FROM {} ORDER BY started_at DESC, cmd_uuid DESC LIMIT {}").format(
        names, source, sql.Literal(int(want)))  # literal: plans for a small limit
    return page, params + extra_params


def _window_rows(cur: psycopg.Cursor[dict[str, Any]], where: list[sql.Composable], params: list, table: str,
                 window: _Window, want: int, *, columns: tuple[str, ...] = TIMELINE_COLUMNS,
                 fence: bool = False) -> list[dict]:
    page, values = _window_sql(where, params, table, window, want, columns, fence=fence)
    return _fetch(cur, page, values, generic=window.tail)


def _keyed_window(cur: psycopg.Cursor[dict[str, Any]], flt: TimelineFilter, where: list[sql.Composable],
                  params: list, table: str, window: _Window, want: int) -> list[dict]:
    """A subject's or a correlation's rows in one window of a tenant session: the keys from an index of the global
    log, then the rows by key under row-level security.

    Subject: ``cmdlog_subject_keys`` (the GIN on ``command_log (tenant_id, subjects)``, see migrations 0002, 0011 and
    0021). Correlation: ``command_log_correlation_idx``, read in the same tenant session (``command_log`` has the
    same policy; uuid equality is leakproof, so the index serves it below the policy) with every filter of the page —
    the two logs hold the same key, tenant, actor, class, status, subjects, correlation and time for each command.
    """
    if flt.subject is not None:
        only_subject = flt.actor_id is None and flt.cmd_class is None and flt.status is None \
            and flt.correlation_id is None
        before = flt.before or (None, None)
        keys = cur.execute("SELECT cmd_uuid, started_at FROM cmdlog_subject_keys(%s, %s, %s, %s, %s, %s)",
                           (flt.subject, window.lo, window.hi if window.hi is not None else flt.until, *before,
                            want if only_subject else None),
                           prepare=False).fetchall()
    else:
        keys = _window_rows(cur, where, params, "command_log", window, want, columns=("cmd_uuid", "started_at"))
    return rows_by_key(cur, where, params, keys, table=table, want=want, tail=window.tail)


def rows_by_key(cur: psycopg.Cursor[dict[str, Any]], where: list[sql.Composable], params: list, keys: list[dict], *,
                table: str, want: int, tail: bool) -> list[dict]:
    """The rows of ``keys`` (``cmd_uuid``, ``started_at``) that also match ``where``, newest first, under the
    session's row-level security: the generic join when the keys lie in the tail (``tail``) more than a range
    apart, or cover more than ``_JOIN_DAYS`` days; else the custom plan of their ranges, which plans only their
    few leaves."""
    if not keys:
        return []
    ranges = _ranges([(k["started_at"], k["started_at"]) for k in keys])
    if (tail and len(ranges) > 1) or _days(ranges) > _JOIN_DAYS:
        return _fetch(cur, *keyed_join_statement(where, params, keys, table=table), generic=True)
    return _fetch(cur, *keyed_rows_statement(where, params, keys, table=table, want=want), generic=False)


def keyed_join_statement(where: list[sql.Composable], params: list, keys: list[dict], *,
                         table: str) -> tuple[sql.Composed, list]:
    """The rows of ``keys`` that also match ``where``, for keys spread over the tail or over more than ``_JOIN_DAYS``
    days (``_keyed_window``): each key looked up by its primary key in a nested loop, in one statement prepared
    with a generic plan, which prunes the leaves per key when it runs. ``keyed_rows_statement``'s custom plan would
    plan every leaf its ranges touch on every page: a subject's 34 rows over ten months took 100 ms to plan at 20M
    commands, this 9 ms in all. The keys are at most a page, so no limit; uuid and timestamp equality are leakproof
    (row-level security)."""
    columns = sql.SQL(", ").join(map(sql.Identifier, TIMELINE_COLUMNS))
    filters = sql.SQL("").join(sql.SQL(" AND {}").format(w) for w in where)
    # LATERAL: a lookup per key whatever the estimates (a hash join would read every leaf)
    statement = sql.SQL("SELECT t.* FROM unnest(%s::timestamptz[], %s::uuid[]) AS k(at, id) CROSS JOIN LATERAL "
                        "(SELECT {} FROM {} WHERE started_at = k.at AND cmd_uuid = k.id{} LIMIT 1) AS t "
                        "ORDER BY t.started_at DESC, t.cmd_uuid DESC").format(columns, sql.Identifier(table), filters)
    return statement, [[k["started_at"] for k in keys], [k["cmd_uuid"] for k in keys], *params]


def keyed_rows_statement(where: list[sql.Composable], params: list, keys: list[dict], *, table: str,
                         want: int) -> tuple[sql.Composed, list]:
    """The rows of ``keys`` (``cmd_uuid``, ``started_at``) that also match ``where``: by key, bounded by the keys' own
    times (``_in_ranges``), sent unprepared (a custom plan, never the tail's generic one), so Postgres prunes to the
    partitions holding the keys, however far apart they lie. uuid equality and timestamp comparisons are
    leakproof, so the primary key serves them below the row-level security policy."""
    within, bounds = _in_ranges("started_at", [(k["started_at"], k["started_at"]) for k in keys])
    return _window_sql([*where, sql.SQL("cmd_uuid = ANY(%s)"), within],
                       [*params, [k["cmd_uuid"] for k in keys], *bounds], table, _Window(None, None), want,
                       TIMELINE_COLUMNS)


def _oldest_bound(db: Database, table: str) -> dt.datetime | None:
    """The lower bound of ``table``'s oldest time partition (cached a few seconds; None: no time partition)."""
    key = (db.url, table)
    hit = _floors.get(key)
    if hit is not None and hit[0] > time.monotonic():
        return hit[1]
    with db.connection() as conn:
        bounds = conn.execute(
            "SELECT pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent IN (to_regclass(%s), to_regclass(%s)) AND c.relkind = 'r'",
            (f"public.{table}_short_lived", f"public.{table}_long_lived")).fetchall()
    found = [dt.datetime.fromisoformat(m.group(1)) for (b,) in bounds if (m := _LOWER.search(b or ""))]
    floor = min(found) if found else None
    _floors[key] = (time.monotonic() + _FLOOR_TTL, floor)
    return floor


def _where(flt: TimelineFilter, *, subject: bool) -> tuple[list[sql.Composable], list]:
    where: list[sql.Composable] = []
    params: list = []
    for column, value in (("tenant_id", flt.tenant_id), ("subject", flt.subject if subject else None),
                          ("actor_id", flt.actor_id), ("cmd_class", flt.cmd_class)):
        if value is not None:
            where.append(sql.SQL("subjects @> ARRAY[%s]::text[]") if column == "subject"
                         else sql.SQL("{} = %s").format(sql.Identifier(column)))
            params.append(value)
    if flt.status is not None:
        # A literal (one of three values, quoted by psycopg): the tail's generic plan then still proves
        # ``status <> 'succeeded'`` and reads the partial failed-only indexes, which a parameter would rule out.
        where.append(sql.SQL("status = {}").format(sql.Literal(flt.status)))
    if flt.since is not None:
        where.append(sql.SQL("started_at >= %s"))
        params.append(flt.since)
    if flt.until is not None:
        where.append(sql.SQL("started_at < %s"))
        params.append(flt.until)
    if flt.correlation_id is not None:
        where.append(sql.SQL("correlation_id = %s"))
        params.append(flt.correlation_id)
    if flt.before is not None:
        where.append(sql.SQL("(started_at, cmd_uuid) < (%s, %s)"))
        params += list(flt.before)
    return where, params


_MERGE_GAP = dt.timedelta(days=1)
"""Ranges at most a day partition apart are merged: nearby rows cost one range (cheap to plan), far ones a range
each (each pruned to its own partitions)."""
_MAX_RANGES = 16
"""At most this many ranges per statement: planning copies the OR into every surviving leaf, so a page of hundreds of
far-apart rows would cost (ranges × leaves) to plan. Past it, the closest ranges are joined (a wider range only
reads more partitions, never fewer rows)."""


def _ranges(spans: list[tuple[dt.datetime, dt.datetime]]) -> list[tuple[dt.datetime, dt.datetime]]:
    """``spans`` (lo, hi; lo > hi is read as hi..lo) merged where they overlap or lie at most ``_MERGE_GAP`` apart,
    then the closest joined until at most ``_MAX_RANGES`` remain; oldest first. Every span lies within a range."""
    ordered = sorted((min(lo, hi), max(lo, hi)) for lo, hi in spans)
    merged = [ordered[0]]
    for lo, hi in ordered[1:]:
        if lo - merged[-1][1] <= _MERGE_GAP:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    while len(merged) > _MAX_RANGES:
        i = min(range(len(merged) - 1), key=lambda j: merged[j + 1][0] - merged[j][1])
        merged[i:i + 2] = [(merged[i][0], max(merged[i][1], merged[i + 1][1]))]
    return merged


_JOIN_DAYS = 16
"""Past this many UTC days covered by a page's ranges (``_days``), its rows by key and its events are read by the
generic joins (``keyed_join_statement``, ``events_join_statement``) rather than a custom plan of the ranges, whose
planning grows with the leaves (days) they cover. Measured for events at 20M commands (322 leaves of
``domain_event``), first pages of 50 in tenant sessions: the custom plan cost 2-3 ms for busy pages (ranges
covering 1-3 days) and 10.8 ms for sparse subjects' (about 45 days); the join about 5.5-6 ms whatever the page,
its executor start-up growing with the table's leaves, not the page's."""


def _days(ranges: list[tuple[dt.datetime, dt.datetime]]) -> int:
    """The UTC days ``ranges`` cover, each day of each range counted: about the daily leaves a custom plan of them
    plans."""
    return sum((hi.astimezone(dt.UTC).date() - lo.astimezone(dt.UTC).date()).days + 1 for lo, hi in ranges)


def _in_ranges(column: str, spans: list[tuple[dt.datetime, dt.datetime]]) -> tuple[sql.Composable, list]:
    """``column`` within any of the merged ``spans``, as SQL OR-ed ranges and their parameters: sent unprepared, so
    that Postgres plans with the values and prunes to the ranges' partitions, however far apart they lie."""
    ranges = _ranges(spans)
    clause = sql.SQL("({})").format(sql.SQL(" OR ").join(
        [sql.SQL("({0} >= %s AND {0} <= %s)").format(sql.Identifier(column))] * len(ranges)))
    return clause, [bound for span in ranges for bound in span]


def _event_spans(rows: list[dict]) -> list[tuple[dt.datetime, dt.datetime]]:
    """When each row's events can have occurred: during its run (``started_at``..``finished_at``), widened by the
    slack."""
    return [(min(r["started_at"], r["finished_at"] or r["started_at"]) - _EVENT_SLACK,
             max(r["started_at"], r["finished_at"] or r["started_at"]) + _EVENT_SLACK) for r in rows]


def events_statement(rows: list[dict]) -> tuple[sql.Composed, list]:
    """The statement (and its parameters) reading the events of a page's ``rows`` (``cmd_uuid``, ``retention``,
    ``started_at``, ``finished_at``): each command's events occur during its run, widened by the slack."""
    within, bounds = _in_ranges("occurred_at", _event_spans(rows))
    return sql.SQL(_EVENTS).format(within), [[r["cmd_uuid"] for r in rows], sorted({r["retention"] for r in rows}),
                                             *bounds]


_EVENTS_JOIN = (
    "SELECT e.* FROM unnest(%s::uuid[], %s::text[], %s::timestamptz[], %s::timestamptz[]) AS k(id, retention, lo, hi) "
    "CROSS JOIN LATERAL (SELECT cmd_uuid, event_uuid, event_type, payload, occurred_at FROM domain_event "
    "WHERE cmd_uuid = k.id AND retention = k.retention AND occurred_at >= k.lo AND occurred_at <= k.hi "
    "OFFSET 0) AS e ORDER BY e.occurred_at, e.event_uuid")


def events_join_statement(rows: list[dict]) -> tuple[str, list]:
    """The events of ``rows`` spread over far-apart partitions: each row's looked up by its command, class and run
    time in a nested loop, one statement prepared with a generic plan that prunes ``domain_event``'s leaves per row
    when it runs (as ``keyed_join_statement`` does for the rows). ``events_statement``'s custom plan would plan
    every leaf the rows' ranges touch on every page: for a sparse subject's page, 10.8 ms against 5.5 ms at 20M
    commands (322 leaves), 9.4 against 3.3 ms with 51 leaves. ``OFFSET 0`` keeps the lookup a subquery run per
    row: flattened into a join, Postgres may plan it as a scan of every leaf. uuid, text and timestamp comparisons
    are leakproof (row-level security)."""
    lo, hi = zip(*_event_spans(rows), strict=True)
    return _EVENTS_JOIN, [[r["cmd_uuid"] for r in rows], [r["retention"] for r in rows], list(lo), list(hi)]


def _events(cur: psycopg.Cursor[dict[str, Any]], rows: list[dict]) -> dict:
    """The events of a page's ``rows`` by command: one custom plan when the rows lie within a few days (it plans
    only their leaves), the generic join when they are spread over more (``events_join_statement``)."""
    if _days(_ranges(_event_spans(rows))) > _JOIN_DAYS:
        found = _fetch(cur, *events_join_statement(rows), generic=True)
    else:
        found = _fetch(cur, *events_statement(rows), generic=False)
    by_cmd: dict = {}
    for e in found:
        by_cmd.setdefault(e["cmd_uuid"], []).append(e)
    return by_cmd


def newest(db: Database, *, tenant: str | None = None, limit: int = 20) -> list[dict]:
    """The ``limit`` newest commands (``NEWEST_COLUMNS``), newest first; with ``tenant``, its full rows read under
    row-level security."""
    table = "command_log" if tenant is None else "tenant_command_log"
    query = sql.SQL("SELECT {} FROM {} ORDER BY started_at DESC, cmd_uuid DESC LIMIT %s").format(
        sql.SQL(", ").join(map(sql.Identifier, NEWEST_COLUMNS)), sql.Identifier(table))
    session = db.connection() if tenant is None else db.tenant_session(tenant)
    with session as conn, conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, (limit,)).fetchall()
