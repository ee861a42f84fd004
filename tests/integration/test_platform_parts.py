"""The parts ``cmdlog up`` is built from, each on its own: child stopping, server chores, port and lock checks."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid

import psutil
import psycopg
import pytest

from commandlog.platform.processes import Child
from commandlog.platform.up import AlreadyRunningError, Platform, PlatformError, UpOptions
from commandlog.settings import Settings
from storage import server_admin


def test_stop_leaves_no_descendant_even_one_that_left_the_process_group(tmp_path):
    # The child ignores SIGTERM and starts a grandchild in a new session: both must still be gone.
    script = ("import os, signal, subprocess, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
              "subprocess.Popen(['sleep', '300'], start_new_session=True); "
              "subprocess.Popen(['sleep', '300']); time.sleep(300)")
    child = Child(name="stubborn", argv=[sys.executable, "-c", script], env=dict(os.environ),
                  log_path=tmp_path / "stubborn.log").start()
    deadline = time.monotonic() + 10
    while len(child.descendants()) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    tree = child.descendants()
    assert len(tree) == 3
    started = time.monotonic()
    child.stop(timeout=1)
    assert time.monotonic() - started < 8
    assert not [p for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def test_asyncpg_url_keeps_the_socket_directory_or_the_tcp_address():
    socket_url = server_admin.asyncpg_url("postgresql://postgres:@/cmdlog?host=/tmp/x/pg", "prefect")
    assert socket_url == "postgresql+asyncpg://postgres@/prefect?host=/tmp/x/pg"
    tcp = server_admin.asyncpg_url("postgresql://app:s%40cret@db.internal:6432/cmdlog", "prefect")
    assert tcp == "postgresql+asyncpg://app:s%40cret@db.internal:6432/prefect"


def test_masked_url_hides_the_password_only():
    assert "s3cret" not in server_admin.masked_url("postgresql://app:s3cret@db:5432/cmdlog")
    plain = "postgresql://postgres:@/cmdlog?host=/tmp/pg"
    assert server_admin.masked_url(plain) == plain


def test_prune_dead_handles_forgets_killed_holders(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    (tmp_path / ".handle_pids.json").write_text(json.dumps([os.getpid(), dead.pid]))
    assert server_admin.prune_dead_handles(tmp_path) == [os.getpid()]
    assert json.loads((tmp_path / ".handle_pids.json").read_text()) == [os.getpid()]


@pytest.mark.slow  # creates and drops a database: checkpoints, tens of seconds on a busy disk
def test_ensure_database_creates_once(pg_url):
    name = f"t_prefect_{uuid.uuid4().hex[:8]}"
    try:
        assert server_admin.ensure_database(pg_url, name) is True
        assert server_admin.ensure_database(pg_url, name) is False
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


def _platform(tmp_path, **options) -> Platform:
    return Platform(settings=Settings.from_env({"CMDLOG_HOME": str(tmp_path / "home")}),
                    options=UpOptions(**options), echo=lambda msg: None)


def test_a_busy_port_fails_before_anything_starts_and_names_the_option(tmp_path, monkeypatch):
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        platform = _platform(tmp_path, prefect_port=port, web_port=port + 1 if port < 65535 else 1024)
        with pytest.raises(PlatformError, match=rf"port {port} .*--prefect-port"):
            platform.run()
    assert not (tmp_path / "home" / "pg").exists()


def test_the_lock_refuses_a_second_platform_on_the_same_home(tmp_path):
    first = _platform(tmp_path)
    first._acquire_lock()
    try:
        with pytest.raises(AlreadyRunningError, match=rf"pid {os.getpid()}"):
            _platform(tmp_path)._acquire_lock()
    finally:
        first.shutdown()
    second = _platform(tmp_path)
    second._acquire_lock()  # released with the first: no stale lock
    second.shutdown()


def test_an_unanswering_prefect_api_url_is_named_before_anything_starts(tmp_path, monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("PREFECT_API_URL", f"http://127.0.0.1:{port}/api")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        web_port = s.getsockname()[1]
    with pytest.raises(PlatformError, match="PREFECT_API_URL=.* does not answer"):
        _platform(tmp_path, web_port=web_port).run()
    assert not (tmp_path / "home" / "pg").exists()


def test_children_get_sigterm_when_their_supervisor_is_killed(tmp_path):
    # A supervisor process starts a Child and is then SIGKILLed: the child must not live on.
    script = ("import os, sys, time; from commandlog.platform.processes import Child; "
              "c = Child(name='sleeper', argv=['sleep', '300'], env=dict(os.environ), "
              f"log_path=__import__('pathlib').Path({str(tmp_path / 'sleeper.log')!r})).start(); "
              "print(c.pid, flush=True); time.sleep(300)")
    supervisor = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    child = psutil.Process(int(supervisor.stdout.readline()))
    supervisor.kill()
    supervisor.wait()
    gone, alive = psutil.wait_procs([child], timeout=5)
    assert not alive
