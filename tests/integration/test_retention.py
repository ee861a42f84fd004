"""Retention purge on real Postgres (a fresh database per test: the purge spans every tenant) and a lake in tmp_path."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from psycopg import sql

from commandlog.bus import CommandBus, HistoricalCommand
from commandlog.context import ExecutionContext
from commandlog.journal.export import run_export
from commandlog.retention.policy import (
    RetentionError,
    RetentionPolicy,
    add_hold,
    list_holds,
    remove_hold,
)
from commandlog.retention.policy import setup as retention_setup
from commandlog.retention.purge import FanOut, help_purge, run_purge
from examples.billing import commands as c
from examples.billing import setup as billing_setup
from storage.export_units import units_of
from storage.lake.datasets import Lake
from storage.migrate import ensure_partitions_between
from storage.partitions import ensure_ahead
from storage.postgres import Database
from storage.retention import count_by_tenant

AS_OF = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
OLD = AS_OF - timedelta(days=100)      # expired under POLICY for short_lived and long_lived
MID = AS_OF - timedelta(days=20)       # short_lived expired, long_lived not
NEW = AS_OF - timedelta(days=2)        # nothing expired
POLICY = RetentionPolicy(short_lived_days=10, long_lived_days=60, purge_rest=0, reclaim_mb_per_s=0)  # unpaced
TABLES = ("command_log", "tenant_command_log", "domain_event", "frontend_action")


class Crash(Exception):
    """Injected failure."""


@pytest.fixture
def fresh(database_factory):
    """A new migrated database with the billing and retention commands registered, partitions for the test's past."""
    db = Database(url=database_factory())
    bus = retention_setup(billing_setup(CommandBus(db)))
    # only the days the tests write (each leaf costs a detach + drop): keeps every purge short
    for start, end in ((OLD - timedelta(days=31), OLD + timedelta(days=1)), (MID, MID), (NEW, NEW),
                       (AS_OF - timedelta(days=61), AS_OF - timedelta(days=60)),
                       (AS_OF - timedelta(days=11), AS_OF - timedelta(days=10))):
        ensure_partitions_between(db, f"'{start:%Y-%m-%d}'::date", f"'{end:%Y-%m-%d}'::date")
    yield db, bus
    db.close()


def _history(bus, tenant: str, when: datetime, n: int, kind: str = "rename", customer: int = 1) -> None:
    entries = []
    for i in range(n):
        t = when + timedelta(minutes=i)
        events: tuple = ()
        if kind == "rename":
            cmd = c.RenameCustomer(customer_id=customer, name=f"Name {i}")
            events = (("CustomerRenamed", {"customer_id": customer, "name": f"Name {i}"}),)
        elif kind == "login":
            cmd = c.RecordLogin(user_id=f"u{i}", ip="10.0.0.1")
        else:
            cmd = c.CloseMonth(month="2026-07")
        entries.append(HistoricalCommand(command=cmd, context=ExecutionContext(tenant_id=tenant, actor_id="a@x"),
                                         started_at=t, finished_at=t + timedelta(milliseconds=3), events=events,
                                         result={"ok": True}))
    bus.import_history(entries)


def _actions(db, tenant: str, when: datetime, n: int) -> None:
    with db.connection() as conn, conn.cursor() as cur:
        cur.executemany("INSERT INTO frontend_action (action_uuid, tenant_id, actor_id, action, occurred_at) "
                        "VALUES (%s, %s, 'a@x', 'click', %s)",
                        [(uuid.uuid4(), tenant, when + timedelta(minutes=i)) for i in range(n)])


def _count(db, table: str, where: str = "true", params=()) -> int:
    with db.connection() as conn:
        return conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE " + where).format(sql.Identifier(table)),
                            params).fetchone()[0]


def _snapshot(db) -> dict[str, set]:
    keys = {"command_log": "cmd_uuid", "tenant_command_log": "cmd_uuid", "domain_event": "event_uuid",
            "frontend_action": "action_uuid"}
    with db.connection() as conn:  # the application's rows (not retention's own commands)
        return {t: {r[0] for r in conn.execute(sql.SQL(
            "SELECT {} FROM {} WHERE " + ("cmd_class NOT LIKE 'retention.%%'" if "command" in t else "true")).format(
                sql.Identifier(k), sql.Identifier(t)))} for t, k in keys.items()}


def _seed_mix(db, bus, tenants=("t1", "t2")) -> None:
    for t in tenants:
        for when in (OLD, MID, NEW):
            _history(bus, t, when, 5, "rename")
            _history(bus, t, when, 5, "login")
            _history(bus, t, when, 2, "close")
            _actions(db, t, when, 3)


def test_permanent_rows_survive_every_policy(fresh):
    db, bus = fresh
    _seed_mix(db, bus)
    before = _count(db, "command_log", "retention = 'permanent'")
    for policy in (POLICY, RetentionPolicy(short_lived_days=1, long_lived_days=1),
                   RetentionPolicy(short_lived_days=1, long_lived_days=1,
                                   tenant_overrides={"t1": {"short_lived_days": 1, "long_lived_days": 1}})):
        run_purge(db, bus, policy, as_of=AS_OF, dry_run=False)
        assert _count(db, "command_log", "retention = 'permanent' AND cmd_class = 'billing.CloseMonth'") == before
    assert _count(db, "command_log", "retention <> 'permanent'") == 0
    with pytest.raises(ValueError, match="permanent_days"):
        RetentionPolicy.model_validate({"permanent_days": 5})


