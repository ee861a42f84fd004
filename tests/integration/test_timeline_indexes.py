"""Every timeline filter's statement is served by the index kept for it (migrations 0001, 0002, 0021 and 0024).

The statements are those a page sends (``storage.journal.window_statement``), EXPLAINed in the session that sends
them — a tenant session (row-level security adds its policy to the plan) or the owner's — over two days of demo
history on fixed dates, in a database of their own. Sequential scans are disabled for the EXPLAIN: at test size a
scan of a small leaf is cheaper than any index, at the log's real size it is not; with them off the planner still
chooses among the indexes, so a dropped index, or a statement whose shape no longer matches its index, fails here.
(Leaves the window barely touches may be read through another index: each test asserts its index is in the plan.)
"""

from __future__ import annotations

import datetime as dt
import json

import psycopg
import pytest
from dbhelpers import generic_plan, plan_nodes
from psycopg import sql

from commandlog.bus import CommandBus
from examples.billing import setup
from examples.billing.demo import history
from storage import journal as store
from storage.migrate import ensure_partitions_between
from storage.postgres import Database

MIDNIGHT = dt.datetime(2024, 2, 1, tzinfo=dt.UTC)
"""The history covers the two days before this instant (a day and a month boundary)."""
LO, HI = MIDNIGHT - dt.timedelta(days=2), MIDNIGHT + dt.timedelta(days=1)
"""The window EXPLAINed: the whole history."""


@pytest.fixture(scope="module")
def written(database_factory):
    """A database with 3000 demo commands of 6 tenants; yields (db, the filter values: a tenant with failures, one
    of its actors and classes, its rarest correlation and subject, and an event's command)."""
    db = Database(url=database_factory(), max_connections=4)
    ensure_partitions_between(db, f"'{LO - dt.timedelta(days=1):%Y-%m-%d}'::date", f"'{HI:%Y-%m-%d}'::date")
    bus = setup(CommandBus(db))
    assert bus.import_history(history(tenants=6, commands=3000, days=2, seed=11, now=MIDNIGHT)) == 3000
    with db.connection() as conn:
        conn.execute("ANALYZE command_log, tenant_command_log, domain_event")

        def one(query: str, *params: object) -> tuple:
            found = conn.execute(query, params).fetchone()
            assert found is not None, query
            return found

        (tenant,) = one("SELECT tenant_id FROM command_log WHERE status = 'failed' ORDER BY tenant_id LIMIT 1")
        (actor, cmd_class) = one("SELECT actor_id, cmd_class FROM command_log WHERE tenant_id = %s "
                                 "ORDER BY cmd_uuid LIMIT 1", tenant)
        (correlation,) = one("SELECT correlation_id FROM command_log WHERE tenant_id = %s GROUP BY 1 "
                             "ORDER BY count(*), 1 LIMIT 1", tenant)
        (subject,) = one("SELECT s FROM command_log, unnest(subjects) AS s WHERE tenant_id = %s GROUP BY s "
                         "ORDER BY count(*), s LIMIT 1", tenant)
        event = one("SELECT cmd_uuid, retention, occurred_at FROM domain_event ORDER BY event_uuid LIMIT 1")
    yield db, {"tenant": tenant, "actor": actor, "cmd_class": cmd_class, "correlation": correlation,
               "subject": subject, "event": event}
    db.close()


def _indexes(conn, statement, params) -> set[str]:
    """The indexes a statement's plan reads (EXPLAIN with the values bound as literals, as the custom plan of an
    unprepared statement sees them)."""
    with conn.transaction():
        conn.execute("SET LOCAL enable_seqscan = off")
        explain = sql.SQL("EXPLAIN (FORMAT JSON) {}").format(statement)
        plan = psycopg.ClientCursor(conn).execute(explain, params).fetchone()[0]
    return _index_names((plan if isinstance(plan, list) else json.loads(plan))[0]["Plan"])


def _roots(db: Database, names: set[str]) -> set[str]:
    """Each index named by its partitioned parent (the leaves' indexes have generated names)."""
    with db.connection() as conn:
        return {r[0] for r in conn.execute(
            "SELECT coalesce(pg_partition_root(c.oid), c.oid)::regclass::text FROM pg_class c "
            "WHERE c.relname = ANY(%s)", (sorted(names),))}


def _filters(v: dict) -> dict[str, dict]:
    return {"none": {}, "actor": {"actor_id": v["actor"]}, "class": {"cmd_class": v["cmd_class"]},
            "status": {"status": "failed"}, "window": {"since": LO, "until": HI}, "subject": {"subject": v["subject"]},
            "correlation": {"correlation_id": v["correlation"]}, "tenant": {"tenant_id": v["tenant"]},
            "tenant_status": {"tenant_id": v["tenant"], "status": "failed"}}


