"""A sparse timeline (a subject touched a few times, months apart) reads only the partitions holding its rows: the
rows by key and their events are bounded by each cluster of rows, not by the page's whole span
(``storage.journal._in_ranges``). Fixed dates, a database of its own."""

from __future__ import annotations

import datetime as dt
import json

import psycopg
import pytest
from dbhelpers import generic_plan, plan_nodes
from psycopg import sql
from psycopg.rows import dict_row

from commandlog.bus import CommandBus
from commandlog.context import ExecutionContext
from commandlog.journal import timeline
from commandlog.records import HistoricalCommand
from examples.billing import commands as c
from examples.billing import setup
from storage import journal as store
from storage.migrate import ensure_partitions_between
from storage.postgres import Database

TENANT, SUBJECT = "t-sparse", "customer:7"
TOUCHED = [dt.datetime(2024, 1, 5, 10, tzinfo=dt.UTC), dt.datetime(2024, 3, 10, 11, tzinfo=dt.UTC),
           dt.datetime(2024, 6, 20, 12, tzinfo=dt.UTC)]
"""When the subject was renamed: three months (and three monthly partitions) apart."""


def _rename(customer: int, name: str, at: dt.datetime) -> HistoricalCommand:
    return HistoricalCommand(command=c.RenameCustomer(customer_id=customer, name=name),
                             context=ExecutionContext(tenant_id=TENANT, actor_id="alice"), started_at=at,
                             finished_at=at + dt.timedelta(milliseconds=40),
                             events=(("CustomerRenamed", {"customer_id": customer, "name": name}),))


@pytest.fixture(scope="module")
def sparse(database_factory):
    """The subject's three commands, and other customers' commands on every day from January to June."""
    db = Database(url=database_factory(), max_connections=4)
    ensure_partitions_between(db, "'2024-01-01'::date", "'2024-07-01'::date")
    bus = setup(CommandBus(db))
    filler = [_rename(8, f"n{d}", dt.datetime(2024, 1, 1, 9, tzinfo=dt.UTC) + dt.timedelta(days=d))
              for d in range(180)]
    mine = [_rename(7, f"name {i}", at) for i, at in enumerate(TOUCHED)]
    assert bus.import_history(filler + mine) == 183
    with db.connection() as conn:
        conn.execute("ANALYZE command_log, tenant_command_log, domain_event")
    yield db
    db.close()


def test_ranges_merge_what_overlaps_or_lies_within_a_day_and_keep_far_rows_apart():
    t = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    h = dt.timedelta(hours=1)
    spans = [(t + 30 * h, t + 31 * h), (t, t + h), (t + 2 * h, t + 3 * h), (t + 100 * 24 * h, t + 100 * 24 * h)]
    assert store._ranges(spans) == [(t, t + 3 * h), (t + 30 * h, t + 31 * h),
                                    (t + 100 * 24 * h, t + 100 * 24 * h)]
    assert store._ranges([(t, t + h), (t + 20 * h, t + 30 * h), (t + 25 * h, t + 26 * h)]) == [(t, t + 30 * h)]


def test_ranges_are_at_most_sixteen_and_still_cover_every_span():
    t = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    spans = [(t + dt.timedelta(days=3 * i + (i % 5)), t + dt.timedelta(days=3 * i + (i % 5), minutes=1))
             for i in range(40)] + [(t + dt.timedelta(days=500, hours=1), t + dt.timedelta(days=500))]  # hi < lo
    ranges = store._ranges(spans)
    assert len(ranges) == store._MAX_RANGES
    assert all(a[1] < b[0] for a, b in zip(ranges, ranges[1:], strict=False)), "ordered, disjoint"
    for lo, hi in spans:
        assert any(r_lo <= min(lo, hi) and max(lo, hi) <= r_hi for r_lo, r_hi in ranges), (lo, hi)


@pytest.mark.parametrize("admin", [False, True], ids=["tenant", "admin"])
def test_a_sparse_subject_pages_through_its_rows_months_apart_with_their_events(sparse, admin):
    db = sparse
    page = timeline(db, tenant=TENANT, admin=admin, subject=SUBJECT, limit=2)
    assert [e["started_at"] for e in page.entries] == [TOUCHED[2].isoformat(), TOUCHED[1].isoformat()]
    assert [[ev["payload"]["name"] for ev in e["events"]] for e in page.entries] == [["name 2"], ["name 1"]]
    rest = timeline(db, tenant=TENANT, admin=admin, subject=SUBJECT, limit=2, cursor=page.next_cursor)
    assert [e["started_at"] for e in rest.entries] == [TOUCHED[0].isoformat()]
    assert [ev["payload"]["name"] for ev in rest.entries[0]["events"]] == ["name 0"]
    assert rest.next_cursor is None


