"""Reads on a real streaming hot standby (built by the ``standby`` fixture from the embedded server's binaries):
timelines and the export read it, tenant isolation holds there, the export's watermark stays exact with writers on
the primary, and a lagging or unreachable standby makes reads fall back to the primary with a warning."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import uuid

import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg.conninfo import conninfo_to_dict
from test_export_lake import _lake_uuids, _pg_uuids  # noqa: I001 — the export tests' way of comparing
from writers import write, writers_running

from commandlog.auth.tokens import create_token
from commandlog.bootstrap import open_db
from commandlog.bus import CommandBus
from commandlog.errors import ConfigurationError
from commandlog.journal import entries as journal
from commandlog.journal.export import run_export
from commandlog.settings import Settings
from commandlog.web.app import create_app
from examples.billing import setup
from storage import export_ledger
from storage.lake.arrow_export import DATASETS, SnapshotReader
from storage.postgres import Database
from storage.replica import Replica
from storage.sql_logins import create_login, login_uri


@pytest.fixture
def on_standby(database_factory, standby):
    """``(bus, replica)``: a bus on a fresh primary database whose ``db.replica`` is that database on the standby."""
    url = database_factory()
    db = Database(url=url)
    db.replica = Replica(url=standby.uri(conninfo_to_dict(url)["dbname"]), max_lag_s=30)
    bus = setup(CommandBus(db))
    yield bus, db.replica
    db.close()


@contextlib.contextmanager
def replay_paused(standby):
    """The standby stops applying WAL for the block (it still receives it), then catches up."""
    with psycopg.connect(standby.uri("postgres"), autocommit=True) as conn:
        conn.execute("SELECT pg_wal_replay_pause()")
        try:
            yield
        finally:
            conn.execute("SELECT pg_wal_replay_resume()")
    standby.wait_replayed()


def _ids(page) -> list[str]:
    return [e["cmd_uuid"] for e in page.entries]


def test_timeline_reads_the_standby_and_tenant_isolation_holds_there(on_standby, standby):
    bus, replica = on_standby
    write(bus, "acme", 3)
    write(bus, "globex", 2)
    standby.wait_replayed()
    with replay_paused(standby):
        write(bus, "acme", 1, start=100)  # committed on the primary, not applied on the standby yet
        on_replica = journal.timeline(bus.db, tenant="acme", replica=True)
        on_primary = journal.timeline(bus.db, tenant="acme")
        assert len(on_primary.entries) == 4
        assert len(on_replica.entries) == 3, "the replica read must show the standby's (older) state"
        assert set(_ids(on_replica)) < set(_ids(on_primary))
        assert {e["tenant_id"] for e in on_replica.entries} == {"acme"}
        # The same tenant session on the standby: row-level security there too, whatever the query asks.
        with replica.database.tenant_session("acme") as conn:
            assert conn.execute("SELECT count(*) FROM tenant_command_log WHERE tenant_id = 'globex'").fetchone()[0] == 0
            assert conn.execute("SELECT count(*) FROM tenant_command_log").fetchone()[0] == 3
    # The web timeline goes the same way: a tenant token reads its own tenant only, from the standby.
    with replay_paused(standby):
        write(bus, "acme", 1, start=200)
        client = TestClient(create_app(db=bus.db, bus=bus))
        token = create_token(bus.db, tenant="acme", role="viewer")
        body = client.get("/api/journal", headers={"Authorization": f"Bearer {token}"}).json()
        assert len(body["entries"]) == 4  # customers 1-3 and 100; not 200, written after this pause
        assert {e["tenant_id"] for e in body["entries"]} == {"acme"}


def test_a_tenant_sql_login_on_the_standby_sees_one_tenant(on_standby, standby):
    bus, replica = on_standby
    write(bus, "acme", 2)
    write(bus, "globex", 3)
    role = f"login_{uuid.uuid4().hex[:8]}"
    create_login(bus.db, role_name=role, tenant_id="globex", password="s3cret-pass-word", created_by="test")
    standby.wait_replayed()
    with psycopg.connect(login_uri(replica.url, role_name=role, password="s3cret-pass-word")) as conn:
        tenants = [r[0] for r in conn.execute("SELECT tenant_id FROM tenant_command_log").fetchall()]
    assert tenants and set(tenants) == {"globex"}


def test_export_from_the_standby_while_writers_run_is_exact(on_standby, tmp_path):
    bus, replica = on_standby
    write(bus, "acme", 50)
    runs = []
    with writers_running(bus) as counts:
        for _ in range(4):
            runs.append(run_export(bus.db, str(tmp_path)))
    runs.append(run_export(bus.db, str(tmp_path)))  # catches up to everything the writers committed
    assert [r.read_from for r in runs] == ["replica"] * 5
    assert sum(counts) > 3 and sum(sum(r.rows.values()) for r in runs[1:]) > 0  # rows arrived during the runs
    for a, b in zip(runs, runs[1:], strict=False):
        assert b.from_tx == a.to_tx  # consecutive ranges, no gap, no overlap
    for table, dataset, col in (("command_log", "commands", "cmd_uuid"),
                                ("tenant_command_log", "tenant_commands", "cmd_uuid"),
                                ("domain_event", "events", "event_uuid")):
        lake = _lake_uuids(tmp_path, dataset, col)
        assert len(lake) == len(set(lake)), f"duplicates in {dataset}"
        assert set(lake) == set(_pg_uuids(bus.db, table, col)), dataset


def test_a_lagging_standby_never_moves_the_watermark_past_its_replay(on_standby, standby, tmp_path, caplog):
    bus, replica = on_standby
    write(bus, "acme", 5)
    first = run_export(bus.db, str(tmp_path))
    assert first.read_from == "replica"
    with replay_paused(standby):
        write(bus, "acme", 7, start=100)
        with psycopg.connect(bus.db.url) as conn:
            new_tx = [int(r[0]) for r in conn.execute(
                "SELECT tx_id::text FROM command_log WHERE tx_id >= %s::text::xid8", (first.to_tx,)).fetchall()]
        assert len(new_tx) == 7
        with SnapshotReader(replica.url) as reader:
            # The standby's watermark stays below every transaction it has not applied, and sees none of its rows.
            assert reader.xmin() <= min(new_tx)
            assert reader.count(DATASETS["commands"], from_tx=first.to_tx, to_tx=reader.xmin()) == 0
        # Lagging past the limit: the export reads the primary instead (and says so) rather than waiting forever.
        replica.max_lag_s = 0.5
        with caplog.at_level(logging.WARNING, logger="storage.replica"):
            second = run_export(bus.db, str(tmp_path))
        assert second.read_from == "primary" and second.rows["commands"] == 7
        assert any("not used, reading the primary" in r.getMessage() for r in caplog.records)
    replica.max_lag_s = 30
    write(bus, "acme", 3, start=200)
    third = run_export(bus.db, str(tmp_path))  # back on the standby, from the primary's bound
    assert third.read_from == "replica" and third.from_tx == second.to_tx and third.rows["commands"] == 3
    lake = _lake_uuids(tmp_path)
    assert len(lake) == len(set(lake)) == 15 and set(lake) == set(_pg_uuids(bus.db))
    assert [r.snapshot_id for r in export_ledger.runs(bus.db, str(tmp_path))] == [
        third.snapshot_id, second.snapshot_id, first.snapshot_id]


def test_an_unreachable_standby_falls_back_to_the_primary_with_a_warning(database_factory, tmp_path, caplog):
    db = Database(url=database_factory())
    db.replica = Replica(url=f"postgresql://postgres@/nowhere?host={tmp_path}/no-socket-here", max_lag_s=1)
    bus = setup(CommandBus(db))
    write(bus, "acme", 4)
    with caplog.at_level(logging.WARNING, logger="storage.replica"):
        page = journal.timeline(db, tenant="acme", replica=True)
        result = run_export(db, str(tmp_path / "lake"))
    assert len(page.entries) == 4
    assert result.read_from == "primary" and result.rows["commands"] == 4
    warnings = [r.getMessage() for r in caplog.records if "does not answer" in r.getMessage()]
    assert warnings and "no-socket-here" in warnings[0]
    db.close()


def test_the_monitor_backfill_and_retention_stay_on_the_primary(on_standby, standby, tmp_path):
    bus, replica = on_standby
    write(bus, "acme", 2)
    standby.wait_replayed()
    with replay_paused(standby):
        write(bus, "acme", 2, start=10)
        assert len(journal.timeline(bus.db, tenant="acme").entries) == 4  # default: the primary
        result = run_export(bus.db, str(tmp_path), replica=False)  # what retention's cleanup asks for
        assert result.read_from == "primary" and result.rows["commands"] == 4


def test_the_cli_timeline_reads_the_standby_named_by_cmdlog_replica_url(on_standby, standby, tmp_path):
    bus, replica = on_standby
    write(bus, "acme", 2)
    standby.wait_replayed()
    env = {**os.environ, "CMDLOG_DATABASE_URL": bus.db.url, "CMDLOG_REPLICA_URL": replica.url,
           "CMDLOG_HOME": str(tmp_path / "home")}
    cmdlog = [sys.executable, "-m", "commandlog.cli", "journal", "timeline", "--tenant", "acme", "--format", "json"]
    with replay_paused(standby):
        write(bus, "acme", 1, start=50)
        out = subprocess.run(cmdlog, env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert len(json.loads(out.stdout)["entries"]) == 2  # the standby's view, not the primary's 3
    out = subprocess.run(cmdlog, env={**env, "CMDLOG_REPLICA_URL": ""}, capture_output=True, text=True, timeout=120)
    assert len(json.loads(out.stdout)["entries"]) == 3


@pytest.mark.parametrize("value", ["soon", "0", "-3", "nan", "inf"])
def test_a_bad_replica_max_lag_is_refused_naming_the_variable(value):
    with pytest.raises(ConfigurationError, match="CMDLOG_REPLICA_MAX_LAG"):
        Settings.from_env({"CMDLOG_REPLICA_MAX_LAG": value})


def test_open_db_attaches_the_replica_of_the_settings(database_factory, tmp_path):
    url = database_factory()
    settings = Settings.from_env({"CMDLOG_DATABASE_URL": url, "CMDLOG_HOME": str(tmp_path),
                                  "CMDLOG_REPLICA_URL": "postgresql://postgres@/x?host=/nowhere",
                                  "CMDLOG_REPLICA_MAX_LAG": "2.5"})
    db = open_db(settings)
    try:
        assert db.replica is not None and db.replica.max_lag_s == 2.5 and "nowhere" in db.replica.url
    finally:
        db.close()
    plain = open_db(Settings.from_env({"CMDLOG_DATABASE_URL": url, "CMDLOG_HOME": str(tmp_path)}))
    assert plain.replica is None
    plain.close()


def test_a_read_cut_off_on_the_standby_is_answered_by_the_primary(on_standby, standby, caplog):
    bus, replica = on_standby
    write(bus, "acme", 3)
    standby.wait_replayed()
    assert len(journal.timeline(bus.db, tenant="acme", replica=True).entries) == 3  # the standby's pool is open
    with psycopg.connect(standby.uri("postgres"), autocommit=True) as conn:  # the standby drops its sessions
        killed = conn.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = %s",
                              (conninfo_to_dict(replica.url)["dbname"],)).fetchone()[0]
    assert killed >= 1
    with caplog.at_level(logging.WARNING, logger="storage.replica"):
        page = journal.timeline(bus.db, tenant="acme", replica=True)
    assert len(page.entries) == 3
    assert any("not used, reading the primary" in r.getMessage() for r in caplog.records)


def test_an_export_cut_off_on_the_standby_is_staged_again_from_the_primary(on_standby, standby, tmp_path, caplog):
    bus, replica = on_standby
    write(bus, "acme", 20)
    write(bus, "globex", 5)
    dbname = conninfo_to_dict(replica.url)["dbname"]

    def cut_off(phase, detail):  # a unit's snapshot is open on the standby: it ends the session (as a conflict would)
        if (phase, detail) == ("reading", "commands:replica"):
            with psycopg.connect(standby.uri("postgres"), autocommit=True) as conn:
                conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (dbname,))

    with caplog.at_level(logging.WARNING, logger="commandlog.journal.export_units"):
        result = run_export(bus.db, str(tmp_path), step=cut_off)
    assert result.read_from == "primary" and result.rows["commands"] == 25 and result.rows["tenant_commands"] == 25
    assert any("failed" in r.getMessage() and "from the primary" in r.getMessage() for r in caplog.records)
    for table, dataset, col in (("command_log", "commands", "cmd_uuid"),
                                ("tenant_command_log", "tenant_commands", "cmd_uuid"),
                                ("domain_event", "events", "event_uuid")):
        lake = _lake_uuids(tmp_path, dataset, col)
        assert len(lake) == len(set(lake)) and set(lake) == set(_pg_uuids(bus.db, table, col)), dataset
    again = run_export(bus.db, str(tmp_path))  # the next run is on the standby again, from that run's bound
    assert again.read_from == "replica" and again.from_tx == result.to_tx and sum(again.rows.values()) == 0
