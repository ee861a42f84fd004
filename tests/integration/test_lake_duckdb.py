"""The lake writer and the DuckDB journal on hand-built lakes in tmp_path (no Postgres): tenant ids with path
tricks, idempotent publishing, manifests, empty datasets, the pyarrow-filesystem (non-local) path."""

from __future__ import annotations

import glob
import uuid

import duckdb
import pyarrow as pa
import pytest

from storage.lake.datasets import Lake, LakeError
from storage.lake.duckdb_journal import NoLakeError, SqlError, UnknownTenantError, lake_tenants, open_journal, query

TENANTS = ["acme", "../acme", "acme/..", "x'y", "a=b", "*"]


def _tenant_rows(tenant: str, n: int) -> dict:
    return {"cmd_uuid": [str(uuid.uuid4()) for _ in range(n)], "cmd_class": ["billing.X"] * n,
            "tenant_id": [tenant] * n, "retention": ["long_lived"] * n, "day": ["2026-11-20"] * n}


@pytest.fixture
def lake(tmp_path) -> Lake:
    """A lake with tenant_commands for TENANTS (i+1 rows each) and 5 commands; published with a manifest."""
    lake = Lake(str(tmp_path / "lake"))
    cols = {k: sum((_tenant_rows(t, i + 1)[k] for i, t in enumerate(TENANTS)), []) for k in _tenant_rows("x", 0)}
    table = pa.table(cols)
    files = lake.write_dataset(pa.RecordBatchReader.from_batches(table.schema, table.to_batches()),
                               dataset="tenant_commands", partition_by=["tenant_id", "retention", "day"], snapshot_id=1)
    commands = pa.table({"cmd_uuid": [str(uuid.uuid4()) for _ in range(5)], "retention": ["permanent"] * 5,
                         "day": ["2026-11-21"] * 5})
    files += lake.write_dataset(pa.RecordBatchReader.from_batches(commands.schema, commands.to_batches()),
                                dataset="commands", partition_by=["retention", "day"], snapshot_id=1)
    assert lake.publish(files, snapshot_id=1) == len(files)
    lake.write_manifest(1, files)
    return lake


def test_each_tenant_id_is_one_directory_level_whatever_it_contains(lake):
    dirs = glob.glob(f"{lake.root}/tenant_commands/*")
    assert len(dirs) == len(TENANTS) and all("/tenant_id=" in d for d in dirs)
    assert sorted(lake_tenants(lake)) == sorted(TENANTS)


@pytest.mark.parametrize("tenant", TENANTS)
def test_tenant_view_holds_exactly_that_tenants_rows(lake, tenant):
    con = open_journal(lake, tenant=tenant)
    rows = query(con, "select tenant_id, count(*) n from tenant_commands group by 1").read_all().to_pylist()
    assert rows == [{"tenant_id": tenant, "n": TENANTS.index(tenant) + 1}]


@pytest.mark.parametrize("crafted", ["acme/../..", "%2E%2E%2Facme", "acme ", "ACME", "acme%"])
def test_near_miss_tenant_ids_are_unknown(lake, crafted):
    with pytest.raises(UnknownTenantError, match="unknown tenant"):
        open_journal(lake, tenant=crafted)


def test_empty_datasets_are_typed_empty_views(lake):
    con = open_journal(lake)
    assert query(con, "select count(*) n from frontend_actions where action = 'x'").read_all().to_pylist() == [{"n": 0}]
    assert query(con, "select count(*) n from commands").read_all().to_pylist() == [{"n": 5}]
    with pytest.raises(SqlError, match="tenant_commands"):
        query(con, "select * from tenant_commands")


def test_publish_is_idempotent_and_detects_lost_files(lake):
    _, files = lake.manifest()
    assert lake.publish(files, snapshot_id=1) == 0
    lake.delete(files[:1])
    with pytest.raises(LakeError, match="neither staged nor published"):
        lake.publish(files, snapshot_id=1)


def test_a_missing_lake_says_to_export_first(tmp_path):
    with pytest.raises(NoLakeError, match="run `cmdlog export` first"):
        open_journal(Lake(str(tmp_path / "nothing")))


def test_merge_keeps_every_row_of_a_partition(lake):
    _, files = lake.manifest()
    acme = [f for f in files if f.partition.get("tenant_id") == "x'y"]
    merged = lake.merge(acme * 3, snapshot_id=9, dataset="tenant_commands", partition_dir="tenant_id=x%27y/r")
    assert merged.rows == 3 * sum(f.rows for f in acme)


def test_non_local_lakes_are_read_through_pyarrow_with_duckdb_file_access_off(lake, monkeypatch):
    monkeypatch.setattr(Lake, "is_local", property(lambda self: False))
    con = open_journal(lake, tenant="../acme")
    assert query(con, "select count(*) n from tenant_commands").read_all().to_pylist() == [{"n": 2}]
    path = glob.glob(f"{lake.root}/tenant_commands/**/*.parquet", recursive=True)[0]
    with pytest.raises(SqlError, match="Permission"):
        query(con, f"select * from read_parquet('{path}')")
    with pytest.raises(duckdb.Error):
        con.execute("SET enable_external_access = true")


def test_a_staged_table_and_every_folder_up_to_the_root_are_private(lake):
    import os
    import stat

    os.chmod(lake.root, 0o755)  # a lake made before the rule: its root is narrowed by the next write
    staged = lake.stage_table(pa.table({"x": [1]}), snapshot_id=7, dataset="commands",
                              path="retention=short_lived/day=2026-11-21/r0000000007-0.parquet")
    path = lake.abspath(lake.staging_dir(7), "commands", staged.path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    folder = os.path.dirname(path)
    while True:
        assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700, folder
        if folder == lake.root:
            break
        folder = os.path.dirname(folder)
