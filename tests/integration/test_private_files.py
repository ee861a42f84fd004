"""Files under ``CMDLOG_HOME`` are private to the platform's user: run state, lock, child logs, and the folder that
holds the embedded Postgres data (which its own system user may only pass through). Modes read back with os.stat."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict

from commandlog.platform.up import Platform, UpOptions
from commandlog.settings import Settings


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_run_state_lock_and_child_logs_are_private(tmp_path):
    home = tmp_path / "home"
    platform = Platform(settings=Settings.from_env({"CMDLOG_HOME": str(home)}), options=UpOptions(),
                        echo=lambda msg: None)
    platform._acquire_lock()
    try:
        child = platform._spawn("hello", [sys.executable, "-c", "print('hello')"], dict(os.environ))
        child.proc.wait(timeout=30)
        platform._write_state()
        seen = {p: _mode(p) for p in (home, home / "run", home / "run" / "up.lock", home / "run" / "up.json",
                                      home / "run" / "logs", home / "run" / "logs" / "hello.log")}
    finally:
        platform.shutdown()
    assert "hello" in (home / "run" / "logs" / "hello.log").read_text()
    assert {p.name: oct(m) for p, m in seen.items()} == {
        "home": "0o700", "run": "0o700", "up.lock": "0o600", "up.json": "0o600", "logs": "0o700",
        "hello.log": "0o600"}


def test_the_folder_holding_the_embedded_postgres_data_can_only_be_passed_through(pg_url):
    if os.environ.get("CMDLOG_TEST_DATABASE_URL"):
        pytest.skip("the tests run on an external Postgres")
    data = Path(conninfo_to_dict(pg_url)["host"])  # the embedded server's socket lives in its data folder
    assert (data / "PG_VERSION").exists()
    # As root the server runs as its own system user, which must traverse the folder; nobody may list or read it.
    assert _mode(data.parent) == (0o711 if os.geteuid() == 0 else 0o700)
