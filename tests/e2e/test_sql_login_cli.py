"""``cmdlog sql-login`` as a subprocess: create prints a URI that works (once), list never shows a password,
revoke makes the URI stop working."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

CMDLOG = [sys.executable, "-m", "commandlog.cli"]


def cmdlog(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([*CMDLOG, *args], env=env, capture_output=True, text=True, timeout=180)


def test_create_list_and_revoke_a_login_from_the_command_line(database_factory, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CMDLOG_")}
    env.update(CMDLOG_DATABASE_URL=database_factory("sql_login_cli"), CMDLOG_HOME=str(tmp_path), COLUMNS="200")
    made = cmdlog("sql-login", "create", "--tenant", "acme", "--name", "bi_dashboard", env=env)
    assert made.returncode == 0, made.stderr
    uri = made.stdout.strip()
    assert "\n" not in uri and "bi_dashboard bound to tenant acme" in made.stderr
    password = conninfo_to_dict(uri)["password"]
    with psycopg.connect(uri) as conn:
        assert conn.execute("SELECT session_user, cmdlog_current_tenant()").fetchone() == ("bi_dashboard", "acme")

    for listing in (cmdlog("sql-login", "list", env=env), cmdlog("sql-login", "list", "--json", env=env)):
        assert listing.returncode == 0, listing.stderr
        assert "bi_dashboard" in listing.stdout and "acme" in listing.stdout and password not in listing.stdout
    [row] = json.loads(cmdlog("sql-login", "list", "--json", "--tenant", "acme", env=env).stdout)
    assert set(row) == {"role_name", "tenant_id", "created_at", "created_by", "active_sessions"}

    again = cmdlog("sql-login", "create", "--tenant", "acme", "--name", "bi_dashboard", env=env)
    assert again.returncode == 2 and "name: a role named 'bi_dashboard' already exists" in again.stderr
    bad = cmdlog("sql-login", "create", "--tenant", "", env=env)
    assert bad.returncode == 2 and "tenant:" in bad.stderr
    no_sessions = cmdlog("sql-login", "create", "--tenant", "acme", "--connection-limit", "0", env=env)
    assert no_sessions.returncode == 2 and "connection_limit: a whole number of sessions" in no_sessions.stderr

    gone = cmdlog("sql-login", "revoke", "bi_dashboard", env=env)
    assert gone.returncode == 0 and "revoked bi_dashboard" in gone.stdout
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(uri).close()
    assert cmdlog("sql-login", "revoke", "bi_dashboard", env=env).returncode == 2
