"""Sealing benchmark: ``cmdlog seal`` and ``cmdlog verify`` against a raw ordered scan of the same rows.

Baseline: for each log table, the same rows read in the same order (leaf partition, [tenant,] uuid, time) through a
server-side cursor of the same batch size, every row materialised in Python and nothing else done with it.
``seal_ratio_to_scan`` = scan time / seal time (1.0 = sealing costs no more than reading); likewise
``verify_ratio_to_scan``. Each run starts from an empty ``log_seal`` (the append-only trigger is switched off for
the ``TRUNCATE``: the benchmark database is the server's superuser's own).

Writers: ``--commands`` bus executions (one ``CreateCustomer`` each, one writer) timed in alternating blocks with
and without a sealing process running alongside — a child process that empties ``log_seal`` and seals the whole
log again, over and over (the worst case: every pass reads every row). ``writer_p50_ratio``/``writer_p99_ratio`` =
latency with sealing / without (1.0 = writers pay nothing).

    python -m benchmarks.seal [--rows 200000] [--commands 4000] [--repeat 3] [--database-url URL]

Seeds (or reuses) ``bench_<rows>`` like ``benchmarks.export`` and works on a fresh copy of it, ``bench_seal_<rows>``
(the writers add rows, and the seeded database must keep exactly its count for the next benchmark). With
``--database-url`` it works on that database itself.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
from psycopg import sql

from benchmarks._common import add_repeat_argument, loadavg, percentile, print_summary, repeat
from benchmarks.export import bench_database
from commandlog.bus import CommandBus
from commandlog.context import ExecutionContext
from commandlog.integrity import seal, verify
from commandlog.integrity.keys import existing_signing_key
from commandlog.integrity.pacing import BUDGET_ENV, NICE_ENV, Pacing
from commandlog.settings import Settings
from examples.billing import commands as c
from examples.billing import setup
from storage.postgres import Database
from storage.seals import COLUMNS, LOG_TABLES, PER_TENANT

_TIME = {"command_log": "started_at", "tenant_command_log": "started_at", "domain_event": "occurred_at",
         "frontend_action": "occurred_at"}


def _scan(url: str) -> tuple[float, int]:
    """Seconds to read every log row in sealing order, and how many rows."""
    rows = 0
    t0 = time.perf_counter()
    with psycopg.connect(url) as conn:
        for table in LOG_TABLES:
            key = COLUMNS[table][0][0]
            tenant = sql.SQL("tenant_id COLLATE \"C\", ") if table in PER_TENANT else sql.SQL("")  # sealing's order
            query = sql.SQL("SELECT {cols} FROM {t} ORDER BY tableoid::regclass::text COLLATE \"C\", {tn}{k}, {tm}"
                            ).format(cols=sql.SQL(", ").join(sql.Identifier(c) for c, _ in COLUMNS[table]),
                                     t=sql.Identifier(table), tn=tenant, k=sql.Identifier(key),
                                     tm=sql.Identifier(_TIME[table]))
            with conn.cursor(name=f"scan_{table}") as cur:
                cur.itersize = 5000
                cur.execute(query)
                for _ in cur:
                    rows += 1
    return time.perf_counter() - t0, rows


def working_copy(url: str) -> str:
    """A fresh copy of the database at ``url`` named ``bench_seal_<…>`` (dropped first if left by an earlier run)."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = conninfo_to_dict(url)
    source = params["dbname"]
    params["dbname"] = source.replace("bench_", "bench_seal_", 1)
    admin = make_conninfo(**{**params, "dbname": "postgres"})
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(params["dbname"])))
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(params["dbname"]),
                                                                     sql.Identifier(source)))
    return make_conninfo(**params)


