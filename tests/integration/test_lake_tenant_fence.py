"""The lake under ``--tenant``, written as the attack: a journal session opened for one tenant tries to reach another
tenant's rows through every dataset, every helper, every file path and every setting — and gets nothing. Then the
lake's files on disk: private (0700/0600) after an export and a compaction, staging included.

The lake is exported from real Postgres (two seeded tenants plus frontend actions) and read back with DuckDB.
"""

from __future__ import annotations

import datetime as dt
import gc
import glob
import os
import re
import stat
import tempfile
import uuid
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from commandlog.bus import CommandBus
from commandlog.context import ExecutionContext
from commandlog.journal.export import run_compaction, run_export
from examples.billing import commands as c
from examples.billing import setup
from examples.billing.demo import seed, tenant_ids
from storage.frontend_actions import FrontendActionRow, insert_actions
from storage.lake.datasets import Lake
from storage.lake.duckdb_journal import SqlError, open_journal, query
from storage.postgres import Database

ME, OTHER = tenant_ids(2)
DATASETS = {"commands": "command_log", "events": "domain_event", "frontend_actions": "frontend_action",
            "tenant_commands": "tenant_command_log"}


def _actions(db, n: int) -> None:
    now = dt.datetime.now(dt.UTC)
    rows = [FrontendActionRow(action_uuid=uuid.uuid4(), tenant_id=t, actor_id=f"ann@{t}", action="invoice.opened",
                              payload_json='{"invoice": 1}', correlation_id=None, occurred_at=now)
            for t in (ME, OTHER) for _ in range(n)]
    with db.connection() as conn:
        insert_actions(conn, rows)


@pytest.fixture(scope="module")
def exported(database_factory, tmp_path_factory):
    """``(db, lake, modes_seen_while_staged)``: two tenants' activity exported twice and compacted."""
    db = Database(url=database_factory())
    bus = setup(CommandBus(db))
    seed(bus, tenants=2, commands=300, days=2)
    _actions(db, 5)
    lake_dir = tmp_path_factory.mktemp("fence") / "lake"
    staged: list[tuple[str, int]] = []

    def look(phase: str, detail: str) -> None:  # staging files exist now: their modes, before publishing
        if phase == "staged":
            for p in glob.glob(f"{lake_dir}/_staging/**", recursive=True):
                staged.append((p, stat.S_IMODE(os.stat(p).st_mode)))

    run_export(db, str(lake_dir), step=look)
    for tenant in tenant_ids(2):  # live commands now: a second file in today's partitions
        ctx = ExecutionContext(tenant_id=tenant, actor_id=f"alice@{tenant}")
        for i in range(20):
            bus.execute(c.RecordLogin(user_id=f"alice@{tenant}", ip=f"10.0.0.{i}"), ctx)
            bus.execute(c.CreateCustomer(customer_id=1_000_000 + i, name=f"Late {i}", email=f"late{i}@{tenant}.io"),
                        ctx)
    _actions(db, 3)
    run_export(db, str(lake_dir), step=look)
    assert run_compaction(db, str(lake_dir), min_files=2).replaced > 0
    yield db, Lake(str(lake_dir)), staged
    db.close()


@pytest.fixture(scope="module")
def session(exported):
    """A journal session opened for ME."""
    return open_journal(exported[1], tenant=ME)


def _rows(con, sql: str) -> list[dict]:
    return query(con, sql).read_all().to_pylist()


def _pg_count(db, table: str, tenant: str) -> int:
    with db.connection() as conn:
        return conn.execute(f"SELECT count(*) FROM {table} WHERE tenant_id = %s", (tenant,)).fetchone()[0]


def _files(lake: Lake, dataset: str, tenant: str | None = None) -> list[str]:
    _, files = lake.manifest()
    return [lake.abspath(f.dataset, f.path) for f in files
            if f.dataset == dataset and (tenant is None or f.partition.get("tenant_id") == tenant)]


