"""The lake export on real Postgres, read back with pyarrow: exactness under concurrent writers and crashes,
tenant partitioning, no sensitive values in ``commands``, compaction."""

from __future__ import annotations

import glob
import os

import pyarrow.dataset as ds
import pytest
from dbhelpers import seeded_bus
from writers import write, writers_running

from commandlog.context import ExecutionContext
from commandlog.journal.export import run_compaction, run_export
from examples.billing import commands as c
from storage import export_ledger
from storage.lake.datasets import Lake


class Crash(Exception):
    """Injected failure."""


@pytest.fixture
def fresh(database_factory):
    """A bus on a fresh database (exact row counts), with a little seeded history."""
    yield from seeded_bus(database_factory(), tenants=3, commands=600, days=3)


def _pg_uuids(db, table="command_log", col="cmd_uuid") -> list[str]:
    with db.connection() as conn:
        return [str(r[0]) for r in conn.execute(f"SELECT {col} FROM {table}").fetchall()]


def _lake_uuids(lake_dir, dataset="commands", col="cmd_uuid") -> list[str]:
    files = glob.glob(f"{lake_dir}/{dataset}/**/*.parquet", recursive=True)
    if not files:
        return []
    return [str(u) for u in ds.dataset(files, format="parquet").to_table(columns=[col]).column(col).to_pylist()]




def test_export_while_writers_run_matches_postgres_exactly(fresh, tmp_path):
    with writers_running(fresh) as counts:
        for _ in range(3):
            run_export(fresh.db, str(tmp_path))
    run_export(fresh.db, str(tmp_path))
    for table, dataset, col in (("command_log", "commands", "cmd_uuid"),
                                ("tenant_command_log", "tenant_commands", "cmd_uuid"),
                                ("domain_event", "events", "event_uuid")):
        lake = _lake_uuids(tmp_path, dataset, col)
        assert len(lake) == len(set(lake)), f"duplicates in {dataset}"
        assert set(lake) == set(_pg_uuids(fresh.db, table, col)), dataset
    assert sum(counts) > 3  # the writers really wrote during the exports


def test_crash_while_staging_leaves_nothing_visible_and_rerun_is_exact(fresh, tmp_path):
    def crash(phase, detail):
        if phase == "units":  # the run's main thread, while (or once) its units are staged
            raise Crash(detail)

    with pytest.raises(Crash):
        run_export(fresh.db, str(tmp_path), step=crash)
    assert glob.glob(f"{tmp_path}/commands/**/*.parquet", recursive=True) == []
    assert glob.glob(f"{tmp_path}/_staging/**/*.parquet", recursive=True)  # files were written, not published
    assert Lake(str(tmp_path)).manifest() is None
    result = run_export(fresh.db, str(tmp_path))
    assert len(result.recovered) == 1
    lake = _lake_uuids(tmp_path)
    assert sorted(lake) == sorted(_pg_uuids(fresh.db))
    assert not os.path.exists(tmp_path / "_staging" / f"{result.recovered[0]:010d}")


def test_crash_while_publishing_is_rolled_forward(fresh, tmp_path):
    def crash(phase, detail):
        if phase == "publishing":
            raise Crash(detail)

    with pytest.raises(Crash):
        run_export(fresh.db, str(tmp_path), step=crash)
    write(fresh, "late-tenant", 3)
    run_export(fresh.db, str(tmp_path))
    lake = _lake_uuids(tmp_path)
    assert sorted(lake) == sorted(_pg_uuids(fresh.db))
    runs = export_ledger.runs(fresh.db, str(tmp_path))
    assert [r.status for r in runs] == ["published", "published"] and runs[1].attempts == 2


def test_every_run_is_a_snapshot_row_with_range_files_and_counts(fresh, tmp_path):
    first = run_export(fresh.db, str(tmp_path))
    second = run_export(fresh.db, str(tmp_path))
    assert first.rows["commands"] == 600 and second.rows["commands"] == 0
    assert second.from_tx == first.to_tx
    row = export_ledger.runs(fresh.db, str(tmp_path))[1]
    assert row.snapshot_id == first.snapshot_id and len(row.files) == first.files
    assert row.row_counts["datasets"]["commands"] == 600


def test_tenant_commands_are_partitioned_by_tenant_first(fresh, tmp_path):
    run_export(fresh.db, str(tmp_path))
    tenants = sorted(os.listdir(tmp_path / "tenant_commands"))
    assert tenants == ["tenant_id=acme", "tenant_id=globex", "tenant_id=initech"]
    acme = ds.dataset(str(tmp_path / "tenant_commands" / "tenant_id=acme"), partitioning="hive").to_table()
    with fresh.db.connection() as conn:
        expected = {str(r[0]) for r in conn.execute(
            "SELECT cmd_uuid FROM tenant_command_log WHERE tenant_id = 'acme'").fetchall()}
    assert {str(u) for u in acme.column("cmd_uuid").to_pylist()} == expected
    for d in glob.glob(f"{tmp_path}/commands/*/*"):
        assert os.path.basename(os.path.dirname(d)).startswith("retention=")
        assert os.path.basename(d).startswith("day=")


