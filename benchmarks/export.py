"""Export benchmark: ``cmdlog export`` against its ceiling, measured in the same run on the same rows.

Ceiling: an ADBC fetch of the same rows (same select lists) plus one ``pyarrow.dataset.write_dataset`` per dataset
with the same Hive partitioning, and no bookkeeping (no snapshot transaction range, ledger, staging, rename or
manifest). ``ratio_to_ceiling`` = ceiling time / export time (1.0 = no overhead). Each side runs in its own child
process so that ``peak_rss_mb`` is the export's own peak resident memory. Each of the ``--repeat`` runs times
the ceiling then the export (into fresh lakes) and prints its own JSON line; the final line has the medians of the
per-run figures, their min/max, and the load average at the start and end.

    python -m benchmarks.export [--rows 2000000] [--repeat 3] [--database-url URL]

Seeds through the bus batch path (``examples.billing.demo``) into ``bench_<rows>`` on an embedded server kept
under ``$CMDLOG_BENCH_HOME`` (default ``/tmp/cmdlog-bench``), reused by later runs when the row count matches.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._common import add_repeat_argument, loadavg, print_summary, repeat

BENCH_HOME = Path(os.environ.get("CMDLOG_BENCH_HOME", "/tmp/cmdlog-bench"))


def bench_database(rows: int, *, url: str | None = None, tenants: int = 20, days: int = 30) -> str:
    """URL of a database holding exactly ``rows`` seeded commands (seeded now unless already there)."""
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    from commandlog.bus import CommandBus
    from examples.billing import setup
    from examples.billing.demo import seed
    from storage import embedded
    from storage.migrate import upgrade
    from storage.postgres import Database

    if url is None:
        server = embedded.start_server(BENCH_HOME / "pg", keep_running=True)
        admin = embedded.ensure_database(server, "postgres")
        params = conninfo_to_dict(admin)
        params["dbname"] = f"bench_{rows}"
        url = make_conninfo(**params)
        with psycopg.connect(admin, autocommit=True) as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (params["dbname"],)).fetchone():
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(params["dbname"])))
    db = Database(url=url)
    upgrade(db)
    with db.connection() as conn:
        have = conn.execute("SELECT count(*) FROM command_log").fetchone()[0]
    if have != rows:
        with db.connection() as conn:
            conn.execute("TRUNCATE command_log, tenant_command_log, domain_event, frontend_action, export_snapshot")
        t0 = time.perf_counter()
        seed(setup(CommandBus(db)), tenants=tenants, commands=rows, days=days)
        with db.connection() as conn:
            conn.execute("ANALYZE")
        print(f"seeded {rows} commands in {time.perf_counter() - t0:.0f}s", file=sys.stderr)
    db.close()
    return url


_AMPLIFY = """
INSERT INTO command_log (cmd_uuid, cmd_class, cmd_version, tenant_id, actor_id, correlation_id, causation_id,
    replay_of, draft_uuid, status, error_type, error_message, started_at, finished_at, retention, subjects, cmd_body,
    body_excluded)
SELECT md5(cmd_uuid::text || %(k)s)::uuid, cmd_class, cmd_version, tenant_id, actor_id,
    md5(correlation_id::text || %(k)s)::uuid, causation_id, replay_of, draft_uuid, status, error_type, error_message,
    started_at - %(shift)s::interval, finished_at - %(shift)s::interval, retention, subjects, cmd_body, body_excluded
FROM command_log WHERE cmd_uuid IN (SELECT cmd_uuid FROM pick WHERE rn <= %(n)s);
INSERT INTO tenant_command_log (cmd_uuid, tenant_id, cmd_class, cmd_version, actor_id, correlation_id, causation_id,
    replay_of, draft_uuid, status, error_type, error_message, started_at, finished_at, retention, subjects, cmd_body,
    result)
SELECT md5(cmd_uuid::text || %(k)s)::uuid, tenant_id, cmd_class, cmd_version, actor_id,
    md5(correlation_id::text || %(k)s)::uuid, causation_id, replay_of, draft_uuid, status, error_type, error_message,
    started_at - %(shift)s::interval, finished_at - %(shift)s::interval, retention, subjects, cmd_body, result
FROM tenant_command_log WHERE cmd_uuid IN (SELECT cmd_uuid FROM pick WHERE rn <= %(n)s);
INSERT INTO domain_event (event_uuid, cmd_uuid, tenant_id, event_type, payload, occurred_at, retention)
SELECT md5(event_uuid::text || %(k)s)::uuid, md5(cmd_uuid::text || %(k)s)::uuid, tenant_id, event_type, payload,
    occurred_at - %(shift)s::interval, retention