def test_expired_rows_leave_every_table_and_the_rest_stay(fresh):
    db, bus = fresh
    _seed_mix(db, bus)
    report = run_purge(db, bus, POLICY, as_of=AS_OF, dry_run=False)
    for table in TABLES:
        time_col = "started_at" if table.endswith("command_log") else "occurred_at"
        assert _count(db, table, f"retention = 'short_lived' AND {time_col} < %s", (AS_OF - timedelta(days=10),)) == 0
        assert _count(db, table, f"retention = 'long_lived' AND {time_col} < %s", (AS_OF - timedelta(days=60),)) == 0
    # kept: long_lived of MID and NEW, short_lived of NEW, frontend actions of NEW (short_lived by default)
    assert _count(db, "command_log", "cmd_class = 'billing.RenameCustomer'") == 2 * 2 * 5
    assert _count(db, "command_log", "cmd_class = 'billing.RecordLogin'") == 2 * 5
    assert _count(db, "frontend_action") == 2 * 3
    assert _count(db, "domain_event") == 2 * 2 * 5
    assert report.partitions_dropped > 0
    by_table = {}
    for row in report.counts:
        by_table[row["table"]] = by_table.get(row["table"], 0) + row["rows"]
    assert by_table == {"command_log": 2 * (5 + 5 + 5), "tenant_command_log": 2 * (5 + 5 + 5),
                        "domain_event": 2 * 5, "frontend_action": 2 * 6}
    # the purge is itself a permanent command of a system actor, with counts per table, class and tenant
    with db.connection() as conn:
        row = conn.execute("SELECT retention, actor_id, cmd_body FROM command_log WHERE cmd_class = 'retention.Purge'"
                           ).fetchone()
    assert row[0] == "permanent" and row[1] == "system:retention"
    assert {(x["table"], x["retention"], x["tenant_id"]) for x in row[2]["counts"]} >= {
        ("command_log", "short_lived", "t1"), ("command_log", "long_lived", "t2"),
        ("frontend_action", "short_lived", "t1")}


def test_held_rows_survive_tenant_wide_and_subject_holds(fresh):
    db, bus = fresh
    for t in ("held", "subj", "free"):
        _history(bus, t, OLD, 4, "rename", customer=1)
        _history(bus, t, OLD, 3, "rename", customer=2)
        _history(bus, t, OLD, 2, "login")
        _actions(db, t, OLD, 2)
    add_hold(bus, tenant="held", reason="litigation")
    add_hold(bus, tenant="subj", subject="customer:1", reason="dispute")
    run_purge(db, bus, POLICY, as_of=AS_OF, dry_run=False)
    q = "tenant_id = %s AND cmd_class LIKE 'billing.%%'"
    assert _count(db, "command_log", q, ("held",)) == 9
    assert _count(db, "tenant_command_log", q, ("held",)) == 9
    assert _count(db, "domain_event", "tenant_id = 'held'") == 7
    assert _count(db, "frontend_action", "tenant_id = 'held'") == 2
    assert _count(db, "command_log", q, ("subj",)) == 4
    assert _count(db, "command_log", q + " AND 'customer:1' = ANY (subjects)", ("subj",)) == 4
    assert _count(db, "tenant_command_log", q, ("subj",)) == 4
    assert _count(db, "domain_event", "tenant_id = 'subj'") == 4  # the held commands' events, not the others'
    assert _count(db, "frontend_action", "tenant_id = 'subj'") == 0  # subject holds do not cover frontend actions
    for table in TABLES:
        assert _count(db, table, "tenant_id = 'free'") == 0
    # holds are logged as permanent commands, and releasing one lets the next purge remove the rows
    remove_hold(bus, tenant="subj", subject="customer:1", reason="settled")
    assert [h.tenant_id for h in list_holds(db)] == ["held"]
    run_purge(db, bus, POLICY, as_of=AS_OF, dry_run=False)
    assert _count(db, "command_log", q, ("subj",)) == 0
    assert _count(db, "domain_event", "tenant_id = 'subj'") == 0
    with db.connection() as conn:
        logged = conn.execute("SELECT cmd_class, retention, status FROM command_log WHERE cmd_class LIKE "
                              "'retention.%%Hold' ORDER BY started_at").fetchall()
    assert logged == [("retention.AddLegalHold", "permanent", "succeeded")] * 2 + [
        ("retention.RemoveLegalHold", "permanent", "succeeded")]
    with pytest.raises(RetentionError, match="already under an active legal hold"):
        add_hold(bus, tenant="held", reason="again")


def test_tenant_overrides_keep_longer_or_purge_sooner(fresh):
    db, bus = fresh
    for t in ("long", "short", "plain"):
        _history(bus, t, OLD, 3, "rename")
        _history(bus, t, MID, 3, "rename")
    policy = RetentionPolicy(short_lived_days=10, long_lived_days=60, tenant_overrides={
        "long": {"long_lived_days": "never"}, "short": {"long_lived_days": 15}})
    run_purge(db, bus, policy, as_of=AS_OF, dry_run=False)
    assert _count(db, "command_log", "tenant_id = 'long'") == 6
    assert _count(db, "command_log", "tenant_id = 'short'") == 0
    assert _count(db, "command_log", "tenant_id = 'plain'") == 3


def test_dry_run_deletes_nothing_and_counts_what_would_go(fresh):
    db, bus = fresh
    _seed_mix(db, bus)
    before = _snapshot(db)
    report = run_purge(db, bus, POLICY, as_of=AS_OF, dry_run=True)
    assert _snapshot(db) == before
    assert report.dry_run and report.run_id is None and report.partitions_dropped > 0
    assert _count(db, "retention_run") == 0 and _count(db, "export_unit") == 0  # no run, no unit
    real = run_purge(db, bus, POLICY, as_of=AS_OF, dry_run=False)
    assert report.total_rows == real.total_rows == sum(len(before[t] - s) for t, s in _snapshot(db).items())


def _lake_rows(lake_uri: str) -> dict[str, pa.Table]:
    lake = Lake(lake_uri)
    _, files = lake.manifest()
    out = {}
    for name in ("commands", "tenant_commands", "events", "frontend_actions"):
        tables = []
        for f in (f for f in files if f.dataset == name):
            t = pq.read_table(lake.abspath(name, f.path))
            for key, value in f.partition.items():  # Hive keys live in the path, not in the file
                if key not in t.column_names:
                    t = t.append_column(key, pa.array([value] * t.num_rows, pa.string()))
            tables.append(t)
        out[name] = pa.concat_tables(tables, promote_options="default") if tables else None
    return out


