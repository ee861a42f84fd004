"""``GET /api/journal/stats`` in-process (TestClient) on a fresh database and a lake in tmp_path: the figures equal
the rows written — from Postgres and from the lake plus the rows exported after it — one tenant's token never sees
another's, and bad windows are refused naming the field."""

from __future__ import annotations

import datetime as dt
import threading

import psycopg
import pytest
from activity_data import assert_figures, expected, hour_floor, plan, write
from fastapi.testclient import TestClient
from psycopg.conninfo import conninfo_to_dict

from commandlog.auth.tokens import create_token
from commandlog.bus import CommandBus
from commandlog.journal import stats
from commandlog.journal.entries import InvalidFilterError
from commandlog.journal.export import run_export
from commandlog.settings import Settings
from commandlog.web import stats as web_stats
from commandlog.web.app import create_app
from examples.billing import setup
from storage import journal_stats as store
from storage.lake.datasets import Lake
from storage.postgres import Database
from storage.replica import Replica

HOURS = 6


@pytest.fixture(scope="module")
def world(database_factory, tmp_path_factory):
    """Tenants A and B: rows exported to the lake, then more rows (one of A's in an early hour) left unexported."""
    db = Database(url=database_factory())
    bus = setup(CommandBus(db))
    # 21:00 five days ago: the six hours always straddle midnight UTC (two lake `day` partitions, two day buckets)
    base = hour_floor(dt.datetime.now(dt.UTC)).replace(hour=21) - dt.timedelta(days=5)
    a, b = "acme-stats", "beta-stats"
    a_rows = plan(a, base, hours=HOURS, n=160, seed=1, actors=["alice", "bob", "carol", "dave"], skip_hours=(1,))
    b_rows = plan(b, base, hours=HOURS, n=70, seed=2, actors=["mallory", "mike"], classes=("billing.RecordLogin",
                                                                                            "billing.RenameCustomer"))
    write(bus, a_rows)
    write(bus, b_rows)
    lake = str(tmp_path_factory.mktemp("stats") / "lake")
    run_export(db, lake)
    a_late = plan(a, base, hours=HOURS, n=25, seed=3, actors=["alice", "erin"], skip_hours=(1,))
    b_late = plan(b, base, hours=HOURS, n=5, seed=4, actors=["mike"], classes=("billing.RecordLogin",))
    write(bus, a_late)  # a history import after the export: started hours ago, committed after the lake's bound
    write(bus, b_late)
    app = create_app(Settings(home=tmp_path_factory.mktemp("home"), lake_uri=lake), db=db, bus=bus)
    with TestClient(app) as client:
        yield {"client": client, "db": db, "bus": bus, "lake": lake, "base": base, "a": a, "b": b,
               "rows": {a: a_rows + a_late, b: b_rows + b_late}, "late": {a: a_late, b: b_late},
               "token": {a: create_token(db, tenant=a, role="viewer"), b: create_token(db, tenant=b, role="viewer"),
                         None: create_token(db, tenant=None, role="admin")}}
    db.close()


def _get(world, who, **params):
    window = {"since": world["base"].isoformat(), "until": (world["base"] + dt.timedelta(hours=HOURS)).isoformat()}
    query = {k: v for k, v in {**window, **params}.items() if v is not None}
    return world["client"].get("/api/journal/stats", params=query,
                               headers={"Authorization": f"Bearer {world['token'][who]}"})


@pytest.mark.parametrize("source", ["postgres", "lake"])
def test_the_figures_are_the_rows_written_per_hour_and_class(world, source):
    r = _get(world, world["a"], source=source)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["source"] == source and body["tenant_id"] == world["a"] and body["bucket"] == "hour"
    assert len(body["buckets"]) == HOURS and body["buckets"][0] == world["base"].isoformat().replace("+00:00", "Z")
    want = expected(world["rows"][world["a"]], world["base"], HOURS)
    assert want["total"][1] == 0 and sum(want["total"]) == 185  # the empty hour is there, zero-filled
    assert_figures(body, want)


def test_the_lake_path_counts_rows_exported_after_it_exactly_once(world):
    body = _get(world, world["a"], source="lake").json()
    assert body["unexported_rows"] == len(world["late"][world["a"]])
    assert body["lake_snapshot"] == Lake(world["lake"]).manifest()[0]
    assert sum(body["total"]) == len(world["rows"][world["a"]])


