"""The ``export-snapshot`` flow under the session's Prefect test server: lake written, artifacts published,
a rerun exports nothing twice."""

from __future__ import annotations

import asyncio
import json

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


def test_export_snapshot_flow_writes_the_lake_and_reports_rows_per_partition(
        prefect_server, database_factory, tmp_path, monkeypatch):
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

        again = export_snapshot(lake_uri=lake, compact=False, return_state=True).result()
        assert again["export"]["rows"]["commands"] == 0
        assert ds.dataset(f"{lake}/commands", partitioning="hive").count_rows() == 200
    finally:
        close_runtimes()
        db.close()