def test_expired_rows_disappear_from_postgres_and_every_lake_dataset(fresh, tmp_path):
    db, bus = fresh
    lake = str(tmp_path / "lake")
    _seed_mix(db, bus, tenants=("t1", "t2", "keep"))
    _history(bus, "t1", AS_OF - timedelta(days=10, minutes=3), 6, "login")  # straddles the short_lived cutoff
    add_hold(bus, tenant="keep", reason="audit")
    run_export(db, lake)
    run_purge(db, bus, POLICY, as_of=AS_OF, lake_uri=lake, dry_run=False)
    cut = {"short_lived": AS_OF - timedelta(days=10), "long_lived": AS_OF - timedelta(days=60)}
    tables = _lake_rows(lake)
    for name, time_col in (("commands", "started_at"), ("events", "occurred_at"),
                           ("frontend_actions", "occurred_at")):
        rows = tables[name].to_pylist()
        assert rows, name
        for r in rows:
            if r["tenant_id"] != "keep" and r["retention"] != "permanent":
                assert r[time_col] >= cut[r["retention"]], (name, r)
    pg = _snapshot(db)
    app_rows = {name: [r for r in tables[name].to_pylist() if not r["cmd_class"].startswith("retention.")]
                for name in ("commands", "tenant_commands")}
    assert {r["cmd_uuid"] for r in app_rows["commands"]} == pg["command_log"]
    assert {r["cmd_uuid"] for r in app_rows["tenant_commands"]} == pg["tenant_command_log"]
    assert {u for u in tables["events"].column("event_uuid").to_pylist()} == pg["domain_event"]
    assert {u for u in tables["frontend_actions"].column("action_uuid").to_pylist()} == pg["frontend_action"]
    assert _count(db, "command_log", "cmd_class = 'billing.RecordLogin' AND tenant_id = 't1' AND started_at >= %s",
                  (cut["short_lived"],)) == 3 + 5  # the straddling ones after the cutoff, and NEW
    # only files in the manifest remain on disk, and the ledger records what the purge removed
    on_disk = {str(p.relative_to(tmp_path / "lake")) for p in (tmp_path / "lake").rglob("*.parquet")}
    listed = {f"{f.dataset}/{f.path}" for f in Lake(lake).manifest()[1]}
    assert on_disk == listed
    with db.connection() as conn:
        counts = conn.execute("SELECT row_counts FROM export_snapshot WHERE row_counts->>'purpose' = 'retention' "
                              "AND status = 'published' AND row_counts->'removed' ? 'commands/short_lived'"
                              ).fetchone()[0]  # one lake run per unit: dataset × class
    assert counts["removed"]["commands/short_lived"]["t1"] == 5 + 5 + 3


def test_unexported_rows_survive_while_the_lake_is_on(fresh, tmp_path):
    db, bus = fresh
    lake = str(tmp_path / "lake")
    _history(bus, "t1", OLD, 4, "rename")
    run_export(db, lake)
    _history(bus, "t2", OLD, 3, "rename")  # committed after the export: not in the lake yet
    _actions(db, "t2", OLD, 2)
    run_purge(db, bus, POLICY, as_of=AS_OF, lake_uri=lake, dry_run=False)
    assert _count(db, "command_log", "tenant_id = 't1'") == 0
    assert _count(db, "command_log", "tenant_id = 't2'") == 3
    assert _count(db, "tenant_command_log", "tenant_id = 't2'") == 3
    assert _count(db, "domain_event", "tenant_id = 't2'") == 3
    assert _count(db, "frontend_action", "tenant_id = 't2'") == 2
    run_export(db, lake)
    run_purge(db, bus, POLICY, as_of=AS_OF, lake_uri=lake, dry_run=False)
    for table in TABLES:
        assert _count(db, table, "tenant_id IN ('t1', 't2')") == 0
    for table in _lake_rows(lake).values():
        assert table is None or not {"t1", "t2"} & set(table.column("tenant_id").to_pylist())


def _clone(db, name: str) -> Database:
    """An identical copy of ``db`` (CREATE DATABASE … TEMPLATE)."""
    db.close()
    src = psycopg.conninfo.conninfo_to_dict(db.url)["dbname"]
    with psycopg.connect(db.url, dbname="postgres", autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(src)))
    return Database(url=db.url.replace(f"/{src}?", f"/{name}?"))


def test_a_drop_another_taker_is_finishing_is_left_to_it_not_waited_on(fresh):
    """A taker finishing a detached leaf of another range (an interrupted drop, as ``_walk`` sees it) meets the leaf's
    own taker, alive and in the transaction that marks the step done (stopped there, say): it leaves the step to that
    taker at once instead of waiting out its lock timeout unit after unit; once nobody holds it, it marks it done."""
    from contextlib import closing

    from commandlog.retention.purge import _finish_drop
    from storage import retention as store
    from storage.partitions import drop_connection

    db, _ = fresh
    leaf = "command_log_short_lived_p20260101"  # detached and parked already: the drop's last step is left
    with db.connection() as conn:
        run = store.start_run(conn, as_of=AS_OF, policy=POLICY.model_dump(mode="json"), lake_uri=None,
                              export_bound=None)
        store.record_step(conn, run.run_id, action="drop", table="command_log", partition=leaf,
                          retention="short_lived", status="detaching", counts={"t1": 3})

    def status() -> str:
        with psycopg.connect(db.url) as conn:
            return conn.execute("SELECT status FROM retention_step WHERE partition_name = %s", (leaf,)).fetchone()[0]

    with psycopg.connect(db.url) as owner, closing(drop_connection(db.url, lock_timeout_ms=300)) as dconn:
        owner.execute("UPDATE retention_step SET at = now() WHERE run_id = %s AND partition_name = %s",
                      (run.run_id, leaf))  # the leaf's taker, mid-transaction (not committed)
        t0 = time.monotonic()
        _finish_drop(dconn, run, table="command_log", retention="short_lived", leaf=leaf, step=lambda *a: None)
        assert time.monotonic() - t0 < 0.3, "waited on the other taker's lock"
        assert status() == "detaching"  # left to the taker that holds it
        owner.rollback()  # that taker dies before its commit: the step is still to be finished
        _finish_drop(dconn, run, table="command_log", retention="short_lived", leaf=leaf, step=lambda *a: None)
    assert status() == "done"


