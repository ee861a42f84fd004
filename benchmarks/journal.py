"""Journal benchmark: the ``journal report`` queries on DuckDB over the lake vs the same SQL on Postgres, and the
latency of subject, actor and class timelines on Postgres (tenant session, first page of 50).

    python -m benchmarks.journal [--rows 5000000] [--timelines 100] [--repeat 3] [--database-url URL]

``duckdb_speedup_median``: median over the report queries of (Postgres median time / DuckDB median time), both
measured in this run on the same rows (the lake is exported from the benchmark database first, incrementally).
``timeline_p95_ms``: p95 over all timeline calls (Python API, connection from the pool, rows decoded).
``journal_report_s``: the whole ``journal report`` (every built-in report with its cut-off count, on a connection
opened for it, as the CLI does) — cold (first) and warm (median). ``lake_files_per_million_rows``: Parquet files of
the lake per million rows of each dataset after the export and its compaction (``lake_layout``).
Seeds and exports once; each of the ``--repeat`` runs times reports and timelines and prints its own JSON line;
the final line has the medians and min/max over the runs and the load average at the start and end.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time

from benchmarks._common import add_repeat_argument, loadavg, print_summary, repeat
from benchmarks.export import BENCH_HOME, amplified_database, bench_database


def _median_time(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_reports(db, lake_uri: str, *, runs: int) -> dict[str, dict]:
    """Each report's median seconds on DuckDB (lake) and on Postgres (``command_log``)."""
    from commandlog.journal.analytics import REPORTS, lake_connection, report_sql
    from storage.lake.duckdb_journal import query

    con = lake_connection(lake_uri)
    out = {}
    with db.connection() as conn:
        conn.execute("SET TimeZone = 'UTC'")
        for name in REPORTS:
            duck_sql = report_sql(name, source="commands")
            pg_sql = report_sql(name, source="command_log")
            query(con, duck_sql).read_all()  # warm: file metadata, page cache
            conn.execute(pg_sql).fetchall()
            duck = _median_time(lambda s=duck_sql: query(con, s).read_all(), runs)
            pg = _median_time(lambda s=pg_sql: conn.execute(s).fetchall(), max(1, runs // 2))
            out[name] = {"duckdb_ms": round(duck * 1000, 1), "postgres_ms": round(pg * 1000, 1),
                         "speedup": round(pg / duck, 1)}
            print(f"{name}: {out[name]}", file=sys.stderr)
    return out


def lake_layout(lake_uri: str) -> dict:
    """Files, rows and files per million rows of each lake dataset (from the newest manifest)."""
    from storage.lake.datasets import Lake

    _, files = Lake(lake_uri).manifest() or (0, [])
    out: dict[str, dict] = {}
    for f in files:
        d = out.setdefault(f.dataset, {"files": 0, "rows": 0})
        d["files"] += 1
        d["rows"] += f.rows
    for d in out.values():
        d["files_per_million_rows"] = round(d["files"] / (d["rows"] / 1e6), 1) if d["rows"] else None
    return out


def bench_journal_report(lake_uri: str, *, runs: int) -> dict:
    """Seconds of the whole ``journal report`` (open the journal, every built-in report): first call and median."""
    from commandlog.journal.analytics import lake_connection, reports

    def once() -> None:
        con = lake_connection(lake_uri)
        reports(con)
        con.close()

    t0 = time.perf_counter()
    once()
    cold = time.perf_counter() - t0
    return {"cold_s": round(cold, 3), "warm_s": round(_median_time(once, runs), 3)}


def bench_timelines(db, *, n: int, seed: int = 3) -> dict:
    """Latencies (ms) of ``n`` subject, ``n`` actor and ``n`` class timelines for random tenants."""
    from commandlog.journal.entries import timeline

    rng = random.Random(seed)
    with db.connection() as conn:
        sample = conn.execute("SELECT tenant_id, actor_id, cmd_class, subjects FROM command_log "
                              "TABLESAMPLE SYSTEM (1) LIMIT 2000").fetchall()
    sample = [r for r in sample if r[3]]
    lat: dict[str, list[float]] = {"subject": [], "actor": [], "cmd_class": []}
    for _ in range(3):  # warm the pool and plans
        t, a, c, s = rng.choice(sample)
        timeline(db, tenant=t, actor=a)
    for kind in lat:
        for _ in range(n):
            t, a, c, s = rng.choice(sample)
            value = {"subject": rng.choice(s), "actor": a, "cmd_class": c}[kind]
            t0 = time.perf_counter()
            page = timeline(db, tenant=t, **{kind: value})
            lat[kind].append((time.perf_counter() - t0) * 1000)
            assert page.entries, (kind, value)
    every = sorted(x for v in lat.values() for x in v)
    return {"p95_ms": round(every[int(0.95 * (len(every) - 1))], 2),
            "per_filter_p95_ms": {k: round(sorted(v)[int(0.95 * (len(v) - 1))], 2) for k, v in lat.items()},
            "p50_ms": round(statistics.median(every), 2)}


def main() -> None:
    """Seed (or reuse), export to the benchmark lake, time reports and timelines; print one JSON line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=5_000_000)
    p.add_argument("--timelines", type=int, default=100, help="Timelines per filter kind.")
    p.add_argument("--runs", type=int, default=5, help="Runs per DuckDB report query (Postgres: half).")
    p.add_argument("--database-url")
    p.add_argument("--amplify", action=argparse.BooleanOptionalAction, default=True,
                   help="Above 2M rows, grow the seeded 2M database in SQL instead of seeding every row.")
    add_repeat_argument(p)
    args = p.parse_args()
    load_start = loadavg()

    from commandlog.journal.export import run_compaction, run_export
    from storage.postgres import Database

    if args.database_url or args.rows <= 2_000_000 or not args.amplify:
        url = bench_database(args.rows, url=args.database_url)
    else:
        url = amplified_database(args.rows)
    db = Database(url=url)
    lake = str(BENCH_HOME / f"lake_{args.rows}")
    t0 = time.perf_counter()
    exported = run_export(db, lake)
    compacted = run_compaction(db, lake)  # as `cmdlog export` does
    print(f"export to {lake}: {sum(exported.rows.values())} new rows, {compacted.replaced} files compacted, "
          f"in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    layout = lake_layout(lake)
    print(f"lake layout: {layout}", file=sys.stderr)

    def run(i: int) -> dict:
        reports = bench_reports(db, lake, runs=args.runs)
        journal_report = bench_journal_report(lake, runs=max(1, args.runs // 2))
        timelines = bench_timelines(db, n=args.timelines, seed=3 + i)
        return {"duckdb_speedup_median": round(statistics.median(r["speedup"] for r in reports.values()), 2),
                "journal_report_s": journal_report["warm_s"], "journal_report_cold_s": journal_report["cold_s"],
                "duckdb_reports_ms_sum": round(sum(r["duckdb_ms"] for r in reports.values()), 1),
                "timeline_p95_ms": timelines["p95_ms"], "timeline_p50_ms": timelines["p50_ms"],
                "timeline_per_filter_p95_ms": timelines["per_filter_p95_ms"], "reports": reports}

    runs = repeat(args.repeat, run, label="journal-run")
    db.close()
    print_summary("journal", runs, load_start=load_start,
                  keys=("duckdb_speedup_median", "journal_report_s", "journal_report_cold_s", "duckdb_reports_ms_sum",
                        "timeline_p95_ms", "timeline_p50_ms"),
                  extra={"rows": args.rows, "lake_files_per_million_rows":
                         {k: v["files_per_million_rows"] for k, v in layout.items()},
                         "lake_files": {k: v["files"] for k, v in layout.items()}})


if __name__ == "__main__":
    main()