@pytest.mark.parametrize("dataset", DATASETS)
def test_every_dataset_holds_exactly_my_rows_and_none_of_the_other_tenants(exported, session, dataset):
    db = exported[0]
    assert _rows(session, f"SELECT count(*) AS n FROM {dataset} WHERE tenant_id = '{OTHER}'") == [{"n": 0}]
    assert _rows(session, f"SELECT count(*) AS n FROM {dataset} WHERE tenant_id IS DISTINCT FROM '{ME}'") == [{"n": 0}]
    mine = _pg_count(db, DATASETS[dataset], ME)
    assert mine > 0 and _pg_count(db, DATASETS[dataset], OTHER) > 0
    assert _rows(session, f"SELECT count(*) AS n FROM {dataset}") == [{"n": mine}]


def test_every_view_and_table_in_the_catalog_yields_only_my_rows(session):
    names = [r["name"] for r in _rows(session, "SELECT view_name AS name FROM duckdb_views() WHERE NOT internal "
                                               "UNION ALL SELECT table_name FROM duckdb_tables()")]
    assert {"commands", "events", "frontend_actions", "tenant_commands"} <= set(names)
    for name in names:  # the helpers (registered Arrow datasets) included
        others = f"SELECT count(*) AS n FROM {name} WHERE tenant_id IS DISTINCT FROM '{ME}'"
        assert _rows(session, others) == [{"n": 0}], name


def test_reading_another_tenants_files_directly_is_refused(exported, session):
    lake = exported[1]
    theirs = _files(lake, "tenant_commands", OTHER)[0]
    shared = _files(lake, "commands")[0]
    mine = _files(lake, "tenant_commands", ME)[0]
    for sql in (f"SELECT * FROM read_parquet('{theirs}')",
                f"SELECT * FROM '{theirs}'",  # replacement scan
                f"SELECT * FROM read_parquet('{shared}')",  # a file every tenant shares
                f"SELECT * FROM '{shared}'",
                f"SELECT * FROM read_parquet('{lake.root}/**/*.parquet')",
                f"SELECT * FROM glob('{lake.root}/*')",
                f"SELECT * FROM read_text('{lake.root}/_manifests/*.json')",
                f"SELECT * FROM read_parquet('{mine}/../../../../tenant_id={OTHER}/*/*/*.parquet')",
                f"SELECT * FROM parquet_metadata('{shared}')",
                f"SELECT * FROM query('SELECT * FROM read_parquet(''{shared}'')')",
                "SELECT * FROM read_text('/etc/passwd')"):
        with pytest.raises(SqlError, match="Permission Error"):
            query(session, sql).read_all()


def test_view_definitions_and_settings_name_no_file_but_my_own(exported, session):
    lake = exported[1]
    mine = set(_files(lake, "tenant_commands", ME))
    text = " ".join(r["sql"] for r in _rows(session, "SELECT sql FROM duckdb_views() WHERE NOT internal"))
    text += " ".join(r["value"] or "" for r in _rows(session, "SELECT value FROM duckdb_settings()"))
    named = set(re.findall(r"/[^'\"\s,\])]+\.parquet", text))
    assert named and named <= mine
    assert f"tenant_id={OTHER}" not in text
    for dataset in ("commands", "events", "frontend_actions"):
        assert f"{lake.root}/{dataset}/" not in text


@pytest.mark.parametrize("sql", [
    "SET enable_external_access = true",
    "RESET enable_external_access",
    "SET lock_configuration = false",
    "SET allowed_directories = ['/']",
    "PRAGMA enable_external_access",
    "ATTACH '{tmp}/x.duckdb' AS x",
    "COPY (SELECT * FROM tenant_commands) TO '{tmp}/out.parquet'",
    "EXPORT DATABASE '{tmp}/exp'",
    "INSTALL httpfs",
    "LOAD httpfs",
    "CREATE TABLE t AS SELECT 1",
    "SELECT 1; SET enable_external_access = true",
])
def test_statements_that_would_widen_or_write_are_refused(session, tmp_path, sql):
    with pytest.raises(SqlError):
        query(session, sql.format(tmp=tmp_path)).read_all()
    assert list(tmp_path.iterdir()) == []