@pytest.mark.slow  # a clone of the database and two purges per crash point
@pytest.mark.parametrize("crash_at", ["detaching", "dropped", "batch"])
def test_a_crash_mid_purge_is_finished_by_the_next_run_and_nothing_extra_is_deleted(fresh, crash_at):
    db, bus = fresh
    _seed_mix(db, bus, tenants=("t1", "t2", "t3"))
    _history(bus, "t1", AS_OF - timedelta(days=60, minutes=30), 60, "rename")  # straddles: batch deletes
    add_hold(bus, tenant="t3", subject="customer:1", reason="dispute")
    twin = _clone(db, f"twin_{uuid.uuid4().hex[:8]}")
    twin_bus = retention_setup(billing_setup(CommandBus(twin), install_schema=False))
    try:
        seen = []

        def crash(phase, detail):
            if phase == crash_at:
                seen.append(detail)
                if len(seen) == 2:
                    raise Crash(f"injected at {phase} {detail}")

        with pytest.raises(Crash):
            run_purge(db, bus, POLICY, as_of=AS_OF, step=crash, dry_run=False)
        with db.connection() as conn:
            assert conn.execute("SELECT status FROM retention_run").fetchone()[0] == "running"
        later = AS_OF + timedelta(days=1)  # the next run finishes the interrupted one with *its* cutoffs first
        resumed = run_purge(db, bus, RetentionPolicy(short_lived_days="never", long_lived_days="never"), as_of=later,
                            dry_run=False)
        clean = run_purge(twin, twin_bus, POLICY, as_of=AS_OF, dry_run=False)
        assert resumed.resumed and resumed.total_rows == 0
        assert _snapshot(db) == _snapshot(twin)
        with db.connection() as conn:
            first = conn.execute("SELECT cmd_body->'counts' FROM command_log WHERE cmd_class = 'retention.Purge' "
                                 "ORDER BY started_at LIMIT 1").fetchone()[0]
            assert conn.execute("SELECT count(*) FROM retention_run WHERE status = 'running'").fetchone()[0] == 0
        assert first == [dict(r) for r in clean.counts]
    finally:
        twin.close()


@pytest.mark.slow  # 30 days of leaves detached concurrently while a writer runs
def test_writers_inserting_during_the_purge_see_no_error(fresh):
    db, bus = fresh
    for day in range(30):
        _history(bus, "old", OLD - timedelta(days=day), 3, "login")
        _history(bus, "old", OLD - timedelta(days=day), 3, "rename")
    add_hold(bus, tenant="old", subject="customer:1", reason="keeps some partitions mixed")
    errors: list[BaseException] = []
    written: list = []
    stop = threading.Event()

    def writer():
        ctx = ExecutionContext(tenant_id="live", actor_id="w@live")
        while not stop.is_set():
            try:
                written.append(bus.execute(c.RecordLogin(user_id="w", ip="10.0.0.2"), ctx).cmd_uuid)
            except BaseException as e:  # noqa: BLE001 - the test's point is that none happens
                errors.append(e)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        report = run_purge(db, bus, RetentionPolicy(short_lived_days=10, long_lived_days=10, lock_timeout_ms=50),
                           as_of=AS_OF, dry_run=False)
    finally:
        stop.set()
        thread.join()
    assert errors == [], [(repr(e), repr(e.__context__), repr(getattr(e.__context__, '__context__', None)))
                          for e in errors[:3]]
    assert report.partitions_dropped >= 30 and len(written) > 0
    assert _count(db, "command_log", "tenant_id = 'live'") == len(written)
    # the held subject's commands
    assert _count(db, "command_log", "tenant_id = 'old' AND cmd_class LIKE 'billing.%%'") == 30 * 3


def test_a_second_purge_at_the_same_time_is_refused(fresh):
    db, bus = fresh
    lock = psycopg.connect(db.url, autocommit=True)
    try:
        from storage.retention import PURGE_LOCK_KEY

        lock.execute("SELECT pg_advisory_lock(%s)", (PURGE_LOCK_KEY,))
        with pytest.raises(RetentionError, match="another retention purge"):
            run_purge(db, bus, POLICY, as_of=AS_OF, dry_run=False)
    finally:
        lock.close()


def test_partitions_are_created_ahead_while_a_writer_holds_its_insert_locks(fresh):
    db, bus = fresh
    writer = psycopg.connect(db.url)
    try:  # an open writer transaction: ROW EXCLUSIVE on the log parents until it ends
        writer.execute("INSERT INTO frontend_action (action_uuid, tenant_id, actor_id, action, occurred_at) "
                       "VALUES (%s, 'live', 'a@x', 'click', now())", (uuid.uuid4(),))
        writer.execute("SELECT count(*) FROM command_log WHERE tenant_id = 'live'")
        created = ensure_ahead(db.url, days=20, lock_timeout_ms=50, attempts=2)  # would time out behind the writer
        assert created > 0
        writer.commit()
    finally:
        writer.close()
    leaf = f"command_log_short_lived_p{(datetime.now(UTC) + timedelta(days=20)):%Y%m%d}"
    with db.connection() as conn:
        rls, forced = conn.execute("SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE relname = %s",
                                   (leaf,)).fetchone()
        policies = conn.execute("SELECT count(*) FROM pg_policy WHERE polrelid = %s::regclass", (leaf,)).fetchone()[0]
        indexes = conn.execute("SELECT count(*) FROM pg_index WHERE indrelid = %s::regclass", (leaf,)).fetchone()[0]
        parent_indexes = conn.execute(
            "SELECT count(*) FROM pg_index WHERE indrelid = 'command_log_short_lived'::regclass").fetchone()[0]
    assert rls and forced and policies == 1 and indexes == parent_indexes
    ctx = ExecutionContext(tenant_id="live", actor_id="w@live")
    later = bus.execute(c.RecordLogin(user_id="w", ip="10.0.0.2"), ctx)  # routed as before
    assert _count(db, "command_log", "cmd_uuid = %s", (later.cmd_uuid,)) == 1