TENANT_PAGES = {  # filter -> (table read, keys only, index)
    "none": ("tenant_command_log", False, "tenant_command_log_tenant_time_idx"),
    "window": ("tenant_command_log", False, "tenant_command_log_tenant_time_idx"),
    "actor": ("tenant_command_log", False, "tenant_command_log_actor_idx"),
    "class": ("tenant_command_log", False, "tenant_command_log_class_idx"),
    "status": ("tenant_command_log", False, "tenant_command_log_failed_idx"),
    "correlation": ("command_log", True, "command_log_correlation_idx"),
}
ADMIN_PAGES = {
    "none": "command_log_time_idx", "actor": "command_log_actor_idx", "class": "command_log_class_idx",
    "subject": "command_log_tenant_subjects_idx", "correlation": "command_log_correlation_idx",
    "tenant": "command_log_tenant_time_idx", "status": "command_log_failed_idx",
    "tenant_status": "command_log_failed_idx",
}


@pytest.mark.parametrize("kind", sorted(TENANT_PAGES))
def test_a_tenant_timeline_reads_its_filter_index_under_row_level_security(written, kind):
    db, v = written
    table, keys_only, index = TENANT_PAGES[kind]
    flt = store.TimelineFilter(tenant_id=v["tenant"], **_filters(v)[kind])
    statement, params = store.window_statement(flt, table=table, lo=LO, hi=HI, limit=51, keys_only=keys_only)
    with db.tenant_session(v["tenant"]) as conn:
        assert conn.execute(statement, params).fetchall(), "the filter matches rows of the tenant"
        names = _indexes(conn, statement, params)
    assert index in _roots(db, names)


@pytest.mark.parametrize("kind", sorted(ADMIN_PAGES))
def test_an_admin_timeline_reads_its_filter_index(written, kind):
    db, v = written
    flt = store.TimelineFilter(**_filters(v)[kind])
    statement, params = store.window_statement(flt, table="command_log", lo=LO, hi=HI, limit=51)
    with db.connection() as conn:
        assert conn.execute(statement, params).fetchall()
        names = _indexes(conn, statement, params)
    assert ADMIN_PAGES[kind] in _roots(db, names)


def test_a_tenant_subject_timeline_finds_its_keys_in_the_shared_subjects_index(written):
    """What ``cmdlog_subject_keys`` runs (as its owner, for the session's tenant): the tenant and the subject
    together in the one GIN of ``command_log``, which the admin's subject timeline reads too."""
    db, v = written
    flt = store.TimelineFilter(tenant_id=v["tenant"], subject=v["subject"])
    statement, params = store.window_statement(flt, table="command_log", lo=LO, hi=HI, limit=51, keys_only=True)
    with db.connection() as conn:
        assert conn.execute(statement, params).fetchall()
        names = _indexes(conn, statement, params)
        source = conn.execute("SELECT prosrc FROM pg_proc WHERE proname = 'cmdlog_subject_keys'").fetchone()[0]
    assert "command_log_tenant_subjects_idx" in _roots(db, names)
    assert "public.command_log t" in source and "tenant_command_log" not in source


def test_a_page_reads_its_events_by_command(written):
    db, v = written
    cmd_uuid, retention, occurred_at = v["event"]
    statement, params = store.events_statement(
        [{"cmd_uuid": cmd_uuid, "retention": retention, "started_at": occurred_at, "finished_at": occurred_at}])
    with db.connection() as conn:
        names = _indexes(conn, statement, params)
    assert "domain_event_cmd_idx" in _roots(db, names)


def _index_names(plan: dict) -> set[str]:
    return {node["Index Name"] for node in plan_nodes(plan) if "Index Name" in node}


def _generic_indexes(conn, statement, params) -> set[str]:
    """The indexes of the statement's generic plan: what the tail window runs."""
    return _index_names(generic_plan(conn, statement, params, "enable_seqscan = off"))


@pytest.mark.parametrize("session", ["tenant", "admin"])
def test_a_failed_only_page_reads_the_partial_index_in_the_tails_generic_plan_too(written, session):
    """The tail window (everything older, with a generic plan) of a status timeline still reads the failed-only
    partial index: the status is sent as a literal, so the plan proves ``status <> 'succeeded'``."""
    db, v = written
    table, index = {"tenant": ("tenant_command_log", "tenant_command_log_failed_idx"),
                    "admin": ("command_log", "command_log_failed_idx")}[session]
    flt = store.TimelineFilter(tenant_id=v["tenant"], status="failed")
    statement, params = store.window_statement(flt, table=table, lo=None, hi=HI, limit=51)
    with db.tenant_session(v["tenant"]) if session == "tenant" else db.connection() as conn:
        assert conn.execute(statement, params).fetchall()
        names = _generic_indexes(conn, statement, params)
    assert index in _roots(db, names)