def test_the_lock_holds_even_for_code_that_bypasses_the_statement_check(session, tmp_path):
    for sql in ("SET enable_external_access = true", "RESET lock_configuration", "SET allowed_paths = ['/']",
                "SET temp_directory = '/tmp'", "SET python_enable_replacements = true"):
        with pytest.raises(duckdb.Error, match="locked"):
            session.execute(sql)
    with pytest.raises(duckdb.Error, match="Permission Error|disabled"):
        session.execute(f"ATTACH '{tmp_path}/x.duckdb' AS x")
    assert list(tmp_path.iterdir()) == []


def test_the_session_still_answers_after_refusals(session):
    for sql in ("SELECT * FROM no_such_table", "SELECT * FROM tenant_commandz", "SELECT getenv('HOME')"):
        with pytest.raises(SqlError):
            query(session, sql).read_all()
    assert _rows(session, "SELECT count(*) > 0 AS ok FROM tenant_commands") == [{"ok": True}]


def test_python_variables_are_not_tables(session):
    stolen = pa.table({"tenant_id": [OTHER]})  # noqa: F841  (what a replacement scan would find by name)
    with pytest.raises(duckdb.CatalogException):
        session.sql("SELECT * FROM stolen").fetchall()
    with pytest.raises(SqlError):
        query(session, "SELECT * FROM python_arrow_scan()").read_all()


def test_a_tenant_session_has_no_temp_directory_to_read_and_says_so_when_memory_runs_out(exported, tmp_path,
                                                                                          monkeypatch):
    monkeypatch.chdir(tmp_path)
    con = open_journal(exported[1], tenant=ME, memory_limit="32MB", threads=1)
    assert _rows(con, "SELECT current_setting('temp_directory') AS d") == [{"d": ""}]
    for sql in (f"SELECT * FROM glob('{tempfile.gettempdir()}/cmdlog-duckdb-*/*')", "SELECT * FROM glob('.tmp/*')"):
        with pytest.raises(SqlError, match="Permission Error"):
            query(con, sql).read_all()
    with pytest.raises(SqlError, match="does not spill to disk"):
        query(con, "SELECT count(*) FROM (SELECT md5(range::VARCHAR) m FROM range(3000000) ORDER BY m)").read_all()
    assert not (tmp_path / ".tmp").exists()


def test_an_admin_session_spills_into_a_private_temp_dir_removed_with_the_connection(exported, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    con = open_journal(exported[1], memory_limit="32MB", threads=1)
    spill = Path(_rows(con, "SELECT current_setting('temp_directory') AS d")[0]["d"])
    assert spill.parent == Path(tempfile.gettempdir()) and spill.name.startswith("cmdlog-duckdb-")
    assert _rows(con, "SELECT count(*) AS n FROM (SELECT md5(range::VARCHAR) m FROM range(3000000) ORDER BY m)") \
        == [{"n": 3_000_000}]
    assert stat.S_IMODE(os.stat(spill).st_mode) == 0o700
    assert not (tmp_path / ".tmp").exists()
    del con
    gc.collect()
    assert not spill.exists()


def test_lake_folders_are_0700_and_files_0600_after_export_and_compaction(exported):
    _, lake, staged = exported
    assert staged and {mode for path, mode in staged} <= {0o700, 0o600}
    modes = {}
    for folder, _dirs, files in os.walk(lake.root):
        modes[folder] = stat.S_IMODE(os.stat(folder).st_mode)
        for f in files:
            modes[os.path.join(folder, f)] = stat.S_IMODE(os.stat(os.path.join(folder, f)).st_mode)
    assert any("/_manifests/" in p for p in modes) and any(Path(p).name.startswith("c") for p in modes)
    wrong = {p: oct(m) for p, m in modes.items() if m != (0o700 if os.path.isdir(p) else 0o600)}
    assert wrong == {}