def test_a_big_leaf_is_counted_per_tenant_in_slices_with_the_same_counts(fresh):
    db, bus = fresh
    _seed_mix(db, bus, tenants=("t1", "t2", "t3"))
    leaf = f"command_log_short_lived_p{OLD:%Y%m%d}"
    with psycopg.connect(db.url, autocommit=True) as conn:
        conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(leaf)))
        whole = count_by_tenant(conn, leaf)
        sliced = count_by_tenant(conn, leaf, slice_above=0, max_rest_s=0.01)  # every leaf counts as big
    assert whole == sliced and set(sliced) == {"t1", "t2", "t3"} and all(n > 0 for n in sliced.values())


KEYS = {"command_log": "cmd_uuid", "tenant_command_log": "cmd_uuid", "domain_event": "event_uuid",
        "frontend_action": "action_uuid"}
LAKE_KEYS = {"commands": "cmd_uuid", "tenant_commands": "cmd_uuid", "events": "event_uuid",
             "frontend_actions": "action_uuid"}


def _permanent_history(db, bus, tenant: str, when: datetime, n: int) -> None:
    """``n`` permanent commands (``billing.CloseMonth``) with one event each, and ``n`` permanent frontend actions."""
    bus.import_history([HistoricalCommand(
        command=c.CloseMonth(month=f"2026-{1 + i % 12:02d}"),
        context=ExecutionContext(tenant_id=tenant, actor_id="a@x"),
        started_at=when + timedelta(minutes=i), finished_at=when + timedelta(minutes=i, milliseconds=3),
        events=(("MonthClosed", {"month": f"2026-{1 + i % 12:02d}"}),), result={"ok": True}) for i in range(n)])
    with db.connection() as conn, conn.cursor() as cur:
        cur.executemany("INSERT INTO frontend_action "
                        "(action_uuid, tenant_id, actor_id, action, occurred_at, retention) "
                        "VALUES (%s, %s, 'a@x', 'sign', %s, 'permanent')",
                        [(uuid.uuid4(), tenant, when + timedelta(minutes=i)) for i in range(n)])


def _permanent_keys(db) -> dict[str, set]:
    with db.connection() as conn:
        return {t: {r[0] for r in conn.execute(sql.SQL("SELECT {} FROM {} WHERE retention = 'permanent'").format(
            sql.Identifier(k), sql.Identifier(t)))} for t, k in KEYS.items()}


def _lake_permanent_keys(lake_uri: str) -> dict[str, set]:
    return {name: {uuid.UUID(str(r[LAKE_KEYS[name]])) for r in table.to_pylist() if r["retention"] == "permanent"}
            for name, table in _lake_rows(lake_uri).items() if table is not None}


def test_permanent_rows_stay_in_every_table_and_lake_dataset_through_a_purge_that_drops_and_deletes(fresh, tmp_path):
    """Invariant 5, first half, table by table: a real purge (whole leaves dropped, straddling and held leaves
    batch-deleted, the lake rewritten) removes rows from each of the four log tables and the lake, and every
    ``permanent`` row counted before is still there after, in Postgres and in each lake dataset."""
    db, bus = fresh
    lake = str(tmp_path / "lake")
    _seed_mix(db, bus)
    for t in ("t1", "t2"):
        for when in (OLD, MID, NEW):
            _permanent_history(db, bus, t, when, 3)
    _history(bus, "t1", AS_OF - timedelta(days=10, minutes=3), 6, "login")  # straddles the cutoff: batch deletes
    add_hold(bus, tenant="t2", subject="customer:1", reason="dispute")  # t2's leaves cannot be dropped whole
    run_export(db, lake)
    pg_before, lake_before = _permanent_keys(db), _lake_permanent_keys(lake)
    assert set(pg_before) == set(TABLES) and all(pg_before.values()), pg_before
    assert set(lake_before) == set(LAKE_KEYS) and all(lake_before.values()), lake_before
    phases: list[str] = []
    report = run_purge(db, bus, POLICY, as_of=AS_OF, lake_uri=lake, dry_run=False,
                       step=lambda phase, detail: phases.append(phase))
    pg_after, lake_after = _permanent_keys(db), _lake_permanent_keys(lake)
    for table in TABLES:
        assert len(pg_before[table] & pg_after[table]) == len(pg_before[table]), table
    for dataset in LAKE_KEYS:
        assert len(lake_before[dataset] & lake_after[dataset]) == len(lake_before[dataset]), dataset
    # … and the purge did remove rows, through every path that deletes, from each table and dataset
    assert {"dropped", "batch", "lake"} <= set(phases)
    removed: dict[str, int] = {}
    for row in report.counts:
        assert row["retention"] != "permanent", row
        removed[row["table"]] = removed.get(row["table"], 0) + row["rows"]
    assert all(removed.get(t, 0) > 0 for t in TABLES), removed
    assert all(removed.get(f"lake:{d}", 0) > 0 for d in LAKE_KEYS), removed