@pytest.mark.parametrize("fence", [True, False])
def test_an_admin_subject_page_finds_its_tail_rows_in_the_subjects_index(written, fence):
    """The admin's subject page in the tail window (a generic plan: the subject's rarity unknown) takes the matching
    rows from the subjects GIN and sorts them (``fence``); unfenced — what the page sent before, kept here as the
    counter-example — the planner may instead merge every old leaf's time index walked backwards, testing each row
    for the subject: a whole leaf read per rare subject, 7.2 s p95 at 20M commands. At this size the planner sorts
    either way; ``enable_sort = off`` stands in for the estimates that made the ordered walk look cheap at 20M: the
    fenced statement still sorts, because the fence leaves no ordered path to choose."""
    db, v = written
    flt = store.TimelineFilter(subject=v["subject"])
    statement, params = store.window_statement(flt, table="command_log", lo=None, hi=HI, limit=51, fence=fence)
    with db.connection() as conn:
        assert conn.execute(statement, params).fetchall()
        plain = generic_plan(conn, statement, params, "enable_seqscan = off")
        pushed = generic_plan(conn, statement, params, "enable_seqscan = off", "enable_sort = off")
    assert "command_log_tenant_subjects_idx" in _roots(db, _index_names(plain))
    order = pushed["Plans"][0]["Node Type"]  # what feeds the Limit its rows in order
    assert order == ("Sort" if fence else "Merge Append"), order


def test_a_tenant_session_gets_no_row_for_another_tenants_keys_through_the_keyed_join(written):
    """A hostile tenant that hands ``keyed_join_statement`` keys of another tenant's commands (the keys are its only
    input besides the filters) gets nothing: the lookups run under row-level security, in both logs."""
    db, v = written
    with db.connection() as conn:
        def keys(where: str) -> list[dict]:
            return [{"cmd_uuid": u, "started_at": at} for u, at in conn.execute(
                f"SELECT cmd_uuid, started_at FROM command_log WHERE {where} ORDER BY cmd_uuid LIMIT 20",  # noqa: S608
                (v["tenant"],))]
        theirs, mine = keys("tenant_id <> %s"), keys("tenant_id = %s")
    assert theirs and mine
    with db.connection() as conn:  # the keys are real: the owner's connection finds every one
        statement, values = store.keyed_join_statement([], [], theirs + mine, table="command_log")
        assert len(conn.execute(statement, values).fetchall()) == len(theirs) + len(mine)
    for table in ("tenant_command_log", "command_log"):
        with db.tenant_session(v["tenant"]) as conn:
            statement, values = store.keyed_join_statement([], [], theirs + mine, table=table)
            got = conn.execute(statement, values).fetchall()
        assert sorted(r[0] for r in got) == sorted(k["cmd_uuid"] for k in mine), table


def test_a_tenant_session_gets_no_event_of_another_tenants_commands_through_the_events_join(written):
    """A hostile tenant that hands ``events_join_statement`` rows of another tenant's commands (command, class and
    run time are its only input) gets none of their events: the lookups run under row-level security."""
    db, v = written
    with db.connection() as conn:
        def rows(where: str) -> list[dict]:
            return [{"cmd_uuid": u, "retention": k, "started_at": s, "finished_at": f} for u, k, s, f in conn.execute(
                "SELECT c.cmd_uuid, c.retention, c.started_at, c.finished_at FROM command_log c "  # noqa: S608
                f"WHERE {where} AND EXISTS (SELECT 1 FROM domain_event e WHERE e.cmd_uuid = c.cmd_uuid) "
                "ORDER BY c.cmd_uuid LIMIT 20", (v["tenant"],))]
        theirs, mine = rows("c.tenant_id <> %s"), rows("c.tenant_id = %s")
        statement, values = store.events_join_statement(theirs + mine)
        everyone = {e[0] for e in conn.execute(statement, values).fetchall()}
    assert theirs and mine
    assert everyone == {r["cmd_uuid"] for r in theirs + mine}  # the rows are real: the owner finds every event
    with db.tenant_session(v["tenant"]) as conn:
        got = {e[0] for e in conn.execute(statement, values).fetchall()}
    assert got == {r["cmd_uuid"] for r in mine}


def test_an_admin_subject_page_is_fenced_past_its_first_window_and_other_filters_never(written, monkeypatch):
    """Past the first window, an admin's subject page reads each window fenced (the matches from the subjects GIN,
    then sorted): the walk got there because the window before held less than a page. Unfenced, a subject common
    to many tenants made the planner walk the month window's time index backwards testing every row — 1.0 s p95 at
    20M commands. The first window, and every window of other filters, keep the ordered plan."""
    db, v = written
    seen: list[tuple[bool, bool]] = []
    window_rows = store._window_rows

    def spy(cur, where, params, table, window, want, **kw):
        seen.append((window.tail, kw.get("fence", False)))
        return window_rows(cur, where, params, table, window, want, **kw)

    monkeypatch.setattr(store, "_window_rows", spy)
    page = store.timeline_page(db, store.TimelineFilter(subject=v["subject"], until=HI), tenant=None, limit=50)
    assert page.rows and all(v["subject"] in r["subjects"] for r in page.rows)
    assert len(seen) >= 2, seen  # the rarest subject: less than a page in the first window
    assert [fence for _, fence in seen] == [False] + [True] * (len(seen) - 1), seen
    seen.clear()
    store.timeline_page(db, store.TimelineFilter(actor_id=v["actor"], until=HI), tenant=None, limit=50)
    assert seen and not any(fence for _, fence in seen), seen
