"""``cmdlog up --demo`` as a subprocess: ready, export through the Prefect API, journal over HTTP, clean SIGTERM.

One ``up`` is shared by the whole module (it takes ~20 s to start); the SIGTERM test runs last and ends it.
The demo trickle runs in it, so new log rows keep arriving.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import time
from types import SimpleNamespace

import httpx
import psutil
import psycopg
import pyarrow.dataset as ds
import pytest
from platform_env import CMDLOG, base_env, free_port, server_tmp

pytestmark = pytest.mark.slow

DEMO_TENANTS = ["acme", "globex", "initech", "umbrella", "hooli"]


@pytest.fixture(scope="module")
def platform():
    """A running ``cmdlog up --demo`` on free ports with a temporary CMDLOG_HOME."""
    with server_tmp("cmdlog-test-up-") as root:
        yield from _platform(root / "home")


def _platform(home):
    ports = SimpleNamespace(prefect=free_port(), web=free_port())
    out = home.parent / "up.out"
    with open(out, "wb") as f:
        proc = subprocess.Popen([CMDLOG, "up", "--demo", "--demo-commands", "3000", "--prefect-port",
                                 str(ports.prefect), "--web-port", str(ports.web)], env=base_env(home),
                                stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 240
    while "Press Ctrl-C to stop." not in out.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"cmdlog up did not become ready (exit {proc.poll()}):\n{out.read_text()}")
        time.sleep(0.5)
    state = json.loads((home / "run" / "up.json").read_text())
    tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    yield SimpleNamespace(proc=proc, home=home, ports=ports, out=out, urls=state["urls"], tree=tree,
                          web=f"http://127.0.0.1:{ports.web}", api=f"http://127.0.0.1:{ports.prefect}/api",
                          db_url=state["urls"]["Postgres"])
    if proc.poll() is None:  # the SIGTERM test did not run (or failed): do not leave the platform behind
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    for p in tree:
        if p.is_running():
            p.kill()


def make_token(platform, *args: str) -> str:
    """A token made by ``cmdlog token create`` on the running platform's home (reusing its Postgres)."""
    done = subprocess.run([CMDLOG, "token", "create", *args], env=base_env(platform.home), capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def test_up_prints_every_url_and_each_answers(platform):
    text = platform.out.read_text()
    for name in ("Prefect UI", "web app", "API docs", "deployments"):
        assert name in text
    assert "export-snapshot/hourly" in platform.urls["deployments"]
    assert httpx.get(f"{platform.api}/health").status_code == 200
    assert httpx.get(f"{platform.web}/api/health").json() == {"status": "ok"}
    assert "/api/journal" in httpx.get(f"{platform.web}/openapi.json").json()["paths"]
    assert httpx.get(f"{platform.web}/docs").status_code == 200


def test_export_snapshot_triggered_through_the_prefect_api_writes_parquet_and_a_snapshot_row(platform):
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    with psycopg.connect(platform.db_url) as conn:
        logged_before = conn.execute("SELECT count(*) FROM command_log").fetchone()[0]
    auth = (platform.home / "prefect-auth").read_text().strip()
    with temporary_settings(updates={PREFECT_API_URL: platform.api, PREFECT_API_AUTH_STRING: auth}):
        run = run_deployment("export-snapshot/hourly", timeout=240, poll_interval=1)
    assert run.state.is_completed(), run.state
    files = list((platform.home / "lake").rglob("*.parquet"))
    assert files, "no Parquet file in the lake"
    with psycopg.connect(platform.db_url) as conn:
        published = conn.execute("SELECT count(*) FROM export_snapshot "
                                 "WHERE kind = 'export' AND status = 'published'").fetchone()[0]
        logged = conn.execute("SELECT count(*) FROM command_log").fetchone()[0]
    assert published >= 1
    exported = ds.dataset(platform.home / "lake" / "commands", format="parquet", partitioning="hive").count_rows()
    # The demo trickle keeps logging: every row from before the run is exported, nothing beyond what is logged now.
    assert 0 < logged_before <= exported <= logged


def test_the_prefect_api_refuses_a_caller_without_the_auth_string(platform):
    auth_file = platform.home / "prefect-auth"
    assert oct(auth_file.stat().st_mode & 0o777) == "0o600"
    auth = auth_file.read_text().strip()
    assert auth in platform.out.read_text()  # printed with the URLs: the UI asks for it
    for headers in ({}, {"Authorization": "Basic " + base64.b64encode(b"cmdlog:guess").decode()}):
        r = httpx.post(f"{platform.api}/deployments/filter", json={}, headers=headers)
        assert r.status_code == 401, r.text
        r = httpx.post(f"{platform.api}/flow_runs/filter", json={}, headers=headers)
        assert r.status_code == 401, r.text
    ok = {"Authorization": "Basic " + base64.b64encode(auth.encode()).decode()}
    assert httpx.post(f"{platform.api}/deployments/filter", json={}, headers=ok).status_code == 200
    assert httpx.get(f"{platform.api}/health").status_code == 200  # probes stay open


def test_cmdlog_export_flow_finds_the_local_servers_auth_by_itself(platform):
    env = {**base_env(platform.home), "PREFECT_API_URL": platform.api}
    done = subprocess.run([CMDLOG, "export", "--flow", "--json", "--no-compact"], env=env, capture_output=True,
                          text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "snapshot_id" in json.loads(done.stdout.strip().splitlines()[-1])["export"]


def test_the_demo_trickle_writes_new_log_rows_within_ten_seconds(platform):
    with psycopg.connect(platform.db_url) as conn:
        since = conn.execute("SELECT now()").fetchone()[0]
        deadline = time.monotonic() + 10
        rows = []
        while not rows and time.monotonic() < deadline:
            time.sleep(0.5)
            rows = conn.execute("SELECT tenant_id, cmd_class, status FROM command_log WHERE started_at > %s",
                                (since,)).fetchall()
    assert rows, "no new command within 10 s"
    assert {r[0] for r in rows} <= set(DEMO_TENANTS)
    assert all(r[1].startswith("billing.") for r in rows)


def test_journal_with_a_viewer_token_returns_only_its_tenant(platform):
    token = make_token(platform, "--tenant", "acme", "--role", "viewer")
    r = httpx.get(f"{platform.web}/api/journal", params={"limit": 500}, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    entries = r.json()["entries"]
    assert entries and {e["tenant_id"] for e in entries} == {"acme"}
    other = httpx.get(f"{platform.web}/api/journal", params={"tenant": "globex"},
                      headers={"Authorization": f"Bearer {token}"})
    assert other.status_code == 403


def test_journal_with_an_admin_token_returns_the_lean_rows_of_every_tenant(platform):
    token = make_token(platform, "--role", "admin")
    r = httpx.get(f"{platform.web}/api/journal", params={"limit": 1000}, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    assert len({e["tenant_id"] for e in r.json()["entries"]}) > 1


@pytest.mark.parametrize("header", [None, "Bearer nope", "Bearer cl_0123456789ab.AAAAAAAAAAAAAAAAAAAAAAAAAAA"])
def test_journal_with_a_bad_or_missing_token_is_401(platform, header):
    headers = {"Authorization": header} if header else {}
    r = httpx.get(f"{platform.web}/api/journal", headers=headers)
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"


def test_a_second_up_on_the_same_home_says_one_is_running(platform):
    done = subprocess.run([CMDLOG, "up", "--prefect-port", str(free_port()), "--web-port", str(free_port())],
                          env=base_env(platform.home), capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "already running" in done.stderr and str(platform.proc.pid) in done.stderr
    assert "stopped" not in done.stdout + done.stderr
    assert httpx.get(f"{platform.web}/api/health").status_code == 200  # the first one is untouched


def test_a_busy_port_is_named_with_the_option_to_choose_another(platform, tmp_path):
    done = subprocess.run([CMDLOG, "up", "--prefect-port", str(free_port()), "--web-port", str(platform.ports.web)],
                          env=base_env(tmp_path / "other"), capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert f"port {platform.ports.web}" in done.stderr and "--web-port" in done.stderr
    assert not (tmp_path / "other" / "pg").exists()  # nothing was started
    assert "stopped" not in done.stdout + done.stderr


def test_with_prefect_api_url_set_up_uses_that_server_and_starts_none(platform):
    with server_tmp("cmdlog-test-up-") as tmp_path:
        _second_up_on_the_same_prefect_server(platform, tmp_path)


def _second_up_on_the_same_prefect_server(platform, tmp_path):
    out = tmp_path / "second.out"
    # That server is not this up's: the auth the user configured for it is used as is.
    env = {**base_env(tmp_path / "second"), "PREFECT_API_URL": platform.api,
           "PREFECT_API_AUTH_STRING": (platform.home / "prefect-auth").read_text().strip()}
    with open(out, "wb") as f:  # the Prefect port is the busy one of the first platform: it must not matter
        proc = subprocess.Popen([CMDLOG, "up", "--prefect-port", str(platform.ports.prefect), "--web-port",
                                 str(free_port())], env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while "Press Ctrl-C to stop." not in out.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, out.read_text()
            time.sleep(0.5)
        state = json.loads((tmp_path / "second" / "run" / "up.json").read_text())
        assert state["urls"]["Prefect API"] == platform.api
        assert sorted(state["children"]) == ["deployments", "web"]
        assert not (tmp_path / "second" / "prefect-auth").exists()  # no local server, no local secret
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0


def test_sigterm_stops_every_child_and_postgres_promptly_even_with_a_live_socket_open(platform):
    # An open live-pane WebSocket and the trickle's commands are what a demo looks like when it is stopped.
    from websockets.sync.client import connect

    token = make_token(platform, "--role", "admin")
    ws = connect(f"ws://127.0.0.1:{platform.ports.web}/ws/activity",
                 additional_headers={"Authorization": f"Bearer {token}"})
    assert json.loads(ws.recv(timeout=30))["type"] == "hello"
    pg = int((platform.home / "pg" / "postmaster.pid").read_text().split()[0])
    tree = platform.tree
    assert len(tree) >= 5  # up, Prefect server, deployments, web, trickle (and their children)
    started = time.monotonic()
    platform.proc.send_signal(signal.SIGTERM)
    gone, alive = psutil.wait_procs(tree, timeout=15)
    assert not alive, [(p.pid, p.name()) for p in alive]
    assert platform.proc.wait(5) == 0
    deadline = time.monotonic() + 5
    while psutil.pid_exists(pg) and time.monotonic() < deadline:
        time.sleep(0.2)
    took = time.monotonic() - started
    ws.close()
    assert not psutil.pid_exists(pg), "Postgres still running"
    assert "stopped in" in platform.out.read_text()
    # The target is 5 s (children 4 s in all before SIGKILL, then Postgres); 12 s leaves room for a loaded machine.
    assert took < 12, took