FROM domain_event WHERE cmd_uuid IN (SELECT cmd_uuid FROM pick WHERE rn <= %(n)s);
"""


def amplified_database(rows: int, *, base_rows: int = 2_000_000, days: int = 30) -> str:
    """``bench_<rows>``: a copy of the seeded ``bench_<base_rows>`` grown to ``rows`` in SQL (saves seeding time).

    The extra commands are copies of seeded ones with new ids, shifted ``days``, 2×``days``, … into the past
    (``INSERT … SELECT``, tenant rows and events alike), so the class/actor/subject mix stays the seeded one.
    """
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    from storage import embedded
    from storage.migrate import ensure_partitions_between
    from storage.postgres import Database

    base = bench_database(base_rows)
    server = embedded.start_server(BENCH_HOME / "pg", keep_running=True)
    admin = embedded.ensure_database(server, "postgres")
    params = conninfo_to_dict(admin)
    params["dbname"] = f"bench_{rows}"
    url = make_conninfo(**params)
    with psycopg.connect(admin, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (params["dbname"],)).fetchone()
    if exists:
        with psycopg.connect(url) as conn:
            if conn.execute("SELECT count(*) FROM command_log").fetchone()[0] == rows:
                return url
    t0 = time.perf_counter()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(params["dbname"])))
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
            sql.Identifier(params["dbname"]), sql.Identifier(conninfo_to_dict(base)["dbname"])))
    db = Database(url=url)
    rounds = -(-(rows - base_rows) // base_rows)
    ensure_partitions_between(db, f"current_date - {(rounds + 1) * days + 2}", "current_date")
    left, k = rows - base_rows, 1
    with db.connection() as conn:
        conn.execute("CREATE TEMP TABLE pick AS SELECT cmd_uuid, row_number() OVER (ORDER BY cmd_uuid) AS rn "
                     "FROM command_log")  # the seeded rows only, before any copy
        conn.execute("CREATE INDEX ON pick (rn)")
        while left > 0:
            n = min(left, base_rows)
            for statement in _AMPLIFY.split(";"):
                if statement.strip():
                    conn.execute(statement, {"n": n, "k": f"-{k}", "shift": f"{k * days} days"})
            left, k = left - n, k + 1
    with db.connection() as conn:
        conn.execute("ANALYZE")
    db.close()
    print(f"grew {base_rows} seeded commands to {rows} in {time.perf_counter() - t0:.0f}s", file=sys.stderr)
    return url


def _child(mode: str, url: str, lake: str) -> dict:
    """Run one side in a child process; its wall time, rows and own peak RSS."""
    out = subprocess.run([sys.executable, "-m", "benchmarks.export", "--child", mode, "--database-url", url,
                          "--lake", lake], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{mode} child failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _run_child(mode: str, url: str, lake: str) -> None:
    from storage.postgres import Database

    t0 = time.perf_counter()
    if mode == "ceiling":
        rows = _ceiling(url, lake)
    else:
        from commandlog.journal.export import run_export

        db = Database(url=url)
        rows = sum(run_export(db, lake).rows.values())
        db.close()
    elapsed = time.perf_counter() - t0
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"mode": mode, "seconds": elapsed, "rows": rows, "peak_rss_mb": round(rss_mb, 1)}))


def _ceiling(url: str, lake: str) -> int:
    """ADBC fetch + partitioned write of the same rows, no bookkeeping."""
    import adbc_driver_postgresql.dbapi as adbc
    import pyarrow as pa
    import pyarrow.dataset as ds

    from storage.lake.arrow_export import DATASETS
    from storage.lake.datasets import WRITE_OPTIONS

    rows = 0
    with adbc.connect(url, autocommit=True) as conn, conn.cursor() as cur:
        for spec in DATASETS.values():
            cur.execute(f"SELECT {spec.columns} FROM {spec.table}")
            reader = cur.fetch_record_batch()
            counted = []
            ds.write_dataset(reader, f"{lake}/{spec.name}", format="parquet",
                             partitioning=ds.partitioning(
                                 pa.schema([reader.schema.field(k) for k in spec.partition_by]), flavor="hive"),
                             existing_data_behavior="overwrite_or_ignore", **WRITE_OPTIONS,
                             file_visitor=lambda f, c=counted: c.append(f.metadata.num_rows))
            rows += sum(counted)
    return rows


def _export_run(url: str) -> dict:
    """One run: the ceiling, then the export, each into a fresh lake."""
    out = {}
    for mode in ("ceiling", "export"):
        lake = tempfile.mkdtemp(prefix=f"cmdlog-bench-{mode}-")
        try:
            out[mode] = _child(mode, url, lake)
        finally:
            shutil.rmtree(lake, ignore_errors=True)
    ceiling, export = out["ceiling"], out["export"]
    if ceiling["rows"] != export["rows"]:
        raise SystemExit(f"row counts differ: ceiling {ceiling['rows']} vs export {export['rows']}")
    return {"rows_all_datasets": export["rows"], "ceiling_seconds": round(ceiling["seconds"], 2),
            "export_seconds": round(export["seconds"], 2),
            "export_rows_per_s": round(export["rows"] / export["seconds"]),
            "ratio_to_ceiling": round(ceiling["seconds"] / export["seconds"], 3),
            "ceiling_peak_rss_mb": ceiling["peak_rss_mb"], "peak_rss_mb": export["peak_rss_mb"]}


def main() -> None:
    """Seed (or reuse), then run ceiling and export ``--repeat`` times; print one JSON line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=2_000_000)
    add_repeat_argument(p)
    p.add_argument("--database-url")
    p.add_argument("--child", choices=["ceiling", "export"])
    p.add_argument("--lake")
    args = p.parse_args()
    if args.child:
        return _run_child(args.child, args.database_url, args.lake)
    load_start = loadavg()
    url = bench_database(args.rows, url=args.database_url)
    runs = repeat(args.repeat, lambda i: _export_run(url), label="export-run")
    print_summary("export", runs, load_start=load_start,
                  keys=("ratio_to_ceiling", "export_seconds", "ceiling_seconds", "export_rows_per_s", "peak_rss_mb",
                        "ceiling_peak_rss_mb"),
                  extra={"rows": args.rows, "rows_all_datasets": runs[0]["rows_all_datasets"],
                         "peak_rss_mb_max": max(r["peak_rss_mb"] for r in runs)})


if __name__ == "__main__":
    main()
