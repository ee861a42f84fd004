"""The ``seal-log`` flow under the session's Prefect test server: every row sealed, the artifact and the summary
published, a rerun seals nothing twice; ``seal-log/hourly`` is among the deployments."""

from __future__ import annotations

import asyncio
import datetime as dt
import json

from commandlog.bootstrap import close_runtimes
from commandlog.bus import CommandBus
from commandlog.integrity import verify
from commandlog.integrity.keys import existing_signing_key
from commandlog.settings import Settings
from examples.billing import setup
from examples.billing.demo import seed
from storage.postgres import Database

NOW = dt.datetime(2026, 6, 15, 12, 0, tzinfo=dt.UTC)


def _artifacts(flow_run_id):
    from prefect.client.orchestration import get_client

    async def go():
        async with get_client() as client:
            return [a for a in await client.read_artifacts() if a.flow_run_id == flow_run_id]

    return asyncio.run(go())


def test_seal_log_flow_seals_every_row_once_and_tells_its_story(
        prefect_server, flow_run_story, database_factory, tmp_path, monkeypatch):
    from flows.seal_log import seal_log

    url = database_factory()
    db = Database(url=url)
    seed(setup(CommandBus(db)), tenants=2, commands=80, days=2, now=NOW)
    monkeypatch.setenv("CMDLOG_DATABASE_URL", url)
    monkeypatch.setenv("CMDLOG_HOME", str(tmp_path / "home"))
    try:
        state = seal_log(return_state=True)
        assert state.is_completed(), state
        report = state.result()
        assert report["rows"]["command_log"] == 80
        with db.connection() as conn:
            [(sealed,)] = conn.execute("SELECT sum(row_count) FROM log_seal WHERE table_name = 'command_log'")
            [(seals,)] = conn.execute("SELECT count(*) FROM log_seal")
        assert sealed == 80 and seals == len(report["seals"])
        artifact = {a.key: a for a in _artifacts(state.state_details.flow_run_id)}["seal-log-seals"]
        rows = json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data
        assert sum(r["rows"] for r in rows if r["table"] == "command_log") == 80
        expected = f"seal: {sum(report['rows'].values()):,} rows in {seals} seals"
        message, logs = flow_run_story(state.state_details.flow_run_id, expect=state.message)
        assert message.startswith(expected) and state.message in logs
        head = report["head"]  # the newest seal, published in the summary, the artifact and the head file
        assert head["seal_id"] == report["seals"][-1]["seal_id"] and head["to_tx"] == report["to_tx"]
        assert f"head seal {head['seal_id']} {head['seal_hash']}" in state.message
        assert {"seal": f"head {head['seal_id']}", "table": "", "partition": head["seal_hash"],
                "rows": head["to_tx"]} in rows
        assert json.loads((tmp_path / "home" / "keys" / "seal-head").read_text().splitlines()[-1])["seal_id"] == \
            head["seal_id"]

        again = seal_log(return_state=True).result()
        assert again["seals"] == [] and again["from_tx"] == report["to_tx"]
        settings = Settings.from_env({"CMDLOG_HOME": str(tmp_path / "home")})
        assert verify(db, existing_signing_key(settings).public_key()) == []
    finally:
        close_runtimes()
        db.close()


def test_the_seal_deployment_runs_hourly_one_at_a_time():
    from deployments import all_deployments

    [dep] = [d for d in all_deployments(Settings.from_env({})) if f"{d.flow_name}/{d.name}" == "seal-log/hourly"]
    assert dep.entrypoint == "flows.seal_log.seal_log"
    assert [s.schedule.cron for s in dep.schedules] == ["20 * * * *"]
    assert dep.concurrency_limit == 1