def test_a_subject_hold_keeps_its_rows_in_postgres_and_in_the_lake_while_the_rest_of_its_partition_goes(fresh,
                                                                                                       tmp_path):
    """Invariant 5, second half, with the lake on: a hold on ``customer:1`` of one tenant keeps exactly that
    subject's commands (and their events) in Postgres and in the exported Parquet — read back with pyarrow and
    with DuckDB — while the tenant's other rows of the same partitions, and another tenant's ``customer:1``, go."""
    from storage.lake.duckdb_journal import open_journal, query

    db, bus = fresh
    lake = str(tmp_path / "lake")
    _history(bus, "subj", OLD, 4, "rename", customer=1)
    _history(bus, "subj", OLD + timedelta(minutes=10), 3, "rename", customer=2)  # same day, same partitions
    _history(bus, "subj", OLD, 2, "login")
    _history(bus, "free", OLD, 3, "rename", customer=1)  # the same subject name in another tenant: not held
    add_hold(bus, tenant="subj", subject="customer:1", reason="dispute")
    run_export(db, lake)
    app = "cmd_class LIKE 'billing.%%'"
    with db.connection() as conn:
        held = {r[0] for r in conn.execute(f"SELECT cmd_uuid FROM command_log WHERE tenant_id = 'subj' AND {app} "
                                           "AND 'customer:1' = ANY (subjects)")}
        held_events = {r[0] for r in conn.execute("SELECT event_uuid FROM domain_event WHERE cmd_uuid = ANY (%s)",
                                                  (list(held),))}
    assert len(held) == 4 and len(held_events) == 4
    lake_subj = {r["cmd_uuid"] for r in _lake_rows(lake)["commands"].to_pylist()
                 if r["tenant_id"] == "subj" and r["cmd_class"].startswith("billing.")}
    assert len(lake_subj) == 4 + 3 + 2  # everything was exported before the purge
    report = run_purge(db, bus, POLICY, as_of=AS_OF, lake_uri=lake, dry_run=False)
    # Postgres
    with db.connection() as conn:
        for table in ("command_log", "tenant_command_log"):
            assert {r[0] for r in conn.execute(sql.SQL("SELECT cmd_uuid FROM {} WHERE tenant_id = 'subj' AND "
                                                       + app).format(sql.Identifier(table)))} == held, table
        events = conn.execute("SELECT event_uuid FROM domain_event WHERE tenant_id = 'subj'")
        assert {r[0] for r in events} == held_events
    for table in TABLES:
        assert _count(db, table, "tenant_id = 'free'") == 0, table
    # the lake, read back with pyarrow
    tables = _lake_rows(lake)
    uuids = lambda name, tenant, key="cmd_uuid": {uuid.UUID(str(r[key])) for r in tables[name].to_pylist()  # noqa: E731
                                                  if r["tenant_id"] == tenant and not r.get("cmd_class", "").startswith(
                                                      "retention.")}
    assert uuids("commands", "subj") == held
    assert uuids("tenant_commands", "subj") == held
    assert uuids("events", "subj", "event_uuid") == held_events
    assert uuids("commands", "free") == uuids("tenant_commands", "free") == set()
    assert uuids("events", "free", "event_uuid") == set()
    # … and with DuckDB, as a tenant session sees it
    con = open_journal(Lake(lake), tenant="subj")
    try:
        rows = lambda q: {uuid.UUID(str(r["u"])) for r in query(con, q).read_all().to_pylist()}  # noqa: E731
        assert rows("SELECT cmd_uuid AS u FROM tenant_commands WHERE cmd_class LIKE 'billing.%'") == held
        assert rows("SELECT cmd_uuid AS u FROM commands WHERE cmd_class LIKE 'billing.%'") == held
        assert rows("SELECT event_uuid AS u FROM events") == held_events
    finally:
        con.close()
    lake_removed = sum(r["rows"] for r in report.counts if r["table"] == "lake:commands" and r["tenant_id"] == "subj")
    assert lake_removed == 3 + 2  # the lake partition was rewritten, not left alone


# -- drops in paced steps, partitions ahead as a step of their own (issue 16) -------------------------------------

def _leaf_indexes(db, name: str) -> int:
    with db.connection() as conn:
        return conn.execute("SELECT count(*) FROM pg_index WHERE indrelid = %s::regclass", (name,)).fetchone()[0]


def _steps(seen: list[tuple[str, str]], phase: str) -> dict[str, list[str]]:
    """``{leaf: [kind, …]}`` from the purge's ``phase`` steps (detail ``<leaf> <kind> <ms>``)."""
    out: dict[str, list[str]] = {}
    for ph, detail in seen:
        if ph == phase:
            leaf, kind, _ms = detail.split()
            out.setdefault(leaf, []).append(kind)
    return out


def _parked(db) -> list[str]:
    with db.connection() as conn:
        return [r[0] for r in conn.execute(
            "SELECT relname FROM pg_class WHERE relnamespace = 'retention_reclaim'::regnamespace AND relkind = 'r' "
            "ORDER BY relname")]


def test_purged_leaves_are_parked_out_of_reach_then_their_files_go_one_at_a_time(fresh):
    """A purged leaf is detached and moved to ``retention_reclaim`` (its rows gone from the log, no role but the
    owner can reach it, even one granted SELECT on the leaf itself), then ``reclaim`` drops each index, biggest
    first, then the table; the bytes reclaimed are the bytes the steps recorded."""
    db, bus = fresh
    _seed_mix(db, bus, tenants=("t1", "t2"))
    reader = f"reader_{uuid.uuid4().hex[:8]}"
    with db.connection() as conn:
        conn.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(reader)))
        conn.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {}").format(sql.Identifier(reader)))
    parent_indexes = {t: _leaf_indexes(db, f"{t}_short_lived") for t in TABLES}
    seen: list[tuple[str, str]] = []
    parked_while: list[str] = []

    def step(phase: str, detail: str) -> None:
        seen.append((phase, detail))
        if phase == "reclaiming":  # every leaf parked, none reclaimed yet: the reader tries one
            parked_while.extend(_parked(db))
            with db.connection() as conn:  # parked indexes carry names no later leaf can be given (rr_<oid>)
                names = conn.execute("SELECT i.relname, i.oid FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid "
                                     "JOIN pg_class t ON t.oid = x.indrelid "
                                     "WHERE t.relnamespace = 'retention_reclaim'::regnamespace").fetchall()
            assert names and all(name == f"rr_{oid}" for name, oid in names)
            with db.connection() as conn, pytest.raises(psycopg.errors.InsufficientPrivilege,
                                                        match="schema retention_reclaim"):
                conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(reader)))
                conn.execute(sql.SQL("SELECT count(*) FROM retention_reclaim.{}").format(
                    sql.Identifier(parked_while[0])))

    try:
        report = run_purge(db, bus, POLICY, as_of=AS_OF, dry_run=False, step=step)
        dropped = _steps(seen, "dropping")
        assert set(parked_while) == set(dropped) and len(dropped) == report.partitions_dropped > 0
        assert all(kinds == ["detach", "park"] for kinds in dropped.values()), dropped
        reclaimed = _steps(seen, "reclaim")
        assert set(reclaimed) == set(dropped) and _parked(db) == []
        for leaf, kinds in reclaimed.items():
            table = next(t for t in sorted(TABLES, key=len, reverse=True) if leaf.startswith(t + "_"))
            if "_short_lived_" in leaf:
                assert kinds == ["index"] * parent_indexes[table] + ["table"], (leaf, kinds)
            else:
                assert kinds[-1] == "table" and kinds.count("index") > 1, (leaf, kinds)
        with db.connection() as conn:
            drops = conn.execute("SELECT status, bytes FROM retention_step WHERE run_id = %s AND action = 'drop'",
                                 (report.run_id,)).fetchall()
            left = conn.execute("SELECT count(*) FROM pg_class WHERE relname = ANY (%s)", (list(dropped),)).fetchone()
        assert left[0] == 0 and all(status == "done" and nbytes > 0 for status, nbytes in drops)
        assert report.bytes_freed == sum(nbytes for _s, nbytes in drops) == report.reclaimed_bytes > 0
    finally:
        with db.connection() as conn:
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(reader)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(reader)))


