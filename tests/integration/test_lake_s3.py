"""The lake on object storage, end to end against a local S3 endpoint (moto's server, ``s3_server`` in conftest):
export, compaction, the DuckDB journal (its own Parquet reader through the registered s3fs), reports equal to a
local lake's, the ``--tenant`` lock-down attacked on S3, the CLI with ``CMDLOG_LAKE_URI=s3://…``, retention's lake
purge and ``verify --lake``. Credentials reach the code only through the AWS variables the fixture sets.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import boto3
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from commandlog.bus import CommandBus
from commandlog.context import ExecutionContext
from commandlog.integrity import keys, seal
from commandlog.integrity.lake import verify_lake
from commandlog.journal.analytics import REPORTS, lake_connection, reports
from commandlog.journal.export import run_compaction, run_export
from commandlog.settings import Settings
from examples.billing import commands as c
from examples.billing import setup
from examples.billing.demo import seed, tenant_ids
from storage.frontend_actions import FrontendActionRow, insert_actions
from storage.lake.datasets import Lake, LakeError
from storage.lake.duckdb_journal import SqlError, open_journal, query
from storage.postgres import Database

ME, OTHER = tenant_ids(2)
TABLES = {"commands": "command_log", "events": "domain_event", "frontend_actions": "frontend_action",
          "tenant_commands": "tenant_command_log"}
CMDLOG = str(Path(sys.executable).with_name("cmdlog"))


def _s3(server):
    env = server.env()
    return boto3.client("s3", endpoint_url=server.url, region_name=env["AWS_REGION"],
                        aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])


def _keys(server, bucket: str) -> list[str]:
    pages = _s3(server).get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


def _live_commands(bus, n: int) -> None:
    for tenant in (ME, OTHER):
        ctx = ExecutionContext(tenant_id=tenant, actor_id=f"alice@{tenant}")
        for i in range(n):
            bus.execute(c.RecordLogin(user_id=f"alice@{tenant}", ip=f"10.0.0.{i}"), ctx)
    now = dt.datetime.now(dt.UTC)
    with bus.db.connection() as conn:
        insert_actions(conn, [FrontendActionRow(action_uuid=uuid.uuid4(), tenant_id=t, actor_id=f"ann@{t}",
                                                action="invoice.opened", payload_json='{"invoice": 1}',
                                                correlation_id=None, occurred_at=now)
                              for t in (ME, OTHER) for _ in range(3)])


@pytest.fixture(scope="module")
def lakes(database_factory, s3_server, tmp_path_factory):
    """``(db, s3 lake, local lake, bucket)``: the same two-tenant activity exported twice (live writes between)
    and compacted, once to a local folder and once to S3."""
    db = Database(url=database_factory())
    bus = setup(CommandBus(db))
    seed(bus, tenants=2, commands=300, days=2)
    bucket = f"lake-{uuid.uuid4().hex[:12]}"
    s3_server.create_bucket(bucket)
    s3_uri, local_uri = f"s3://{bucket}/lake", str(tmp_path_factory.mktemp("local") / "lake")
    _live_commands(bus, 5)
    for uri in (s3_uri, local_uri):
        run_export(db, uri)
    _live_commands(bus, 10)  # a second file in today's partitions, so compaction has work
    for uri in (s3_uri, local_uri):
        run_export(db, uri)
        assert run_compaction(db, uri, min_files=2).replaced > 0
    yield db, Lake(s3_uri), Lake(local_uri), bucket
    db.close()


def _rows(con, sql: str) -> list[dict]:
    return query(con, sql).read_all().to_pylist()


def _pg_count(db, table: str, tenant: str | None = None) -> int:
    with db.connection() as conn:
        if tenant is None:
            return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        return conn.execute(f"SELECT count(*) FROM {table} WHERE tenant_id = %s", (tenant,)).fetchone()[0]


def _urls(lake: Lake, dataset: str, tenant: str | None = None) -> list[str]:
    return [lake.location.duckdb_path(lake.abspath(f.dataset, f.path)) for f in lake.manifest()[1]
            if f.dataset == dataset and (tenant is None or f.partition.get("tenant_id") == tenant)]


def test_the_bucket_holds_the_manifest_files_and_nothing_staged_or_half_written(lakes, s3_server):
    db, s3, local, bucket = lakes
    snapshot, files = s3.manifest()
    keys_ = _keys(s3_server, bucket)
    parquet = {k for k in keys_ if k.endswith(".parquet")}
    assert parquet == {f"lake/{f.dataset}/{f.path}" for f in files}
    assert not [k for k in keys_ if "/_staging/" in k and not k.endswith("/")]  # staging emptied after publishing
    assert not [k for k in keys_ if k.endswith(".tmp")]
    assert any(f.path.rsplit("/", 1)[1].startswith("c") for f in files)  # compacted files are live
    for dataset, table in TABLES.items():  # every row exactly once, as in Postgres and the local lake
        assert sum(f.rows for f in files if f.dataset == dataset) == _pg_count(db, table), dataset
    assert sorted((f.dataset, f.rows) for f in files) == sorted((f.dataset, f.rows) for f in local.manifest()[1])


def test_no_directory_marker_objects_inside_the_datasets(lakes, s3_server):
    _, _, _, bucket = lakes
    markers = [k for k in _keys(s3_server, bucket) if k.endswith("/")]
    assert not [k for k in markers if k.split("/")[1] in TABLES], markers


def test_reports_and_sql_on_s3_equal_the_local_lakes(lakes):
    db, s3, local, _ = lakes
    s3_con, local_con = open_journal(s3), open_journal(local)
    for dataset, table in TABLES.items():
        if dataset != "tenant_commands":
            assert _rows(s3_con, f"SELECT count(*) AS n FROM {dataset}") == [{"n": _pg_count(db, table)}]
    on_s3 = {r.name: r.table.to_pylist() for r in reports(s3_con, limit=1000)}
    on_disk = {r.name: r.table.to_pylist() for r in reports(local_con, limit=1000)}
    assert set(on_s3) == set(REPORTS) and all(on_s3.values())
    assert on_s3 == on_disk
    mine_s3 = {r.name: r.table.to_pylist() for r in reports(open_journal(s3, tenant=ME), tenant=ME, limit=1000)}
    mine_disk = {r.name: r.table.to_pylist() for r in reports(open_journal(local, tenant=ME), tenant=ME, limit=1000)}
    assert mine_s3 == mine_disk and all(mine_s3.values())


def test_duckdb_reads_s3_with_its_own_parquet_reader_and_prunes_partitions(lakes, s3_server):
    _, s3, _, _ = lakes
    con = open_journal(s3)
    plan = " ".join(r["explain_value"] for r in _rows(con, "EXPLAIN SELECT count(*) FROM commands"))
    assert "READ_PARQUET" in plan.upper() or "PARQUET_SCAN" in plan.upper(), plan
    assert "ARROW_SCAN" not in plan.upper()
    files = [f for f in s3.manifest()[1] if f.dataset == "commands"]
    days = sorted({f.partition["day"] for f in files})
    assert len(days) >= 2
    mark = s3_server.mark()
    [row] = _rows(con, f"SELECT count(*) AS n FROM commands WHERE day = DATE '{days[0]}'")
    assert row["n"] == sum(f.rows for f in files if f.partition["day"] == days[0])
    read = [p for m, p in s3_server.request_log(mark) if m == "GET"]
    assert read and all(f"day={days[0]}/" in p for p in read), read  # the other days' files were not opened


def test_a_warm_connection_repeats_a_report_without_a_single_request(lakes, s3_server):
    _, s3, _, _ = lakes
    con = lake_connection(s3.uri)
    first = [r.table for r in reports(con)]
    mark = s3_server.mark()
    again = [r.table for r in reports(con)]
    assert again == first
    assert s3_server.requests(mark) == {}


@pytest.fixture(scope="module")
def session(lakes):
    """A journal session on the S3 lake opened for ME."""
    return open_journal(lakes[1], tenant=ME)


@pytest.mark.parametrize("dataset", TABLES)
def test_a_tenant_session_on_s3_holds_exactly_my_rows(lakes, session, dataset):
    db = lakes[0]
    assert _rows(session, f"SELECT count(*) AS n FROM {dataset} WHERE tenant_id IS DISTINCT FROM '{ME}'") == [{"n": 0}]
    mine = _pg_count(db, TABLES[dataset], ME)
    assert mine > 0 and _pg_count(db, TABLES[dataset], OTHER) > 0
    assert _rows(session, f"SELECT count(*) AS n FROM {dataset}") == [{"n": mine}]


def test_a_tenant_session_on_s3_cannot_open_another_tenants_files_prefix_or_glob(lakes, session, s3_server):
    _, s3, _, bucket = lakes
    theirs = _urls(s3, "tenant_commands", OTHER)[0]
    mine = _urls(s3, "tenant_commands", ME)[0]
    shared = _urls(s3, "commands")[0]
    root = f"s3://{bucket}/lake"
    attacks = [
        f"SELECT * FROM read_parquet('{theirs}')",
        f"SELECT * FROM '{theirs}'",
        "SELECT * FROM read_parquet('s3a://" + theirs.removeprefix("s3://") + "')",  # the other protocol s3fs serves
        f"SELECT * FROM read_parquet('{shared}')",  # a file every tenant shares
        f"SELECT * FROM parquet_metadata('{shared}')",
        f"SELECT * FROM read_parquet('{root}/tenant_commands/tenant_id={OTHER}/**/*.parquet')",
        f"SELECT * FROM read_parquet('{root}/**/*.parquet')",
        f"SELECT * FROM read_parquet('{mine.rsplit('/', 1)[0]}/*.parquet')",  # a glob over my own folder
        f"SELECT * FROM glob('{root}/*')",
        f"SELECT * FROM glob('s3://{bucket}/**')",
        f"SELECT * FROM read_text('{root}/_manifests/*.json')",
        f"SELECT * FROM read_parquet('{mine}/../../../../tenant_id={OTHER}/*/*/*.parquet')",
        f"SELECT * FROM read_parquet('{mine.rsplit('/', 4)[0]}/tenant_id={ME}/../tenant_id={OTHER}/"
        + theirs.split(f"tenant_id={OTHER}/", 1)[1] + "')",
        f"SELECT * FROM query('SELECT * FROM read_parquet(''{theirs}'')')",
    ]
    mark = s3_server.mark()
    for sql in attacks:
        with pytest.raises(SqlError, match="Permission Error"):
            query(session, sql).read_all()
    for sql in (f"SELECT * FROM read_parquet('{s3_server.url}/{theirs.removeprefix('s3://')}')",  # plain HTTP
                "SELECT * FROM read_text('/etc/passwd')"):
        with pytest.raises(SqlError):
            query(session, sql).read_all()
    assert [p for _, p in s3_server.request_log(mark) if f"tenant_id={OTHER}" in p or "_manifests" in p] == []
    assert _rows(session, "SELECT count(*) > 0 AS ok FROM tenant_commands") == [{"ok": True}]


def test_a_tenant_session_on_s3_names_only_my_files_and_cannot_be_unlocked(lakes, session):
    import re

    _, s3, _, _ = lakes
    text = " ".join(r["sql"] for r in _rows(session, "SELECT sql FROM duckdb_views() WHERE NOT internal"))
    text += " ".join(r["value"] or "" for r in _rows(session, "SELECT value FROM duckdb_settings()"))
    named = set(re.findall(r"s3a?://[^'\"\s,\])]+", text))
    assert named and named <= set(_urls(s3, "tenant_commands", ME))
    for sql in ("SET enable_external_access = true", "SET allowed_paths = ['s3://']",
                "SET allowed_directories = ['s3://']", "RESET lock_configuration"):
        with pytest.raises(Exception, match="locked|read-only|not allowed"):
            session.execute(sql)


def test_the_cli_exports_and_reports_on_s3_like_on_a_local_lake(lakes, s3_server, tmp_path):
    db, _, _, bucket = lakes
    base = dict(os.environ, CMDLOG_DATABASE_URL=db.url, CMDLOG_HOME=str(tmp_path / "home"), COLUMNS="200")
    runs = {}
    for name, uri in (("s3", f"s3://{bucket}/cli"), ("local", str(tmp_path / "lake"))):
        env = dict(base, CMDLOG_LAKE_URI=uri)

        def cli(*args, env=env):
            out = subprocess.run([CMDLOG, *args], env=env, capture_output=True, text=True, timeout=180)
            assert out.returncode == 0, out.stdout + out.stderr
            return out.stdout

        exported = json.loads(cli("export", "--json"))
        count = json.loads(cli("journal", "sql", "SELECT count(*) AS n FROM commands", "--format", "json"))
        report = json.loads(cli("journal", "report", "--format", "json", "-n", "1000"))
        mine = json.loads(cli("journal", "report", "--format", "json", "--tenant", ME))
        runs[name] = (exported["export"]["rows"], count, report, mine)
    assert runs["s3"] == runs["local"]
    assert runs["s3"][1] == [{"n": _pg_count(db, "command_log")}]
    assert any(k.startswith("cli/commands/") and k.endswith(".parquet") for k in _keys(s3_server, bucket))


def test_a_lake_uri_with_credentials_options_or_dot_segments_is_refused(s3_server):
    for uri in ("s3://", "s3://key:secret@bucket/lake", "s3://bucket/lake?endpoint_override=x",
                "s3://bucket/../lake", "s3://bucket/a//b"):
        with pytest.raises(LakeError, match="lake URI"):
            Lake(uri)


def test_the_integrity_check_reads_the_s3_lake_and_names_an_edited_object(database_factory, s3_lake, tmp_path):
    db = Database(url=database_factory())
    bus = setup(CommandBus(db))
    seed(bus, tenants=2, commands=80, days=2, now=dt.datetime(2026, 6, 15, 12, 0, tzinfo=dt.UTC))
    settings = Settings.from_env({"CMDLOG_HOME": str(tmp_path / "home")})
    run_export(db, s3_lake)
    seal(db, settings)
    public = keys.existing_signing_key(settings).public_key()
    assert verify_lake(db, public, s3_lake) == []
    lake = Lake(s3_lake)
    target = next(f for f in lake.manifest()[1] if f.dataset == "commands")
    path = lake.abspath(target.dataset, target.path)
    table = pq.read_table(path, filesystem=lake.fs)
    victim = str(table.column("cmd_uuid")[0].as_py())
    actors = table.column("actor_id").to_pylist()
    actors[0] = "mallory"
    pq.write_table(table.set_column(table.schema.get_field_index("actor_id"), "actor_id", pa.array(actors)), path,
                   filesystem=lake.fs)
    findings = verify_lake(db, public, s3_lake)
    assert [(f.kind, f.table, f.key, f.partition) for f in findings] == [
        ("changed", "command_log", victim, f"commands/{target.path}")]
    db.close()


def test_a_retention_purge_removes_expired_rows_from_the_s3_lake_and_keeps_the_rest(database_factory, s3_lake,
                                                                                    s3_server):
    import test_retention as r

    from commandlog.retention.policy import add_hold
    from commandlog.retention.policy import setup as retention_setup
    from commandlog.retention.purge import run_purge
    from storage.migrate import ensure_partitions_between

    db = Database(url=database_factory())
    bus = retention_setup(setup(CommandBus(db)))
    for start, end in ((r.OLD - dt.timedelta(days=31), r.OLD + dt.timedelta(days=1)), (r.MID, r.MID),
                       (r.NEW, r.NEW), (r.AS_OF - dt.timedelta(days=11), r.AS_OF - dt.timedelta(days=10))):
        ensure_partitions_between(db, f"'{start:%Y-%m-%d}'::date", f"'{end:%Y-%m-%d}'::date")
    r._seed_mix(db, bus, tenants=("t1", "t2", "keep"))
    add_hold(bus, tenant="keep", reason="audit")
    run_export(db, s3_lake)
    lake = Lake(s3_lake)
    before = {(f.dataset, f.path) for f in lake.manifest()[1]}
    run_purge(db, bus, r.POLICY, as_of=r.AS_OF, lake_uri=s3_lake, dry_run=False)
    cut = {"short_lived": r.AS_OF - dt.timedelta(days=10), "long_lived": r.AS_OF - dt.timedelta(days=60)}
    con = open_journal(lake)
    for dataset, time_col in (("commands", "started_at"), ("events", "occurred_at"),
                              ("frontend_actions", "occurred_at")):
        rows = _rows(con, f"SELECT tenant_id, retention, {time_col} AS t FROM {dataset}")
        assert rows, dataset
        early = [x for x in rows if x["tenant_id"] != "keep" and x["retention"] != "permanent"
                 and x["t"] < cut[x["retention"]].replace(tzinfo=None)]
        assert early == [], (dataset, early[:3])
        assert any(x["tenant_id"] == "keep" and x["t"] < cut["long_lived"].replace(tzinfo=None) for x in rows)
    in_lake = {x["u"] for x in _rows(con, "SELECT CAST(cmd_uuid AS VARCHAR) AS u FROM commands "
                                          "WHERE cmd_class NOT LIKE 'retention.%'")}
    with db.connection() as conn:
        in_pg = {str(u) for (u,) in conn.execute("SELECT cmd_uuid FROM command_log "
                                                 "WHERE cmd_class NOT LIKE 'retention.%%'")}
    assert in_lake == in_pg
    after = {(f.dataset, f.path) for f in lake.manifest()[1]}
    assert before - after  # whole expired partitions left the manifest
    bucket = s3_lake.removeprefix("s3://").split("/")[0]
    keys_ = _keys(s3_server, bucket)
    assert {k for k in keys_ if k.endswith(".parquet")} == {f"lake/{d}/{p}" for d, p in after}
    assert not [k for k in keys_ if k.endswith("/")]
    db.close()


def test_late_staging_objects_of_a_published_run_are_swept_by_the_next_run_on_s3(database_factory, s3_lake):
    db = Database(url=database_factory())
    bus = setup(CommandBus(db))
    seed(bus, tenants=2, commands=40, days=2, now=dt.datetime(2026, 6, 15, 12, 0, tzinfo=dt.UTC))
    first = run_export(db, s3_lake)
    lake = Lake(s3_lake)
    late = lake.abspath(lake.staging_dir(first.snapshot_id), "commands", "day=2026-06-15",
                        f"s{first.snapshot_id:010d}-u1a1-0.parquet")
    with lake.fs.open_output_stream(late) as f:  # a taker that lost its unit writes after the run published
        f.write(b"PAR1 late")
    assert lake.staged_snapshots() == [first.snapshot_id]
    run_export(db, s3_lake)
    assert lake.staged_snapshots() == []
    assert lake.fs.get_file_info(late).type == pafs.FileType.NotFound
    db.close()