def test_auto_reads_the_lake_for_a_window_older_than_two_days_and_postgres_for_a_recent_one(world):
    assert _get(world, world["a"]).json()["source"] == "lake"  # the rows start five days ago
    recent = _get(world, world["a"], since=(dt.datetime.now(dt.UTC) - dt.timedelta(hours=3)).isoformat(),
                  until=None).json()
    assert recent["source"] == "postgres" and sum(recent["total"]) == 0


@pytest.mark.parametrize("source", ["postgres", "lake"])
def test_a_tenant_token_sees_only_its_own_tenant(world, source):
    a, b = world["a"], world["b"]
    body = _get(world, b, source=source).json()
    assert body["tenant_id"] == b
    assert_figures(body, expected(world["rows"][b], world["base"], HOURS))
    assert {x["actor_id"] for x in body["top_actors"]} == {"mallory", "mike"}
    assert set(body["classes"]) <= {"billing.RecordLogin", "billing.RenameCustomer"}
    refused = _get(world, b, source=source, tenant=a)
    assert refused.status_code == 403 and refused.json()["detail"].startswith("tenant:")


@pytest.mark.parametrize("source", ["postgres", "lake"])
def test_an_admin_token_sees_every_tenant_in_the_lean_log(world, source):
    body = _get(world, None, source=source).json()
    assert body["tenant_id"] is None
    both = world["rows"][world["a"]] + world["rows"][world["b"]]
    assert_figures(body, expected(both, world["base"], HOURS))


@pytest.mark.parametrize("source", ["postgres", "lake"])
def test_day_buckets_count_each_utc_day(world, source):
    body = _get(world, world["a"], bucket="day", source=source).json()
    assert body["bucket"] == "day" and len(body["buckets"]) == 2  # 21:00 to 03:00
    rows = world["rows"][world["a"]]
    assert body["total"] == [sum(1 for r in rows if r.started_at.date() == world["base"].date()),
                             sum(1 for r in rows if r.started_at.date() > world["base"].date())]


@pytest.mark.parametrize(("params", "field"), [
    ({"bucket": "minute"}, "bucket"),
    ({"since": "yesterday"}, "since"),
    ({"until": "2026-13-40"}, "until"),
    ({"since": "2026-11-02T00:00:00Z", "until": "2026-11-01T00:00:00Z"}, "until"),
    ({"since": "2026-01-01T00:00:00Z", "until": "2026-06-01T00:00:00Z"}, "since"),  # 3,623 hour buckets
    ({"until": "9999-12-31T23:30:00Z"}, "until"),
    ({"top": "0"}, "top"),
    ({"top": "51"}, "top"),
    ({"source": "duckdb"}, "source"),
])
def test_bad_windows_are_refused_naming_the_field(world, params, field):
    r = _get(world, world["a"], **params)
    assert r.status_code == 400, r.text
    assert r.json()["detail"].startswith(f"{field}:"), r.json()


def test_no_token_no_figures(world):
    r = world["client"].get("/api/journal/stats")
    assert r.status_code == 401


@pytest.mark.parametrize("name", ["Tenant", "TENANT", "Tenant_Id", "TENANT_ID", "tenant-id"])
def test_a_tenant_parameter_in_any_case_is_refused(world, name):
    r = _get(world, world["b"], source="postgres", **{name: world["a"]})
    assert r.status_code == 403, r.text
    assert r.json()["detail"].startswith("tenant:")


def _hour_window(world):
    return {"since": world["base"], "until": world["base"] + dt.timedelta(hours=HOURS)}