def test_the_reclaim_keeps_to_its_rate(fresh):
    """At ``reclaim_mb_per_s`` the file removal takes at least bytes / rate (it sleeps between files)."""
    db, bus = fresh
    _seed_mix(db, bus)
    rate = 2.0
    report = run_purge(db, bus, POLICY.model_copy(update={"reclaim_mb_per_s": rate}), as_of=AS_OF, dry_run=False)
    floor = report.reclaimed_bytes / (rate * 2**20)
    assert report.reclaimed_bytes > 0 and _parked(db) == []
    assert report.reclaim_seconds >= floor * 0.95, (report.reclaim_seconds, floor)


@pytest.mark.parametrize("crash_in", ["park", "reclaim"])
def test_a_crash_before_the_park_or_between_two_file_drops_is_finished_by_the_next_run(fresh, crash_in):
    """Crash after the detach, before the park: the next run parks and reclaims the leaf, with the counts taken
    before the detach. Crash after the second index drop of the reclaim: the parked table keeps its other files
    until the next run reclaims them; the rows were gone either way and nothing is counted twice."""
    db, bus = fresh
    _seed_mix(db, bus)
    leaf = f"command_log_short_lived_p{OLD:%Y%m%d}"
    with db.connection() as conn:
        rows = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(leaf))).fetchone()[0]
    indexes = _leaf_indexes(db, leaf)
    assert rows > 0 and indexes >= 3
    seen = []

    def crash(phase, detail):
        if crash_in == "park" and phase == "dropping" and detail.startswith(leaf + " detach"):
            raise Crash(f"injected after {detail}")
        if crash_in == "reclaim" and phase == "reclaim" and detail.startswith(leaf + " index"):
            seen.append(detail)
            if len(seen) == 2:
                raise Crash(f"injected after {detail}")

    with pytest.raises(Crash):
        run_purge(db, bus, POLICY, as_of=AS_OF, step=crash, dry_run=False)
    with db.connection() as conn:
        where = conn.execute("SELECT n.nspname, c.relispartition, (SELECT count(*) FROM pg_index x "
                             "WHERE x.indrelid = c.oid) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                             "WHERE c.relname = %s AND c.relkind = 'r'", (leaf,)).fetchone()
        step_row = conn.execute("SELECT status, rows FROM retention_step WHERE partition_name = %s", (leaf,)).fetchone()
        running = conn.execute("SELECT count(*) FROM retention_run WHERE status = 'running'").fetchone()[0]
    if crash_in == "park":  # detached in public, its step still 'detaching', the run unfinished
        assert where == ("public", False, indexes) and step_row == ("detaching", rows) and running == 1
    else:  # parked with two indexes gone; the run itself had finished (rows gone, Purge logged)
        assert where == ("retention_reclaim", False, indexes - 2) and step_row == ("done", rows) and running == 0
    seen_later: list[tuple[str, str]] = []
    later = run_purge(db, bus, RetentionPolicy(short_lived_days="never", long_lived_days="never",
                                               reclaim_mb_per_s=0), as_of=AS_OF + timedelta(days=1), dry_run=False,
                      step=lambda phase, detail: seen_later.append((phase, detail)))
    assert bool(later.resumed) == (crash_in == "park") and later.reclaimed_bytes > 0
    if crash_in == "reclaim":  # the left-over reclaim comes first, before anything of the new run
        assert [p for p, _ in seen_later if p.startswith("reclaiming")][:1] == ["reclaiming-left"]
    with db.connection() as conn:
        assert conn.execute("SELECT count(*) FROM pg_class WHERE relname = %s", (leaf,)).fetchone()[0] == 0
        status, nbytes, n = conn.execute("SELECT status, bytes, rows FROM retention_step WHERE partition_name = %s",
                                         (leaf,)).fetchone()
        assert conn.execute("SELECT count(*) FROM retention_run WHERE status = 'running'").fetchone()[0] == 0
        logged = conn.execute("SELECT cmd_body->'counts' FROM command_log WHERE cmd_class = 'retention.Purge' "
                              "ORDER BY started_at LIMIT 1").fetchone()[0]
    assert status == "done" and nbytes > 0 and n == rows and _parked(db) == []
    assert sum(r["rows"] for r in logged if r["table"] == "command_log") >= rows


def test_the_purge_creates_no_partition_and_the_cleanup_creates_them_before_it(fresh):
    """Partitions ahead are a step of their own (``cleanup.ensure_partitions_ahead``), run by the cleanup before the
    export and the purge; ``run_purge`` itself attaches nothing, so no ``ATTACH PARTITION`` falls in its window."""
    from commandlog.retention.cleanup import DAYS_AHEAD, ensure_partitions_ahead, run_cleanup
    from storage.partitions import list_partitions

    db, bus = fresh

    def leaves() -> set[str]:
        with psycopg.connect(db.url, autocommit=True) as conn:
            return {p.name for t in TABLES for r in ("short_lived", "long_lived") for p in list_partitions(conn, t, r)}

    keep_all = RetentionPolicy(short_lived_days="never", long_lived_days="never")
    before = leaves()
    run_purge(db, bus, keep_all, dry_run=False)
    assert leaves() == before
    run_cleanup(db, bus, keep_all, dry_run=True)
    after = leaves()
    assert after > before
    with psycopg.connect(db.url, autocommit=True) as conn:
        ahead = max(p.upper for p in list_partitions(conn, "command_log", "short_lived"))
    assert ahead >= datetime.now(UTC) + timedelta(days=DAYS_AHEAD - 1)
    assert ensure_partitions_ahead(db) == 0 and leaves() == after  # nothing left to create


def _expired_ids(db, table: str, key: str, time_col: str, tenants: tuple[str, ...]) -> set:
    cut = {"short_lived": AS_OF - timedelta(days=10), "long_lived": AS_OF - timedelta(days=60)}
    with db.connection() as conn:
        return {r[0] for r in conn.execute(sql.SQL(
            "SELECT {k} FROM {t} WHERE tenant_id = ANY(%s) AND ((retention = 'short_lived' AND {c} < %s) "
            "OR (retention = 'long_lived' AND {c} < %s))").format(
                k=sql.Identifier(key), t=sql.Identifier(table), c=sql.Identifier(time_col)),
            (list(tenants), cut["short_lived"], cut["long_lived"]))}


def _helper_thread(db, helpers: list[threading.Thread]):
    """A ``launch`` starting a helper (``help_purge``) of the purge in a thread of its own, as a helper run would."""
    def launch(run_id: int) -> None:
        helpers.append(threading.Thread(target=help_purge, args=(db, run_id), kwargs={"owner": "helper"}))
        helpers[-1].start()
    return launch


@pytest.mark.parametrize("fan", ["two takers", "a taker and a helper"])
def test_a_purge_during_a_fanned_out_export_neither_loses_nor_resurrects_rows(fresh, tmp_path, fan):
    """The export's units and the purge's units at once (the purge's with two takers, or one taker and a helper)."""
    db, bus = fresh
    helpers: list[threading.Thread] = []
    purge_fan = FanOut(takers=2) if fan == "two takers" else FanOut(takers=1, launch=_helper_thread(db, helpers))
    lake = str(tmp_path / "lake")
    _seed_mix(db, bus, tenants=("t1", "t2"))
    run_export(db, lake)  # t1, t2 in the lake
    _seed_mix(db, bus, tenants=("t3", "t4"))  # committed after it: the next export's range
    purge: dict = {}

    def purge_now(phase: str, detail: str) -> None:
        # Between planning its units and staging them, the export's run is open and holds the lake: the purge
        # deletes in Postgres, then waits for the lake (its lake part comes after the export's publish).
        if phase != "planned" or "thread" in purge:
            return
        purge["thread"] = threading.Thread(target=lambda: purge.setdefault(
            "report", run_purge(db, bus, POLICY, as_of=AS_OF, lake_uri=lake, dry_run=False, fan=purge_fan)))
        purge["thread"].start()
        deadline = time.monotonic() + 120
        with psycopg.connect(db.url, autocommit=True) as conn:
            while not conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
                                   "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
                                   ).fetchone()[0]:
                assert purge["thread"].is_alive() and time.monotonic() < deadline, purge
                time.sleep(0.05)

    run_export(db, lake, step=purge_now, takers=2)
    purge["thread"].join(120)
    assert purge["report"].total_rows > 0
    for helper in helpers:
        helper.join(60)
    owners = {u.owner for u in units_of(db, purge["report"].run_id, kind="retention")}
    assert len(owners) == 2, owners  # the purge's units were taken by both its takers
    keys = (("command_log", "commands", "cmd_uuid", "started_at"),
            ("tenant_command_log", "tenant_commands", "cmd_uuid", "started_at"),
            ("domain_event", "events", "event_uuid", "occurred_at"),
            ("frontend_action", "frontend_actions", "action_uuid", "occurred_at"))
    pg, tables = _snapshot(db), _lake_rows(lake)
    for table, dataset, key, time_col in keys:
        in_lake = _app_ids(tables[dataset], key)
        assert len(in_lake) == len(set(in_lake)), f"{dataset}: a row twice"
        assert set(in_lake) <= pg[table], f"{dataset}: a purged row came back in the lake"
        # t1/t2's expired rows are gone from Postgres (exported before the purge); t3/t4's stay there until they
        # are exported, and left the lake again right after the export published them: those alone are missing.
        assert pg[table] - set(in_lake) == _expired_ids(db, table, key, time_col, ("t3", "t4")), dataset
        assert not _expired_ids(db, table, key, time_col, ("t1", "t2")), table
    # the next purge removes those from Postgres too: the lake is the log again
    run_purge(db, bus, POLICY, as_of=AS_OF, lake_uri=lake, dry_run=False)
    pg, tables = _snapshot(db), _lake_rows(lake)
    for table, dataset, key, _ in keys:
        assert sorted(_app_ids(tables[dataset], key)) == sorted(pg[table]), dataset


def _app_ids(table: pa.Table, key: str) -> list:
    """Row keys of a lake table, the retention commands' own rows left out (as ``_snapshot`` does)."""
    classes = table.column("cmd_class").to_pylist() if "cmd_class" in table.column_names else [""] * table.num_rows
    keys = table.column(key).to_pylist()
    return [u for u, cls in zip(keys, classes, strict=True) if not cls.startswith("retention.")]