def test_no_sensitive_value_reaches_the_commands_dataset(fresh, tmp_path):
    ctx = ExecutionContext(tenant_id="acme", actor_id="eve@acme")
    fresh.execute(c.UpdatePaymentDetails(customer_id=1, holder="Acme", iban="DE02120300000000202051"), ctx)
    fresh.execute(c.AttachCardToken(customer_id=1, card_token="tok_supersecret_42"), ctx)
    run_export(fresh.db, str(tmp_path))
    commands = ds.dataset(str(tmp_path / "commands"), partitioning="hive").to_table()
    text = str(commands.to_pylist())
    assert "DE02120300000000202051" not in text and "tok_supersecret_42" not in text
    for f in glob.glob(f"{tmp_path}/commands/**/*.parquet", recursive=True):
        raw = open(f, "rb").read()
        assert b"DE02120300000000202051" not in raw and b"tok_supersecret_42" not in raw
    tenant = ds.dataset(str(tmp_path / "tenant_commands"), partitioning="hive").to_table()
    assert "DE02120300000000202051" in str(tenant.column("cmd_body").to_pylist())


def test_compaction_merges_small_files_without_losing_or_duplicating(fresh, tmp_path):
    for k in range(4):
        write(fresh, "acme", 5, start=1000 + 10 * k)
        run_export(fresh.db, str(tmp_path))
    before = Lake(str(tmp_path)).manifest()[1]
    result = run_compaction(fresh.db, str(tmp_path), min_files=2)
    after = Lake(str(tmp_path)).manifest()[1]
    assert result.replaced > result.files > 0 and len(after) < len(before)
    on_disk = glob.glob(f"{tmp_path}/*/**/*.parquet", recursive=True)
    assert len([f for f in on_disk if "/_staging/" not in f]) == len(after)
    lake = _lake_uuids(tmp_path)
    assert sorted(lake) == sorted(_pg_uuids(fresh.db))
    assert run_compaction(fresh.db, str(tmp_path), min_files=2).snapshot_id is None


def test_expired_partitions_leave_the_manifest_then_the_disk(fresh, tmp_path):
    import datetime as dt

    from commandlog.retention.lake import purge_lake
    from commandlog.retention.policy import RetentionPolicy
    from storage.lake.duckdb_journal import open_journal, query

    run_export(fresh.db, str(tmp_path))
    with fresh.db.connection() as conn:
        short = conn.execute("SELECT count(*) FROM command_log WHERE retention = 'short_lived'").fetchone()[0]
        # The lake's day= keys are UTC days of the rows' own times: expire up to the day after the newest one, not
        # the local clock's tomorrow (a day behind UTC for hours in zones west of it).
        newest = conn.execute(
            "SELECT max(d) FROM (SELECT (started_at AT TIME ZONE 'UTC')::date d FROM command_log "
            "WHERE retention = 'short_lived' UNION ALL SELECT (occurred_at AT TIME ZONE 'UTC')::date FROM "
            "domain_event WHERE retention = 'short_lived' UNION ALL SELECT (occurred_at AT TIME ZONE 'UTC')::date "
            "FROM frontend_action WHERE retention = 'short_lived') t").fetchone()[0]
    assert short > 0
    tomorrow = newest + dt.timedelta(days=1)
    policy = RetentionPolicy(short_lived_days=1, long_lived_days="never")  # every short_lived day before tomorrow
    as_of = dt.datetime.combine(tomorrow + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    removed = purge_lake(fresh.db, str(tmp_path), policy, as_of=as_of, dry_run=False)
    assert sum(n for (_, retention), per in removed.items() for n in per.values()) > 0
    assert {retention for _, retention in removed} == {"short_lived"}
    assert glob.glob(f"{tmp_path}/*/retention=short_lived/**/*.parquet", recursive=True) == []
    assert not glob.glob(f"{tmp_path}/commands/retention=short_lived/*")
    con = open_journal(Lake(str(tmp_path)))
    left = query(con, "select count(*) n, count(*) filter (where retention = 'short_lived') s from commands")
    assert left.read_all().to_pylist() == [{"n": 600 - short, "s": 0}]
    assert purge_lake(fresh.db, str(tmp_path), policy, as_of=as_of, dry_run=False) == {}  # a rerun is a no-op
