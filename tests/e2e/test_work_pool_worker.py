"""The production path: ``cmdlog deploy --pool`` registers the deployments on a work pool and a process worker
(another process, as on another machine) picks up a run and completes it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import pytest

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent


def test_a_process_worker_picks_up_and_completes_a_deployment_run(prefect_server, database_factory, tmp_path):
    from prefect import get_client
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL

    api = PREFECT_API_URL.value()
    db_url = database_factory("workpool")
    with psycopg.connect(db_url) as conn:  # something to export
        conn.execute("INSERT INTO command_log (cmd_uuid, cmd_class, cmd_version, tenant_id, actor_id, correlation_id,"
                     " status, started_at, finished_at, retention) VALUES (gen_random_uuid(), 'billing.Login', 1,"
                     " 'acme', 'alice', gen_random_uuid(), 'succeeded', now(), now(), 'short_lived')")
    pool = f"pool-{uuid.uuid4().hex[:8]}"
    lake = tmp_path / "lake"
    env = {**os.environ, "PREFECT_API_URL": api, "CMDLOG_DATABASE_URL": db_url, "CMDLOG_LAKE_URI": str(lake),
           "CMDLOG_HOME": str(tmp_path / "home"), "PREFECT_HOME": str(tmp_path / "prefect"),
           "PREFECT_WORKER_QUERY_SECONDS": "1", "PREFECT_WORKER_PREFETCH_SECONDS": "5"}

    deployed = subprocess.run([str(BIN / "cmdlog"), "deploy", "--pool", pool, "--only", "export-snapshot/hourly"],
                              env=env, capture_output=True, text=True, timeout=120)
    assert deployed.returncode == 0, deployed.stderr
    assert f"registered export-snapshot/hourly on work pool {pool}" in deployed.stdout

    run = run_deployment("export-snapshot/hourly", timeout=0)
    assert run.work_pool_name == pool
    worker = subprocess.Popen([str(BIN / "prefect"), "worker", "start", "--pool", pool, "--type", "process"],
                              env=env, cwd=tmp_path, stdout=open(tmp_path / "worker.log", "wb"),
                              stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        with get_client(sync_client=True) as client:
            while True:
                state = client.read_flow_run(run.id).state
                if state.is_final() or time.monotonic() > deadline:
                    break
                time.sleep(1)
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
    log = (tmp_path / "worker.log").read_text(errors="replace")
    assert state.is_completed(), f"{state}\n--- worker log:\n{log[-4000:]}"
    assert str(run.id) in log  # this worker, not a runner elsewhere, ran it
    assert list((lake / "commands").rglob("*.parquet"))
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM export_snapshot WHERE status = 'published'").fetchone()[0] >= 1
