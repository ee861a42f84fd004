"""Activity statistics benchmark: ``GET /api/journal/stats``'s figures from Postgres vs from the lake (plus the rows
not exported yet), per window length, for single tenants — where the ``source="auto"`` line should be.

    python -m benchmarks.journal_stats [--rows 1000000] [--tenants 5] [--runs 3] [--repeat 3] [--database-url URL]

For each window (1, 2, 7 and 30 days ending at the newest seeded row) and each of ``--tenants`` tenants, both paths
run ``--runs`` times (after one warm-up each) and must give the same figures; ``lake_speedup_<window>`` is the median
over tenants of (Postgres median seconds / lake median seconds), both measured in this run on the same rows. The lake
is exported from the benchmark database first (incrementally, as ``benchmarks.journal`` does), so the unexported
rows are few, as after an hourly export.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import time

from benchmarks._common import add_repeat_argument, loadavg, print_summary, repeat
from benchmarks.export import BENCH_HOME, bench_database

WINDOWS = {"1d": dt.timedelta(days=1), "2d": dt.timedelta(days=2), "7d": dt.timedelta(days=7),
           "30d": dt.timedelta(days=30)}


def _median_time(fn, runs: int) -> tuple[float, object]:
    fn()  # warm: pool, plans, file metadata
    times, out = [], None
    for _ in range(runs):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def bench_windows(db, lake: str, tenants: list[str], newest: dt.datetime, *, runs: int) -> dict:
    """Per window: median over tenants of Postgres and lake milliseconds and their ratio."""
    from commandlog.journal.stats import activity

    out = {}
    for name, span in WINDOWS.items():
        bucket = "hour" if span <= dt.timedelta(days=7) else "day"
        pg_ms, lake_ms, ratios = [], [], []
        for tenant in tenants:
            kw = {"tenant": tenant, "since": newest - span, "until": newest, "bucket": bucket, "lake_uri": lake}
            pg, pg_stats = _median_time(lambda kw=kw: activity(db, source="postgres", **kw).to_json(), runs)
            lk, lake_stats = _median_time(lambda kw=kw: activity(db, source="lake", **kw).to_json(), runs)
            same = {k: pg_stats[k] for k in ("total", "failed", "commands")} == {  # type: ignore[index]
                k: lake_stats[k] for k in ("total", "failed", "commands")}  # type: ignore[index]
            if not same:
                raise SystemExit(f"{name} {tenant}: Postgres and the lake disagree")
            pg_ms.append(pg * 1000)
            lake_ms.append(lk * 1000)
            ratios.append(pg / lk)
        out[name] = {"postgres_ms": round(statistics.median(pg_ms), 1), "lake_ms": round(statistics.median(lake_ms), 1),
                     "lake_speedup": round(statistics.median(ratios), 2)}
        print(f"{name}: {out[name]}", file=sys.stderr)
    return out


def main() -> None:
    """Seed (or reuse), export, time both paths per window; print one JSON line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--tenants", type=int, default=5, help="Tenants timed per window (the busiest first).")
    p.add_argument("--runs", type=int, default=3, help="Timed calls per path, tenant and window.")
    p.add_argument("--database-url")
    add_repeat_argument(p)
    args = p.parse_args()
    load_start = loadavg()

    from commandlog.journal.export import run_compaction, run_export
    from storage.postgres import Database

    db = Database(url=bench_database(args.rows, url=args.database_url))
    lake = str(BENCH_HOME / f"lake_{args.rows}")
    run_export(db, lake)
    run_compaction(db, lake)
    with db.connection() as conn:
        newest = conn.execute("SELECT max(started_at) FROM command_log").fetchone()[0]
        tenants = [r[0] for r in conn.execute(
            "SELECT tenant_id FROM command_log GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT %s", (args.tenants,))]
    newest = newest.astimezone(dt.UTC)

    def run(i: int) -> dict:
        windows = bench_windows(db, lake, tenants, newest, runs=args.runs)
        return {**{f"lake_speedup_{k}": v["lake_speedup"] for k, v in windows.items()},
                **{f"postgres_ms_{k}": v["postgres_ms"] for k, v in windows.items()},
                **{f"lake_ms_{k}": v["lake_ms"] for k, v in windows.items()}}

    runs = repeat(args.repeat, run, label="journal-stats-run")
    db.close()
    keys = [f"{m}_{k}" for k in WINDOWS for m in ("lake_speedup", "postgres_ms", "lake_ms")]
    print_summary("journal_stats", runs, load_start=load_start, keys=keys,
                  extra={"rows": args.rows, "tenants": len(tenants)})


if __name__ == "__main__":
    main()
