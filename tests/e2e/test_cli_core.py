"""The core CLI as a subprocess: zero-config embedded Postgres, seeding through the batch path, log tail."""

from __future__ import annotations

import os
import subprocess
import sys

import psycopg
import pytest

CMDLOG = [sys.executable, "-m", "commandlog.cli"]


def cmdlog(*args: str, env: dict[str, str], timeout: int = 180) -> subprocess.CompletedProcess:
    return subprocess.run([*CMDLOG, *args], env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def home_env():
    """Zero config: only CMDLOG_HOME, so the embedded server starts under it (outside pytest's basetemp: see
    ``platform_env.server_tmp``)."""
    from platform_env import server_tmp

    with server_tmp("cmdlog-test-cli-") as home:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CMDLOG_")}
        env["CMDLOG_HOME"] = str(home)
        env["COLUMNS"] = "200"
        yield env


def test_db_upgrade_starts_the_embedded_server_and_is_idempotent(home_env):
    first = cmdlog("db", "upgrade", env=home_env)
    assert first.returncode == 0, first.stderr
    assert "upgraded" in first.stdout or "current" in first.stdout
    again = cmdlog("db", "upgrade", env=home_env)
    assert again.returncode == 0 and "schema is current" in again.stdout
    assert (os.path.exists(os.path.join(home_env["CMDLOG_HOME"], "pg", "PG_VERSION")))


def test_demo_seed_and_log_tail_show_the_activity(home_env):
    seeded = cmdlog("demo", "seed", "--tenants", "3", "--commands", "3000", "--days", "10", env=home_env)
    assert seeded.returncode == 0, seeded.stderr
    assert "seeded 3000 commands for 3 tenants over 10 days" in seeded.stdout
    tail = cmdlog("log", "tail", "-n", "5", env=home_env)
    assert tail.returncode == 0, tail.stderr
    assert "newest 5 commands" in tail.stdout and "billing." in tail.stdout
    mine = cmdlog("log", "tail", "--tenant", "acme", "-n", "50", env=home_env)
    assert mine.returncode == 0, mine.stderr
    assert "globex" not in mine.stdout and "initech" not in mine.stdout and "acme" in mine.stdout


def test_the_embedded_server_is_stopped_after_each_command(home_env):
    cmdlog("db", "upgrade", env=home_env)
    assert not os.path.exists(os.path.join(home_env["CMDLOG_HOME"], "pg", "postmaster.pid"))


def test_an_existing_database_url_is_used_instead(database_factory, tmp_path):
    url = database_factory("cli_url")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CMDLOG_")}
    env.update(CMDLOG_DATABASE_URL=url, CMDLOG_HOME=str(tmp_path))
    seeded = cmdlog("demo", "seed", "--tenants", "2", "--commands", "500", "--days", "3", env=env)
    assert seeded.returncode == 0, seeded.stderr
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*), count(DISTINCT tenant_id) FROM command_log").fetchone() == (500, 2)
        failed = conn.execute("SELECT count(*) FROM command_log WHERE status = 'failed'").fetchone()[0]
        assert 0 < failed < 40  # ~2% failures
        assert conn.execute("SELECT count(*) FROM command_log WHERE cmd_body::text LIKE '%DE%' "
                            "AND cmd_class = 'billing.UpdatePaymentDetails'").fetchone() == (0,)
    assert not (tmp_path / "pg").exists()


def test_bad_options_and_a_bad_setting_fail_with_a_message(home_env):
    bad = cmdlog("demo", "seed", "--commands", "0", env=home_env)
    assert bad.returncode == 2 and "commands" in bad.stderr
    env = dict(home_env, CMDLOG_MAX_BODY_BYTES="big")
    wrong = cmdlog("log", "tail", env=env)
    assert wrong.returncode == 2 and "CMDLOG_MAX_BODY_BYTES must be an integer" in wrong.stderr
    assert "Traceback" not in wrong.stderr