def _relations(conn, statement, params) -> set[str]:
    plan = psycopg.ClientCursor(conn).execute(sql.SQL("EXPLAIN (FORMAT JSON) {}").format(statement),
                                              params).fetchone()[0]
    root = (plan if isinstance(plan, list) else json.loads(plan))[0]["Plan"]
    return {node["Relation Name"] for node in plan_nodes(root) if "Relation Name" in node}


def test_the_events_of_a_sparse_page_are_read_from_its_rows_partitions_only(sparse):
    db = sparse
    with db.connection() as conn:
        rows = conn.execute("SELECT cmd_uuid, retention, started_at, finished_at FROM command_log "
                            "WHERE tenant_id = %s AND subjects @> ARRAY[%s] ORDER BY started_at",
                            (TENANT, SUBJECT)).fetchall()
        assert [r[2] for r in rows] == TOUCHED
        statement, params = store.events_statement(
            [{"cmd_uuid": u, "retention": k, "started_at": s, "finished_at": f} for u, k, s, f in rows])
        leaves = _relations(conn, statement, params)
        every = {r[0] for r in conn.execute("SELECT c.relname FROM pg_partition_tree('domain_event') p "
                                            "JOIN pg_class c ON c.oid = p.relid WHERE p.isleaf")}
    # The three months' leaves of the subject's class (January, March, June), none of the months between.
    assert len(leaves) == 3 and leaves <= every, leaves
    assert len(every) > 6


def _sparse_rows(conn, subject: str = SUBJECT) -> list[dict]:
    """A subject's commands as a page's rows (what ``_events`` gets), oldest first."""
    return [{"cmd_uuid": u, "retention": k, "started_at": s, "finished_at": f} for u, k, s, f in conn.execute(
        "SELECT cmd_uuid, retention, started_at, finished_at FROM tenant_command_log "
        "WHERE subjects @> ARRAY[%s] ORDER BY started_at", (subject,))]


def test_the_events_of_a_sparse_page_come_from_one_generic_join_that_visits_only_their_leaves(sparse):
    """Rows months apart (``events_join_statement``): one statement prepared with a generic plan — nothing planned
    per page — whose nested loop prunes ``domain_event`` per row when it runs: of every leaf, only the three months'
    of the rows' class are visited. In the tenant's session, in order."""
    db = sparse
    with db.tenant_session(TENANT) as conn:
        rows = _sparse_rows(conn)
        assert [r["started_at"] for r in rows] == TOUCHED
        statement, values = store.events_join_statement(rows)
        got = conn.execute(statement, values).fetchall()
        assert [(e[0], e[3]["name"]) for e in got] == [(r["cmd_uuid"], f"name {i}") for i, r in enumerate(rows)]
        plan = generic_plan(conn, sql.SQL(statement), values, analyze=True)
        every = {r[0] for r in conn.execute("SELECT c.relname FROM pg_partition_tree('domain_event') p "
                                            "JOIN pg_class c ON c.oid = p.relid WHERE p.isleaf")}
    visited = {node["Relation Name"] for node in plan_nodes(plan)
               if "Relation Name" in node and node.get("Actual Loops", 0) > 0}
    assert visited == {f"domain_event_long_lived_p{at:%Y%m}" for at in TOUCHED}, visited
    assert len(every) > 100


def test_a_page_spread_over_many_days_reads_its_events_with_the_join_and_others_with_a_custom_plan(sparse):
    """``_events`` picks: the prepared generic join when the rows' event ranges cover more than ``_JOIN_DAYS`` days
    (20 commands a day apart), the unprepared custom plan otherwise (the subject's three, months apart: three days'
    leaves to plan). Read back from the session's prepared statements; both give each row its event."""
    with psycopg.connect(sparse.url) as conn, conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        conn.execute("SET LOCAL ROLE cmdlog_tenant")  # as ``tenant_session``, on a connection of its own
        conn.execute("SELECT set_config('cmdlog.tenant_id', %s, true)", (TENANT,))

        def prepared() -> bool:
            return bool(conn.execute("SELECT 1 FROM pg_prepared_statements WHERE statement LIKE %s",
                                     ("%CROSS JOIN LATERAL (SELECT cmd_uuid, event_uuid%",)).fetchall())

        rows = _sparse_rows(conn)
        few = store._events(cur, rows)
        assert [[e["payload"]["name"] for e in few[r["cmd_uuid"]]] for r in rows] == [["name 0"], ["name 1"],
                                                                                      ["name 2"]]
        assert not prepared()
        daily = _sparse_rows(conn, "customer:8")[:store._JOIN_DAYS + 4]
        many = store._events(cur, daily)
        assert [[e["payload"]["name"] for e in many[r["cmd_uuid"]]] for r in daily] == \
            [[f"n{d}"] for d in range(len(daily))]
        assert prepared()


