"""``retention-cleanup`` under the session's Prefect test server, its deployment, and ``cmdlog retention`` as a
subprocess (each on a fresh database: a purge spans every tenant)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from commandlog.bootstrap import close_runtimes
from commandlog.bus import CommandBus, HistoricalCommand
from commandlog.context import ExecutionContext
from commandlog.retention.policy import RetentionPolicy
from commandlog.settings import Settings
from examples.billing import commands as c
from examples.billing import setup
from storage.migrate import ensure_partitions_between
from storage.postgres import Database

CMDLOG = str(Path(sys.executable).with_name("cmdlog"))
OLD = datetime.now(UTC) - timedelta(days=45)


def _seed(url: str) -> None:
    db = Database(url=url)
    try:
        bus = setup(CommandBus(db))
        ensure_partitions_between(db, f"'{OLD:%Y-%m-%d}'::date", f"'{OLD + timedelta(days=1):%Y-%m-%d}'::date")
        ctx = ExecutionContext(tenant_id="acme", actor_id="a@acme")
        bus.import_history([HistoricalCommand(command=c.RecordLogin(user_id="u", ip="10.0.0.1"), context=ctx,
                                              started_at=OLD + timedelta(minutes=i)) for i in range(7)])
        bus.import_history([HistoricalCommand(command=c.CloseMonth(month="2026-01"), context=ctx, started_at=OLD)])
    finally:
        db.close()


def _count(url: str, where: str) -> int:
    db = Database(url=url)
    try:
        with db.connection() as conn:
            return conn.execute(f"SELECT count(*) FROM command_log WHERE {where}").fetchone()[0]
    finally:
        db.close()


def _story_data(url: str) -> tuple[int, set[str], list[str]]:
    """Rows of the four log tables outside ``permanent``, their leaf partitions, and the Purge commands logged."""
    db = Database(url=url)
    try:
        with db.connection() as conn:
            rows = sum(conn.execute(f"SELECT count(*) FROM {t} WHERE retention <> 'permanent'").fetchone()[0]
                       for t in ("command_log", "tenant_command_log", "domain_event", "frontend_action"))
            leaves = {r[0] for t in ("command_log", "tenant_command_log", "domain_event", "frontend_action")
                      for r in conn.execute(f"SELECT relid::text FROM pg_partition_tree('{t}') WHERE isleaf")}
            purges = [str(r[0]) for r in conn.execute(
                "SELECT cmd_uuid FROM command_log WHERE cmd_class = 'retention.Purge' ORDER BY started_at")]
        return rows, leaves, purges
    finally:
        db.close()


def _artifacts(flow_run_id):
    from prefect.client.orchestration import get_client

    async def go():
        async with get_client() as client:
            return [a for a in await client.read_artifacts() if a.flow_run_id == flow_run_id]

    return asyncio.run(go())


@pytest.fixture
def flow_db(database_factory, tmp_path, monkeypatch):
    """A seeded fresh database that flows called in-process use (no lake); their runtimes closed afterwards."""
    url = database_factory()
    _seed(url)
    monkeypatch.setenv("CMDLOG_DATABASE_URL", url)
    monkeypatch.setenv("CMDLOG_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CMDLOG_RETENTION_LAKE", "off")
    try:
        yield url
    finally:
        close_runtimes()


def test_retention_cleanup_flow_dry_runs_by_default_then_purges_and_reports_counts(
        prefect_server, flow_run_story, flow_db):
    from flows.retention_cleanup import retention_cleanup

    url = flow_db
    dry = retention_cleanup(policy=RetentionPolicy(), return_state=True)
    assert dry.is_completed(), dry
    assert dry.result()["dry_run"] and dry.result()["total_rows"] == 14  # global + tenant rows
    assert _count(url, "cmd_class = 'billing.RecordLogin'") == 7
    rows_before, leaves_before, _ = _story_data(url)

    state = retention_cleanup(policy=RetentionPolicy(), dry_run=False, return_state=True)
    assert state.is_completed(), state
    rows_after, leaves_after, [purge_cmd] = _story_data(url)
    removed, dropped = rows_before - rows_after, len(leaves_before - leaves_after)
    assert removed == 14 and dropped >= 1
    # Both runs tell their story (final state message and a log line), built from what Postgres lost.
    for run, expected, tail in (
            (dry, f"retention dry run: would purge {removed} rows, {dropped} partition{'s' * (dropped != 1)} "
                  "dropped whole; lake: none", ""),
            (state, f"retention: purged {removed} rows, {dropped} partition{'s' * (dropped != 1)} dropped whole; "
                    f"lake: none; logged as cmd {purge_cmd}", r"; [\d,.]+ MB of files removed in [\d,.]+ s")):
        message, logs = flow_run_story(run.state_details.flow_run_id, expect=expected)
        assert re.fullmatch(re.escape(expected) + tail, message), message
        assert message in logs
    assert state.result()["total_rows"] == 14
    assert _count(url, "cmd_class = 'billing.RecordLogin'") == 0
    assert _count(url, "cmd_class = 'billing.CloseMonth'") == 1
    assert _count(url, "cmd_class = 'retention.Purge' AND retention = 'permanent'") == 1
    table = {a.key: a for a in _artifacts(state.state_details.flow_run_id)}["retention-cleanup-counts"]
    rows = json.loads(table.data) if isinstance(table.data, str) else table.data
    assert {(r["table"], r["tenant_id"], r["rows"]) for r in rows} == {
        ("command_log", "acme", 7), ("tenant_command_log", "acme", 7)}


def test_the_daily_deployment_purges_on_its_schedule_in_the_configured_time_zone():
    from deployments import all_deployments

    settings = Settings.from_env({"CMDLOG_RETENTION_TIMEZONE": "Europe/Berlin", "CMDLOG_RETENTION_CRON": "15 2 * * *",
                                  "CMDLOG_RETENTION_SHORT_LIVED_DAYS": "7"})
    [dep] = [d for d in all_deployments(settings) if f"{d.flow_name}/{d.name}" == "retention-cleanup/daily"]
    [schedule] = dep.schedules
    assert schedule.schedule.cron == "15 2 * * *" and schedule.schedule.timezone == "Europe/Berlin"
    assert schedule.parameters == {"dry_run": False}
    assert dep.parameters["policy"]["short_lived_days"] == 7
    assert "dry_run" not in dep.parameters  # the manual form keeps the flow's default: a dry run


def cmdlog(url: str, tmp_path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "CMDLOG_DATABASE_URL": url, "CMDLOG_HOME": str(tmp_path), "COLUMNS": "200",
           "CMDLOG_RETENTION_LAKE": "off"}
    return subprocess.run([CMDLOG, "retention", *args], env=env, capture_output=True, text=True, timeout=120,
                          check=False)


def test_cmdlog_retention_holds_and_runs_dry_unless_purge(database_factory, tmp_path):
    url = database_factory()
    _seed(url)
    added = cmdlog(url, tmp_path, "hold", "add", "--tenant", "acme", "--reason", "audit 2026")
    assert added.returncode == 0, added.stderr
    listed = cmdlog(url, tmp_path, "hold", "list", "--json")
    assert [(h["tenant_id"], h["subject"], h["reason"]) for h in json.loads(listed.stdout)] == [
        ("acme", None, "audit 2026")]
    held = cmdlog(url, tmp_path, "run", "--purge", "--json")
    assert held.returncode == 0, held.stderr
    assert json.loads(held.stdout)["total_rows"] == 0
    assert cmdlog(url, tmp_path, "hold", "remove", "--tenant", "acme", "--reason", "done").returncode == 0
    missing = cmdlog(url, tmp_path, "hold", "remove", "--tenant", "acme")
    assert missing.returncode == 2 and "no active legal hold" in missing.stderr
    dry = cmdlog(url, tmp_path, "run", "--dry-run", "--json")
    assert json.loads(dry.stdout)["total_rows"] == 14 and _count(url, "cmd_class = 'billing.RecordLogin'") == 7
    default = cmdlog(url, tmp_path, "run")  # like the flow: a dry run unless asked to purge
    assert default.returncode == 0, default.stderr
    assert "dry run: nothing was changed; would purge 14 rows" in default.stdout and "--purge" in default.stdout
    assert _count(url, "cmd_class = 'billing.RecordLogin'") == 7
    done = cmdlog(url, tmp_path, "run", "--purge")
    assert done.returncode == 0, done.stderr
    assert "removed 14 rows" in done.stdout
    assert _count(url, "cmd_class = 'billing.RecordLogin'") == 0
    # add, remove, 2 purges
    assert _count(url, "cmd_class LIKE 'retention.%' AND retention = 'permanent' AND status = 'succeeded'") == 4


def test_bad_fan_out_parameters_fail_the_run_naming_the_field_and_change_nothing(prefect_server, flow_db):
    from flows.retention_cleanup import retention_cleanup

    for params, field in (({"takers": 0}, "takers"), ({"helpers": 99}, "helpers"),
                          ({"lease_seconds": 1.0}, "lease_seconds"), ({"units_of": 0}, "units_of")):
        state = retention_cleanup(policy=RetentionPolicy(), dry_run=False, return_state=True, **params)
        assert state.is_failed() and f"{field}: must be" in (state.message or ""), (params, state)
    helper_dry = retention_cleanup(policy=RetentionPolicy(), units_of=1, return_state=True)  # dry_run: the default
    assert helper_dry.is_failed() and "units_of: a helper purges" in (helper_dry.message or ""), helper_dry
    assert _count(flow_db, "cmd_class = 'billing.RecordLogin'") == 7
    db = Database(url=flow_db)
    try:
        with db.connection() as conn:
            assert conn.execute("SELECT count(*) FROM retention_run").fetchone()[0] == 0
    finally:
        db.close()
