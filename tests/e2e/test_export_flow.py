"""The ``export-snapshot`` flow under the session's Prefect test server: lake written, artifacts published,
a rerun exports nothing twice."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pyarrow.dataset as ds

from commandlog.bootstrap import close_runtimes
from commandlog.bus import CommandBus
from examples.billing import setup
from examples.billing.demo import seed
from storage.postgres import Database


def _artifacts(flow_run_id):
    from prefect.client.orchestration import get_client

    async def go():
        async with get_client() as client:
            return [a for a in await client.read_artifacts() if a.flow_run_id == flow_run_id]

    return asyncio.run(go())


def _expected_summary(db, lake: str) -> str:
    """The summary line rebuilt from what the ledger (Postgres) and the lake hold after one export + compaction."""
    with db.connection() as conn:
        runs = {kind: (sid, files, replaced) for kind, sid, files, replaced in conn.execute(
            "SELECT kind, snapshot_id, jsonb_array_length(files), jsonb_array_length(replaced_files) "
            "FROM export_snapshot WHERE lake_uri = %s AND status = 'published'", (lake,)).fetchall()}
    counts = {p.name: ds.dataset(str(p), partitioning="hive").count_rows() for p in Path(lake).iterdir()
              if p.is_dir() and not p.name.startswith("_")}
    datasets = sum(1 for n in counts.values() if n)
    sid, files, _ = runs["export"]
    line = f"export: {sum(counts.values()):,} rows in {files} files across {datasets} datasets, snapshot {sid}"
    if "compaction" in runs:
        csid, cfiles, creplaced = runs["compaction"]
        line += f"; compaction merged {creplaced} files into {cfiles}, snapshot {csid}"
    return line


def test_export_snapshot_flow_writes_the_lake_and_reports_rows_per_partition(
        prefect_server, flow_run_story, database_factory, tmp_path, monkeypatch):
    from flows.export_snapshot import export_snapshot

    url = database_factory()
    db = Database(url=url)
    seed(setup(CommandBus(db)), tenants=2, commands=200, days=2)
    monkeypatch.setenv("CMDLOG_DATABASE_URL", url)
    monkeypatch.setenv("CMDLOG_HOME", str(tmp_path / "home"))
    lake = str(tmp_path / "lake")
    try:
        state = export_snapshot(lake_uri=lake, return_state=True)
        assert state.is_completed(), state
        result = state.result()
        assert result["export"]["rows"]["commands"] == 200
        assert ds.dataset(f"{lake}/commands", partitioning="hive").count_rows() == 200
        artifacts = {a.key: a for a in _artifacts(state.state_details.flow_run_id)}
        table = artifacts["export-snapshot-rows"]
        rows = json.loads(table.data) if isinstance(table.data, str) else table.data
        assert sum(r["rows"] for r in rows if r["dataset"] == "commands") == 200
        assert {r["dataset"] for r in rows} >= {"commands", "tenant_commands", "events"}
        assert artifacts["export-snapshot-progress"].data == 100.0
        summary = artifacts["export-snapshot-summary"].data  # the markdown summary: the run's own figures
        export = result["export"]
        assert summary.startswith(f"## Export snapshot {export['snapshot_id']}\n")
        assert f"**{sum(export['rows'].values()):,} rows** in **{export['files']:,} files**" in summary
        assert "| commands | 200 | " in summary
        for name, n in export["rows"].items():
            assert f"| {name} | {n:,} | {sum(p['files'] for p in export['partitions'] if p['dataset'] == name):,} |" \
                in summary
        compaction = result["compaction"]
        assert (f"merged {compaction['replaced']:,} files into {compaction['files']:,}" in summary
                if compaction["snapshot_id"] else "Compaction: nothing to merge." in summary)
        expected = _expected_summary(db, lake)  # the run tells its story: final state message and a log line
        assert expected.startswith("export: ") and " 0 files" not in expected
        message, logs = flow_run_story(state.state_details.flow_run_id, expect=expected)
        assert message == expected == state.message
        assert expected in logs

        again = export_snapshot(lake_uri=lake, compact=False, return_state=True).result()
        assert again["export"]["rows"]["commands"] == 0
        assert ds.dataset(f"{lake}/commands", partitioning="hive").count_rows() == 200
    finally:
        close_runtimes()
        db.close()