def test_a_window_s_keys_spread_over_many_days_are_read_with_the_join_and_others_with_a_custom_plan(sparse):
    """``_keyed_window`` picks, in a recent (planned) window too: the prepared generic join when the keys cover more
    than ``_JOIN_DAYS`` days (the daily customer over a month), the unprepared custom plan when they cover fewer
    (nine days of it). Both return the window's rows, newest first."""
    flt = store.TimelineFilter(tenant_id=TENANT, subject="customer:8")
    where, params = store._where(flt, subject=False)
    start = dt.datetime(2024, 2, 1, tzinfo=dt.UTC)
    with psycopg.connect(sparse.url) as conn, conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        conn.execute("SET LOCAL ROLE cmdlog_tenant")  # as ``tenant_session``, on a connection of its own
        conn.execute("SELECT set_config('cmdlog.tenant_id', %s, true)", (TENANT,))

        def prepared() -> bool:
            return bool(conn.execute("SELECT 1 FROM pg_prepared_statements WHERE statement LIKE %s",
                                     ("%unnest($1::timestamptz[], $2::uuid[]) AS k(at, id) CROSS JOIN LATERAL%",)
                                     ).fetchall())

        def read(days: int) -> list[dt.datetime]:
            window = store._Window(start, start + dt.timedelta(days=days))
            return [r["started_at"] for r in store._keyed_window(cur, flt, where, params, "tenant_command_log",
                                                                 window, 51)]

        few = read(9)
        assert len(few) == 9 and few == sorted(few, reverse=True)
        assert not prepared()
        many = read(29)
        assert len(many) == 29 and many == sorted(many, reverse=True)
        assert prepared()


def test_a_tenant_reads_a_sparse_subjects_rows_from_their_partitions_only(sparse):
    """The rows by key of a tenant's subject page (what ``_keyed_window`` sends after ``cmdlog_subject_keys``), in
    the tenant's session: the leaves of those three times in ``tenant_command_log``, none of the days between."""
    db = sparse
    with db.tenant_session(TENANT) as conn:
        keys = [{"cmd_uuid": u, "started_at": at} for u, at in conn.execute(
            "SELECT cmd_uuid, started_at FROM cmdlog_subject_keys(%s, NULL, NULL, NULL, NULL, 51)", (SUBJECT,))]
        assert sorted(k["started_at"] for k in keys) == TOUCHED
        where, params = store._where(store.TimelineFilter(tenant_id=TENANT), subject=False)
        statement, values = store.keyed_rows_statement(where, params, keys, table="tenant_command_log", want=51)
        assert len(conn.execute(statement, values).fetchall()) == 3
        leaves = _relations(conn, statement, values)
    # The keys carry no class: each class's leaf of those three times (the month, the day, the one permanent leaf).
    assert leaves == {f"tenant_command_log_long_lived_p{at:%Y%m}" for at in TOUCHED} | \
        {f"tenant_command_log_short_lived_p{at:%Y%m%d}" for at in TOUCHED} | {"tenant_command_log_permanent"}


def test_a_tenant_page_s_tail_keys_are_read_in_one_generic_join_that_visits_only_their_leaves(sparse):
    """Keys spread over the tail (``keyed_join_statement``): one statement prepared once per connection with a
    generic plan — nothing planned per page — whose nested loop prunes per key when it runs: of every leaf of
    ``tenant_command_log``, only those holding the three keys are visited. In the tenant's session, ordered."""
    db = sparse
    with db.tenant_session(TENANT) as conn:
        keys = [{"cmd_uuid": u, "started_at": at} for u, at in conn.execute(
            "SELECT cmd_uuid, started_at FROM cmdlog_subject_keys(%s, NULL, NULL, NULL, NULL, 51)", (SUBJECT,))]
        where, params = store._where(store.TimelineFilter(tenant_id=TENANT), subject=False)
        statement, values = store.keyed_join_statement(where, params, keys, table="tenant_command_log")
        assert [r[1] for r in conn.execute(statement, values).fetchall()] == TOUCHED[::-1]
        plan = generic_plan(conn, statement, values, analyze=True)
        every = {r[0] for r in conn.execute("SELECT c.relname FROM pg_partition_tree('tenant_command_log') p "
                                            "JOIN pg_class c ON c.oid = p.relid WHERE p.isleaf")}
    visited = {node["Relation Name"] for node in plan_nodes(plan)
               if "Relation Name" in node and node.get("Actual Loops", 0) > 0}
    assert visited == {f"tenant_command_log_long_lived_p{at:%Y%m}" for at in TOUCHED}, visited  # renames: long-lived
    assert "tenant_command_log_long_lived_p202402" in every
    assert len(every) > 100
