"""``cmdlog export`` and ``cmdlog journal …`` as subprocesses: outputs, exit codes, read-only and tenant fences."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from commandlog.bus import CommandBus
from examples.billing import setup
from examples.billing.demo import seed
from storage.postgres import Database

CMDLOG = str(Path(sys.executable).with_name("cmdlog"))


@pytest.fixture(scope="module")
def env(database_factory, tmp_path_factory):
    """Environment of a seeded database (acme, globex, initech) and an empty lake."""
    url = database_factory()
    db = Database(url=url)
    seed(setup(CommandBus(db)), tenants=3, commands=300, days=2)
    db.close()
    home = tmp_path_factory.mktemp("home")
    return dict(os.environ, CMDLOG_DATABASE_URL=url, CMDLOG_HOME=str(home), CMDLOG_LAKE_URI=str(home / "lake"),
                COLUMNS="200")


def cmdlog(env, *args, check=None):
    out = subprocess.run([CMDLOG, *args], env=env, capture_output=True, text=True, timeout=120)
    if check is not None:
        assert out.returncode == check, out.stdout + out.stderr
    assert "Traceback" not in out.stderr, out.stderr
    return out


@pytest.fixture(scope="module")
def exported(env):
    before = cmdlog(env, "journal", "sql", "select 1", check=2)
    assert "run `cmdlog export` first" in before.stderr
    cmdlog(env, "export", check=0)
    return env


def test_export_prints_rows_per_dataset_and_a_second_run_finds_nothing_new(exported):
    out = cmdlog(exported, "export", "--json", check=0)
    doc = json.loads(out.stdout)
    assert doc["export"]["rows"]["commands"] == 0 and doc["export"]["snapshot_id"] >= 2


def test_sql_returns_json_csv_and_parquet(exported, tmp_path):
    out = cmdlog(exported, "journal", "sql", "select count(*) AS n from commands", "--format", "json", check=0)
    assert json.loads(out.stdout) == [{"n": 300}]
    out = cmdlog(exported, "journal", "sql", "select cmd_class, count(*) n from commands group by 1 order by 1",
                 "--format", "csv", check=0)
    assert out.stdout.splitlines()[0] == "cmd_class,n"
    target = tmp_path / "r.parquet"
    cmdlog(exported, "journal", "sql", "select * from events", "--format", "parquet", "--out", str(target), check=0)
    assert pq.read_table(target).num_rows > 0


def test_tenant_view_holds_only_that_tenant(exported):
    out = cmdlog(exported, "journal", "sql", "select distinct tenant_id from tenant_commands", "--tenant", "acme",
                 "--format", "json", check=0)
    assert json.loads(out.stdout) == [{"tenant_id": "acme"}]
    out = cmdlog(exported, "journal", "sql", "select 1 from tenant_commands", check=2)
    assert "tenant_commands" in out.stderr  # no --tenant, no view


@pytest.mark.parametrize("crafted", ["../globex", "acme/../globex", "*", "acme%", "globex' OR '1'='1", ""])
def test_crafted_tenant_ids_reach_nothing(exported, crafted):
    out = cmdlog(exported, "journal", "sql", "select count(*) from tenant_commands", "--tenant", crafted, check=2)
    assert "unknown tenant" in out.stderr


@pytest.mark.parametrize("dataset", ["commands", "events", "frontend_actions", "tenant_commands"])
def test_a_tenant_session_holds_no_other_tenants_row_in_any_dataset(exported, dataset):
    out = cmdlog(exported, "journal", "sql", f"select count(*) AS n from {dataset} where tenant_id <> 'acme'",
                 "--tenant", "acme", "--format", "json", check=0)
    assert json.loads(out.stdout) == [{"n": 0}]


def test_tenant_cannot_read_another_tenants_files(exported):
    lake = exported["CMDLOG_LAKE_URI"]
    other = glob.glob(f"{lake}/tenant_commands/tenant_id=globex/**/*.parquet", recursive=True)[0]
    shared = glob.glob(f"{lake}/commands/**/*.parquet", recursive=True)[0]
    for sql in (f"select * from read_parquet('{other}')",
                f"select * from read_parquet('{shared}')",
                "select * from glob('.tmp/*')",
                f"select * from read_parquet('{lake}/tenant_commands/**/*.parquet')",
                f"select * from glob('{lake}/*')",
                "select * from read_text('/etc/passwd')"):
        out = cmdlog(exported, "journal", "sql", sql, "--tenant", "acme", check=2)
        assert "Permission Error" in out.stderr or "disabled" in out.stderr, sql


@pytest.mark.parametrize("sql", [
    "COPY (select * from commands) TO '{tmp}/out.csv'",
    "ATTACH '{tmp}/x.duckdb' AS x",
    "INSTALL httpfs",
    "SET enable_external_access = true",
    "CREATE TABLE t AS SELECT 1",
    "select 1; COPY (select 1) TO '{tmp}/out2.csv'",
    "EXPORT DATABASE '{tmp}/exp'",
])
def test_sql_cannot_write(exported, tmp_path, sql):
    out = cmdlog(exported, "journal", "sql", sql.format(tmp=tmp_path), check=2)
    assert out.stderr.startswith("error:")
    assert list(tmp_path.iterdir()) == []


def test_bad_sql_gives_duckdbs_message_and_exit_2(exported):
    out = cmdlog(exported, "journal", "sql", "selec * from commands", check=2)
    assert "Parser Error" in out.stderr
    out = cmdlog(exported, "journal", "sql", "select nope from commands", check=2)
    assert "Binder Error" in out.stderr


def test_report_runs_every_builtin_analysis(exported):
    out = cmdlog(exported, "journal", "report", "--format", "json", "--tenant", "acme", check=0)
    doc = json.loads(out.stdout)
    assert set(doc) == {"activity_per_actor_day", "command_mix", "failure_rate", "duration_per_class",
                        "most_changed_subjects", "busiest_hours"}
    assert all(r["actor_id"].endswith("@acme") for r in doc["activity_per_actor_day"])
    cmdlog(exported, "journal", "report", check=0)
    out = cmdlog(exported, "journal", "report", "--tenant", "nobody", check=2)
    assert "unknown tenant" in out.stderr


def test_report_says_when_a_table_is_cut_and_how_to_see_more(exported):
    doc = json.loads(cmdlog(exported, "journal", "report", "--format", "json", "-n", "10000", check=0).stdout)
    classes = len(doc["command_mix"])  # every class, read back from the lake
    assert classes > 2
    out = cmdlog(exported, "journal", "report", "-n", "2", check=0)
    assert f"2 of {classes} rows; --limit N shows more" in out.stdout
    whole = cmdlog(exported, "journal", "report", "-n", "10000", check=0)
    assert " rows; --limit N shows more" not in whole.stdout


def test_sql_on_tenant_commands_without_tenant_says_to_add_tenant(exported):
    out = cmdlog(exported, "journal", "sql", "select count(*) from tenant_commands", check=2)
    assert "add --tenant TENANT" in out.stderr and "Catalog Error" not in out.stderr
    out = cmdlog(exported, "journal", "sql", "select count(*) AS n from tenant_commands", "--tenant", "acme",
                 "--format", "json", check=0)
    assert json.loads(out.stdout)[0]["n"] > 0
    out = cmdlog(exported, "journal", "sql", "select * from no_such_table", check=2)
    assert "Catalog Error" in out.stderr and "--tenant" not in out.stderr


def test_timeline_formats_and_bad_filters(exported):
    out = cmdlog(exported, "journal", "timeline", "--tenant", "acme", "--format", "json", "-n", "5", check=0)
    doc = json.loads(out.stdout)
    assert len(doc["entries"]) == 5 and doc["next_cursor"]
    nxt = cmdlog(exported, "journal", "timeline", "--tenant", "acme", "--format", "json", "-n", "5",
                 "--cursor", doc["next_cursor"], check=0)
    assert not {e["cmd_uuid"] for e in doc["entries"]} & {e["cmd_uuid"] for e in json.loads(nxt.stdout)["entries"]}
    out = cmdlog(exported, "journal", "timeline", "--format", "csv", "-n", "3", check=0)
    assert out.stdout.splitlines()[0].startswith("cmd_uuid,started_at") and len(out.stdout.splitlines()) == 4
    cmdlog(exported, "journal", "timeline", "--tenant", "globex", check=0)
    out = cmdlog(exported, "journal", "timeline", "--since", "last week", check=2)
    assert "since" in out.stderr