def test_the_unexported_tail_is_bounded_and_auto_falls_back_to_postgres(world):
    db, a, late = world["db"], world["a"], len(world["late"][world["a"]])
    bound = store.export_bound_at(db, world["lake"], Lake(world["lake"]).manifest()[0])
    win = _hour_window(world)
    assert store.unexported_rows(db, tenant=a, from_tx=bound, max_rows=late, **win).num_rows == late
    assert store.unexported_rows(db, tenant=a, from_tx=bound, max_rows=late - 1, **win) is None
    want = expected(world["rows"][a], world["base"], HOURS)
    at_bound = stats.activity(db, tenant=a, lake_uri=world["lake"], max_unexported=late, **win).to_json()
    assert at_bound["source"] == "lake" and at_bound["unexported_rows"] == late
    over = stats.activity(db, tenant=a, lake_uri=world["lake"], max_unexported=late - 1, **win).to_json()
    assert over["source"] == "postgres" and over["lake_snapshot"] is None
    assert_figures(over, want)
    with pytest.raises(InvalidFilterError, match=r"^source: the lake's export is more than"):
        stats.activity(db, tenant=a, lake_uri=world["lake"], source="lake", max_unexported=late - 1, **win)


@pytest.mark.parametrize(("who", "table", "source"), [
    ("a", "tenant_command_log", "postgres"), (None, "command_log", "postgres"), ("a", "tenant_command_log", "lake"),
])
def test_a_statement_past_the_stats_timeout_is_answered_503(world, tmp_path, who, table, source):
    tenant = world[who] if who else None
    app = create_app(Settings(home=tmp_path, lake_uri=world["lake"], stats_timeout_s=0.3), db=world["db"],
                     bus=world["bus"])
    with TestClient(app) as client, psycopg.connect(world["db"].url) as locker:
        locker.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")  # every read of it waits past the timeout
        guard = threading.Timer(10, locker.rollback)  # without a timeout the read gets through (and fails the test)
        guard.start()
        window = {"since": world["base"].isoformat(),
                  "until": (world["base"] + dt.timedelta(hours=HOURS)).isoformat(), "source": source}
        r = client.get("/api/journal/stats", params=window,
                       headers={"Authorization": f"Bearer {world['token'][tenant]}"})
        assert r.status_code == 503, r.text
        assert r.json()["error"] == "StatsTimeoutError" and "longer than 0.3 s" in r.json()["detail"]
        guard.cancel()
        locker.rollback()
        assert client.get("/api/journal/stats", params=window,
                          headers={"Authorization": f"Bearer {world['token'][tenant]}"}).status_code == 200


def test_lake_windows_beyond_the_gate_wait_then_get_503_while_postgres_ones_go_on(world, monkeypatch):
    gate = stats.LakeGate(slots=1, wait_s=0.2)
    monkeypatch.setattr(web_stats, "LAKE_GATE", gate)
    with gate.slot():  # another request holds the only slot
        busy = _get(world, world["a"], source="lake")
        assert busy.status_code == 503, busy.text
        assert busy.json()["error"] == "StatsBusyError" and busy.json()["detail"].startswith("source:")
        assert _get(world, world["a"], source="postgres").status_code == 200
    freed = _get(world, world["a"], source="lake")
    assert freed.status_code == 200 and freed.json()["source"] == "lake"


def test_the_postgres_figures_are_read_on_a_configured_standby(database_factory, standby):
    url = database_factory()
    db = Database(url=url)
    db.replica = Replica(url=standby.uri(conninfo_to_dict(url)["dbname"]), max_lag_s=30)
    bus = setup(CommandBus(db))
    base = hour_floor(dt.datetime.now(dt.UTC)) - dt.timedelta(days=3)
    window = {"since": base, "until": base + dt.timedelta(hours=2), "source": "postgres"}
    first = plan("acme-standby", base, hours=2, n=20, seed=5, actors=["alice", "bob"])
    write(bus, first)
    standby.wait_replayed()
    primary = Database(url=url)  # the same database without a replica: what the primary holds
    try:
        with psycopg.connect(standby.uri("postgres"), autocommit=True) as control:
            control.execute("SELECT pg_wal_replay_pause()")
            try:
                write(bus, plan("acme-standby", base, hours=2, n=7, seed=6, actors=["carol"]))
                for tenant in ("acme-standby", None):
                    on_standby = stats.activity(db, tenant=tenant, **window).to_json()
                    assert_figures(on_standby, expected(first, base, 2))  # the standby's (older) state
                    assert sum(stats.activity(primary, tenant=tenant, **window).total) == 27
            finally:
                control.execute("SELECT pg_wal_replay_resume()")
        standby.wait_replayed()
    finally:
        primary.close()
        db.close()
