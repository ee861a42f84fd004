"""Scale-out benchmark — the S3 part: ``journal report`` on a lake in object storage.

    python -m benchmarks.scale_out [--rows 300000] [--runs 5] [--repeat 3] [--database-url URL]

Seeds (or reuses) ``--rows`` commands (``benchmarks.export.bench_database``), exports them — export + compaction,
as ``cmdlog export`` does — once to a local lake and once to ``s3://bench/lake`` on a local S3 endpoint the benchmark
starts itself (moto's server on the loopback, ``tests/s3server.py``; it answers one request at a time, ~ms each, so
S3 figures here are dominated by request count: they are counted from the server's log). Then, per ``--repeat`` run,
the whole ``journal report`` (every built-in report, ``commandlog.journal.analytics.reports``) is timed — median of
``--runs`` after one warm-up, each on a connection kept open — on:

- the S3 lake read by DuckDB's own Parquet reader through the registered s3fs (this change: ``s3_warm_report_s``);
- the same S3 lake through pyarrow datasets scanned by DuckDB (the path every non-local lake took before:
  ``arrow_dataset_report_s``), same run, same files;
- the local lake (``local_report_s``).

Figures: ``s3_speedup_vs_arrow_dataset`` = arrow_dataset / s3_warm (goal >= 2), ``s3_to_local_ratio`` =
s3_warm / local, ``s3_gets_per_report`` = GET requests of one report on a new connection (cold: footers and column
chunks), ``s3_requests_per_warm_report`` (all methods, warm connection), ``arrow_dataset_gets_per_report`` (warm: it
re-reads the files every time), ``s3_cold_report_s`` (new connection, first report).
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import statistics
import sys
import tempfile
import time
import uuid

from benchmarks._common import add_repeat_argument, loadavg, print_summary, repeat
from benchmarks.export import BENCH_HOME, bench_database


def _median_time(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    """Seed or reuse, export to a local and an S3 lake, time the reports three ways; print JSON lines."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=300_000, help="Seeded commands (moderate: moto keeps S3 in memory).")
    p.add_argument("--runs", type=int, default=5, help="Timed reports per path and run (after one warm-up).")
    p.add_argument("--database-url")
    add_repeat_argument(p)
    args = p.parse_args()
    load_start = loadavg()

    from commandlog.journal.analytics import reports
    from commandlog.journal.export import run_compaction, run_export
    from storage.lake.datasets import Lake
    from storage.lake.duckdb_journal import open_journal
    from storage.postgres import Database
    from tests.s3server import S3Server, apply_env

    local_uri = tempfile.mkdtemp(prefix="s3bench-local-", dir=BENCH_HOME)
    server = S3Server().start()
    apply_env(server)  # the lake reads the standard AWS variables, nothing else
    server.create_bucket("bench")
    try:
        db = Database(url=bench_database(args.rows, url=args.database_url))
        s3_uri = f"s3://bench/lake-{uuid.uuid4().hex[:8]}"  # new lakes: the database's export ledger outlives moto
        setup: dict = {}
        for name, uri in (("local", local_uri), ("s3", s3_uri)):
            mark = server.mark()
            t0 = time.perf_counter()
            run_export(db, uri)
            run_compaction(db, uri)
            setup[f"{name}_export_s"] = round(time.perf_counter() - t0, 2)
            if name == "s3":
                setup["s3_export_requests"] = dict(server.requests(mark))
        s3_lake = Lake(s3_uri)
        files = s3_lake.manifest()[1]
        setup["lake_files_commands"] = sum(1 for f in files if f.dataset == "commands")
        setup["lake_rows_commands"] = sum(f.rows for f in files if f.dataset == "commands")
        print(f"setup: {setup}", file=sys.stderr)

        arrow_lake = Lake(s3_uri)  # the same files, read the pre-change way: pyarrow datasets DuckDB scans
        arrow_lake.location = dataclasses.replace(arrow_lake.location, scheme="s3-via-arrow-dataset")

        def one_report(con) -> None:
            assert all(r.table.num_rows for r in reports(con))

        def run(i: int) -> dict:
            mark = server.mark()
            t0 = time.perf_counter()
            s3_con = open_journal(s3_lake)
            one_report(s3_con)
            cold = time.perf_counter() - t0
            cold_gets = server.requests(mark)["GET"]
            s3_warm = _median_time(lambda: one_report(s3_con), args.runs)
            mark = server.mark()
            one_report(s3_con)
            warm_requests = sum(server.requests(mark).values())

            arrow_con = open_journal(arrow_lake)
            one_report(arrow_con)
            arrow = _median_time(lambda: one_report(arrow_con), args.runs)
            mark = server.mark()
            one_report(arrow_con)
            arrow_gets = server.requests(mark)["GET"]

            local_con = open_journal(Lake(local_uri))
            one_report(local_con)
            local = _median_time(lambda: one_report(local_con), args.runs)
            return {"s3_speedup_vs_arrow_dataset": round(arrow / s3_warm, 2),
                    "s3_to_local_ratio": round(s3_warm / local, 2),
                    "s3_gets_per_report": cold_gets, "s3_requests_per_warm_report": warm_requests,
                    "arrow_dataset_gets_per_report": arrow_gets, "s3_warm_report_s": round(s3_warm, 4),
                    "arrow_dataset_report_s": round(arrow, 4), "local_report_s": round(local, 4),
                    "s3_cold_report_s": round(cold, 3)}

        runs = repeat(args.repeat, run, label="scale_out-s3-run")
        db.close()
        print_summary("scale_out-s3", runs, load_start=load_start,
                      keys=["s3_speedup_vs_arrow_dataset", "s3_to_local_ratio", "s3_gets_per_report",
                            "s3_requests_per_warm_report", "arrow_dataset_gets_per_report", "s3_warm_report_s",
                            "arrow_dataset_report_s", "local_report_s", "s3_cold_report_s"],
                      extra={"rows": args.rows, "runs": args.runs, **setup})
    finally:
        server.stop()
        shutil.rmtree(local_uri, ignore_errors=True)


if __name__ == "__main__":
    main()