def _readme_block() -> str:
    """The ```python block under "## Ten lines" in README.md, exactly as printed."""
    import re
    from pathlib import Path

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme[readme.index("\n## Ten lines"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_ten_lines_run_as_printed_and_log_with_the_iban_withheld(database_factory, tmp_path):
    from pathlib import Path

    block = _readme_block()
    quickstart = (Path(__file__).parents[2] / "examples" / "quickstart.py").read_text()
    assert quickstart.endswith("\n\n" + block)  # the tested file and the README say the same
    program = tmp_path / "ten_lines.py"
    program.write_text(block)
    url = database_factory("quickstart")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CMDLOG_")}
    env.update(CMDLOG_DATABASE_URL=url, CMDLOG_HOME=str(tmp_path / "home"))
    run = subprocess.run([sys.executable, str(program)], env=env, cwd=tmp_path, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout == "succeeded\n"
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT cmd_class, status, cmd_body FROM command_log").fetchall() == [
            ("quickstart.SetIban", "succeeded", {"account": "42", "iban": "[withheld]"})]
        assert conn.execute("SELECT tenant_id, cmd_body->>'iban' FROM tenant_command_log").fetchall() == [
            ("acme", "DE89370400440532013000")]
        assert conn.execute("SELECT account, iban FROM iban").fetchall() == [("42", "DE89370400440532013000")]
        assert conn.execute("SELECT event_type FROM domain_event").fetchall() == [("IbanSet",)]


@pytest.fixture(scope="module")
def seeded_env(database_factory, tmp_path_factory):
    """A seeded database given by URL, and an environment with no COLUMNS (as in a pipe or a cron job)."""
    from commandlog.bus import CommandBus
    from examples.billing import setup
    from examples.billing.demo import seed
    from storage.postgres import Database

    url = database_factory()
    db = Database(url=url)
    seed(setup(CommandBus(db)), tenants=2, commands=60, days=2)
    db.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CMDLOG_") and k not in ("COLUMNS", "LINES")}
    env.update(CMDLOG_DATABASE_URL=url, CMDLOG_HOME=str(tmp_path_factory.mktemp("home")))
    return url, env


def _newest(url: str, n: int) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT cmd_uuid::text, cmd_class, tenant_id, actor_id, cmd_body::text FROM command_log "
                            "ORDER BY started_at DESC, cmd_uuid DESC LIMIT %s", (n,)).fetchall()[::-1]


def test_log_tail_as_json_lines_and_csv_lists_the_newest_entries_oldest_first(seeded_env):
    import csv
    import io
    import json

    url, env = seeded_env
    expected = _newest(url, 7)
    out = cmdlog("log", "tail", "-n", "7", "--format", "json", env=env)
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert [(d["cmd_uuid"], d["cmd_class"], d["tenant_id"]) for d in lines] == [e[:3] for e in expected]
    assert [d["cmd_body"] for d in lines] == [json.loads(e[4]) if e[4] else None for e in expected]
    out = cmdlog("log", "tail", "-n", "7", "--format", "csv", env=env)
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert list(rows[0]) == ["cmd_uuid", "started_at", "tenant_id", "actor_id", "cmd_class", "status", "subjects",
                             "cmd_body", "error_message"]
    assert [(r["cmd_uuid"], r["actor_id"]) for r in rows] == [(e[0], e[3]) for e in expected]
    bad = cmdlog("log", "tail", "--format", "yaml", env=env)
    assert bad.returncode == 2 and "yaml" in bad.stderr


def test_log_tail_piped_keeps_whole_columns(seeded_env):
    import json

    url, env = seeded_env
    out = cmdlog("log", "tail", "-n", "5", env=env)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    with psycopg.connect(url) as conn:  # a failed command shows its error message, a succeeded one its body
        errors = dict(conn.execute("SELECT cmd_uuid::text, error_message FROM command_log WHERE status <> 'succeeded'"))
    for cmd_uuid, cmd_class, _tenant_id, actor_id, body in _newest(url, 5):
        if cmd_uuid in errors:
            detail = (errors[cmd_uuid] or "")[:160]
        else:
            detail = json.dumps(json.loads(body), ensure_ascii=False)[:160] if body else "(body excluded)"
        assert any(actor_id in line and cmd_class in line and detail in line for line in lines), (detail, out.stdout)
