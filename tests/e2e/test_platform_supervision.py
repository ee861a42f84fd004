"""``cmdlog up`` supervision, as subprocesses on one temporary CMDLOG_HOME (two starts, ~20 s each):

1. a platform killed with SIGKILL leaves a flow run RUNNING; the next start marks it Crashed with a message;
2. that second platform notices its Postgres dying, says so, and stops every child (exit 1).
"""

from __future__ import annotations

import json
import signal
import subprocess
import time

import psutil
import pytest
from platform_env import CMDLOG, base_env, free_port, server_tmp

pytestmark = pytest.mark.slow


def _start(home, out):
    ports = [free_port(), free_port()]
    with open(out, "wb") as f:
        proc = subprocess.Popen([CMDLOG, "up", "--prefect-port", str(ports[0]), "--web-port", str(ports[1])],
                                env=base_env(home), stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 240
    while "Press Ctrl-C to stop." not in out.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"cmdlog up did not become ready (exit {proc.poll()}):\n{out.read_text()}")
        time.sleep(0.5)
    tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    return proc, tree, json.loads((home / "run" / "up.json").read_text())["urls"]["Prefect API"]


def _as_client(api: str, home):
    """Prefect settings of a client of ``home``'s platform: its API and its auth string."""
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    return temporary_settings(updates={PREFECT_API_URL: api,
                                       PREFECT_API_AUTH_STRING: (home / "prefect-auth").read_text().strip()})


def _left_running(api: str, home) -> str:
    """A run of export-snapshot/hourly in state Running, as a serving process killed mid-run leaves it."""
    from prefect import get_client
    from prefect.states import Running

    with _as_client(api, home), get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("export-snapshot/hourly")
        run = client.create_flow_run_from_deployment(deployment.id, state=Running())
        return str(run.id)


def _kill_postgres(home) -> None:
    """Do not leave the embedded server behind when the test failed half-way."""
    try:
        psutil.Process(int((home / "pg" / "postmaster.pid").read_text().split()[0])).kill()
    except (OSError, ValueError, psutil.Error):
        pass


def _state(api: str, home, run_id: str):
    from prefect import get_client

    with _as_client(api, home), get_client(sync_client=True) as client:
        return client.read_flow_run(run_id).state


def test_a_run_left_running_is_crashed_at_the_next_start_and_a_dead_postgres_stops_the_platform():
    with server_tmp("cmdlog-test-supervision-") as tmp_path:
        _crash_then_dead_postgres(tmp_path)


def _crash_then_dead_postgres(tmp_path):
    home = tmp_path / "home"
    first, tree, api = _start(home, tmp_path / "first.out")
    try:
        run_id = _left_running(api, home)
        first.send_signal(signal.SIGKILL)  # no shutdown at all: children get SIGTERM from the kernel (PDEATHSIG)
        _, alive = psutil.wait_procs(tree, timeout=30)
        assert not alive, [(p.pid, p.name()) for p in alive]
    finally:
        for p in tree:
            if p.is_running():
                p.kill()

    second, tree, api = _start(home, tmp_path / "second.out")
    try:
        out = (tmp_path / "second.out").read_text()
        assert "marked 1 flow run(s) left running by the previous platform as Crashed" in out
        state = _state(api, home, run_id)
        assert state.type.value == "CRASHED"
        assert "cmdlog up restarted" in state.message

        # Postgres dies under a running platform: up says so and stops everything.
        pg = psutil.Process(int((home / "pg" / "postmaster.pid").read_text().split()[0]))
        pg.kill()
        assert second.wait(60) == 1
        _, alive = psutil.wait_procs(tree, timeout=15)
        assert not alive, [(p.pid, p.name()) for p in alive]
        out = (tmp_path / "second.out").read_text()
        assert f"Postgres (embedded, pid {pg.pid}) has stopped" in out
        assert "stopped in" in out
    finally:
        if second.poll() is None:
            second.send_signal(signal.SIGTERM)
            second.wait(30)
        for p in tree:
            if p.is_running():
                p.kill()
        _kill_postgres(home)
