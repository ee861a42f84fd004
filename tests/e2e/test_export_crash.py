"""A real crash: the export process is SIGKILLed after some files are written; nothing is visible, and
``cmdlog export`` afterwards completes the run exactly (no row lost, none duplicated)."""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow.dataset as ds

from commandlog.bus import CommandBus
from examples.billing import setup
from examples.billing.demo import seed
from storage.postgres import Database

CHILD = textwrap.dedent("""
    import os, signal, sys
    from commandlog.journal.export import run_export
    from storage.postgres import Database

    def step(phase, detail):
        if phase == "staged" and detail == "tenant_commands":
            os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no finally: like a power cut

    run_export(Database(url=sys.argv[1]), sys.argv[2], step=step)
""")


def test_killed_export_leaves_nothing_visible_and_the_next_run_is_exact(database_factory, tmp_path):
    url = database_factory()
    db = Database(url=url)
    seed(setup(CommandBus(db)), tenants=3, commands=500, days=3)
    lake = tmp_path / "lake"
    child = subprocess.run([sys.executable, "-c", CHILD, url, str(lake)], capture_output=True, text=True)
    assert child.returncode == -9, child.stderr
    assert glob.glob(f"{lake}/_staging/**/*.parquet", recursive=True)  # some files were written…
    assert not glob.glob(f"{lake}/commands/**/*.parquet", recursive=True)  # …none is visible
    assert not (lake / "_manifests").exists()

    env = dict(os.environ, CMDLOG_DATABASE_URL=url, CMDLOG_HOME=str(tmp_path), CMDLOG_LAKE_URI=str(lake))
    out = subprocess.run([str(Path(sys.executable).with_name("cmdlog")), "export", "--json"], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    for table, dataset, col in (("command_log", "commands", "cmd_uuid"),
                                ("tenant_command_log", "tenant_commands", "cmd_uuid"),
                                ("domain_event", "events", "event_uuid")):
        lake_ids = [str(u) for u in ds.dataset(str(lake / dataset), partitioning="hive")
                    .to_table(columns=[col]).column(col).to_pylist()]
        with db.connection() as conn:
            pg_ids = [str(r[0]) for r in conn.execute(f"SELECT {col} FROM {table}").fetchall()]
        assert sorted(lake_ids) == sorted(pg_ids), dataset
    assert not glob.glob(f"{lake}/_staging/**/*.parquet", recursive=True)
    db.close()