def _empty_seals(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ALTER TABLE log_seal DISABLE TRIGGER log_seal_no_truncate")
        try:
            conn.execute("TRUNCATE log_seal")
        finally:
            conn.execute("ALTER TABLE log_seal ENABLE TRIGGER log_seal_no_truncate")


def _settings(home: Path) -> Settings:
    """The benchmark's settings: its own home, and the sealing's pacing variables of the environment
    (``CMDLOG_SEAL_NICE``, ``CMDLOG_SEAL_BUDGET``; the product's defaults when unset)."""
    pacing = {k: os.environ[k] for k in (NICE_ENV, BUDGET_ENV) if k in os.environ}
    return Settings.from_env({**pacing, "CMDLOG_HOME": str(home)})


def _run(url: str, home: Path) -> dict:
    settings = _settings(home)
    db = Database(url=url)
    try:
        _empty_seals(url)
        scan_s, rows = _scan(url)
        t0 = time.perf_counter()
        report = seal(db, settings)
        seal_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        findings = verify(db, existing_signing_key(settings).public_key())
        verify_s = time.perf_counter() - t0
    finally:
        db.close()
    sealed = sum(report.rows.values())
    assert sealed == rows and not findings, (sealed, rows, findings[:3])
    return {"rows_all_tables": rows, "seals": len(report.seals), "scan_seconds": round(scan_s, 3),
            "seal_seconds": round(seal_s, 3), "verify_seconds": round(verify_s, 3),
            "seal_rows_per_s": round(rows / seal_s), "seal_ratio_to_scan": round(scan_s / seal_s, 3),
            "verify_ratio_to_scan": round(scan_s / verify_s, 3)}


_SEALER = """
import sys
from pathlib import Path
from benchmarks.seal import _empty_seals, _settings
from commandlog.integrity import seal
from storage.postgres import Database
url, home = sys.argv[1], sys.argv[2]
db = Database(url=url)
settings = _settings(Path(home))
print("sealing", flush=True)
while True:
    _empty_seals(url)
    seal(db, settings)
"""


def _writers(url: str, home: Path, commands: int, block: int = 100) -> dict:
    """Bus latency in alternating blocks without and with a sealing process alongside."""
    db = Database(url=url)
    bus = setup(CommandBus(db))
    ctx = ExecutionContext(tenant_id=f"bench-w-{uuid.uuid4().hex[:8]}", actor_id="writer@bench")
    without: list[float] = []
    alongside: list[float] = []
    n = 0
    try:
        while n < commands:
            for with_sealing in (False, True):
                child = None
                if with_sealing:
                    child = subprocess.Popen([sys.executable, "-c", _SEALER, url, str(home)], stdout=subprocess.PIPE,
                                             text=True)
                    assert child.stdout is not None and child.stdout.readline().strip() == "sealing"
                    time.sleep(0.3)  # let it reach the scan
                try:
                    for _ in range(block):
                        n += 1
                        t0 = time.perf_counter()
                        bus.execute(c.CreateCustomer(customer_id=n, name=f"C{n}", email=f"c{n}@bench.example"), ctx)
                        (alongside if with_sealing else without).append((time.perf_counter() - t0) * 1000)
                finally:
                    if child is not None:
                        child.kill()  # our own child, by its handle
                        child.wait()
    finally:
        db.close()
    return {"writer_p50_ms": round(percentile(without, 50), 3), "writer_p99_ms": round(percentile(without, 99), 3),
            "writer_sealing_p50_ms": round(percentile(alongside, 50), 3),
            "writer_sealing_p99_ms": round(percentile(alongside, 99), 3),
            "writer_p50_ratio": round(percentile(alongside, 50) / percentile(without, 50), 3),
            "writer_p99_ratio": round(percentile(alongside, 99) / percentile(without, 99), 3)}


def main() -> None:
    """Seed (or reuse), then run scan, seal and verify ``--repeat`` times; print one JSON line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=200_000)
    p.add_argument("--commands", type=int, default=4000,
                   help="Writer commands per run, half of them with sealing alongside (p99 of 2,000 samples).")
    add_repeat_argument(p)
    p.add_argument("--database-url")
    args = p.parse_args()
    load_start = loadavg()
    url = args.database_url or working_copy(bench_database(args.rows))
    with tempfile.TemporaryDirectory(prefix="cmdlog-seal-bench-") as home:
        runs = repeat(args.repeat, lambda i: {**_run(url, Path(home)), **_writers(url, Path(home), args.commands)},
                      label="seal-run")
    print_summary("seal", runs, load_start=load_start,
                  keys=("seal_ratio_to_scan", "verify_ratio_to_scan", "writer_p50_ratio", "writer_p99_ratio",
                        "seal_seconds", "verify_seconds", "scan_seconds", "seal_rows_per_s", "writer_p99_ms",
                        "writer_sealing_p99_ms"),
                  extra={"rows": args.rows, "rows_all_tables": runs[0]["rows_all_tables"],
                         "pacing": dataclasses.asdict(Pacing.from_env(os.environ))})


if __name__ == "__main__":
    main()
