"""``cmdlog replay`` as a subprocess against the session's database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from examples.billing import commands as c
from examples.billing.errors import CustomerNotFoundError

CMDLOG = str(Path(sys.executable).with_name("cmdlog"))


def cmdlog(pg_url: str, tmp_path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "CMDLOG_DATABASE_URL": pg_url, "CMDLOG_HOME": str(tmp_path), "COLUMNS": "200"}
    return subprocess.run([CMDLOG, "replay", *args], env=env, capture_output=True, text=True, timeout=120,
                          check=False)


def test_cmdlog_replay_dry_runs_by_id_and_by_default_then_recovers_the_failed_ones(pg_url, bus, db, ctx, tenant,
                                                                                     tmp_path):
    with pytest.raises(CustomerNotFoundError) as info:
        bus.execute(c.RenameCustomer(customer_id=1, name="From CLI"), ctx)
    original = str(info.value.cmd_uuid)
    bus.execute(c.CreateCustomer(customer_id=1, name="C", email="c@x.io"), ctx)

    dry = cmdlog(pg_url, tmp_path, original, "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    [row] = [json.loads(line) for line in dry.stdout.splitlines()]
    assert (row["original_cmd_uuid"], row["outcome"], row["original_status"]) == (original, "now_succeeds", "failed")

    refused = cmdlog(pg_url, tmp_path, "--failed", "--tenant", tenant, "--since", "1h", "--max", "0")
    assert refused.returncode != 0

    default = cmdlog(pg_url, tmp_path, original)  # like the flow: a dry run unless --execute
    assert default.returncode == 0, default.stderr
    assert "now_succeeds" in default.stdout and "dry run: nothing was changed" in default.stdout

    done = cmdlog(pg_url, tmp_path, "--failed", "--tenant", tenant, "--since", "1h", "--class",
                  "billing.RenameCustomer", "--as", "ops@cli", "--execute")
    assert done.returncode == 0, done.stderr
    assert "succeeded: 1" in done.stdout
    with db.connection() as conn:
        assert conn.execute("SELECT name FROM billing.customer WHERE tenant_id = %s", (tenant,)).fetchall() == [
            ("From CLI",)]
        assert conn.execute("SELECT actor_id, status FROM tenant_command_log WHERE replay_of = %s",
                            (info.value.cmd_uuid,)).fetchall() == [("ops@cli", "succeeded")]


def test_cmdlog_replay_explains_a_selection_over_the_cap(pg_url, bus, ctx, tenant, tmp_path):
    for i in (1, 2):
        with pytest.raises(CustomerNotFoundError):
            bus.execute(c.RenameCustomer(customer_id=i, name="x"), ctx)
    result = cmdlog(pg_url, tmp_path, "--failed", "--tenant", tenant, "--max", "1", "--dry-run")
    assert result.returncode == 2
    assert "matches 2 commands, more than max_commands=1" in " ".join(result.stderr.split())


OPTS_OUT = "not replayable: retention.AddLegalHold opts out of replay (replayable = False)"

SERVICE = """
import json, sys, uuid
from pathlib import Path
from commandlog.bootstrap import build_bus, open_db
from commandlog.replay.service import ReplayRequest, run_replay
from commandlog.settings import Settings

settings = Settings(database_url=sys.argv[1], home=Path(sys.argv[2]))
db = open_db(settings)
report = run_replay(db, build_bus(db, settings), ReplayRequest(cmd_uuids=[uuid.UUID(sys.argv[3])], mode=sys.argv[4],
                                                               requested_by="ops@service"))
print(json.dumps([item.row() for item in report.items]))
db.close()
"""


@pytest.fixture
def logged_hold(bus, db, tenant) -> str:
    """The id of a ``retention.AddLegalHold`` logged through the bus for ``tenant``."""
    from commandlog.retention import policy as retention
    retention.add_hold(bus, tenant=tenant, subject="customer:1", reason="audit")
    with db.connection() as conn:
        [(cmd_uuid,)] = conn.execute("SELECT cmd_uuid FROM tenant_command_log WHERE tenant_id = %s "
                                     "AND cmd_class = 'retention.AddLegalHold'", (tenant,)).fetchall()
    return str(cmd_uuid)


@pytest.mark.parametrize("mode", ["--dry-run", "--execute"])
def test_cmdlog_replay_of_a_legal_hold_says_it_opts_out(pg_url, db, logged_hold, tmp_path, mode):
    args = ["--dry-run"] if mode == "--dry-run" else ["--execute", "--as", "ops@cli"]
    result = cmdlog(pg_url, tmp_path, logged_hold, *args, "--json")
    assert result.returncode == 0, result.stderr
    [row] = [json.loads(line) for line in result.stdout.splitlines()]
    assert (row["original_cmd_uuid"], row["outcome"], row["message"]) == (logged_hold, "not_replayable", OPTS_OUT)
    with db.connection() as conn:  # nothing ran again
        assert conn.execute("SELECT count(*) FROM command_log WHERE replay_of = %s",
                            (logged_hold,)).fetchone() == (0,)


@pytest.mark.parametrize("mode", ["dry_run", "execute"])
def test_the_replay_service_on_a_bootstrapped_bus_says_a_legal_hold_opts_out(pg_url, logged_hold, tmp_path, mode):
    """A fresh interpreter: only what bootstrap registers is known (the test process imported retention itself)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CMDLOG_")}
    out = subprocess.run([sys.executable, "-c", SERVICE, pg_url, str(tmp_path), logged_hold, mode], env=env,
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    [row] = json.loads(out.stdout)
    assert (row["original_cmd_uuid"], row["outcome"], row["message"]) == (logged_hold, "not_replayable", OPTS_OUT)
