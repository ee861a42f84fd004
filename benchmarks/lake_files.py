"""Lake files benchmark: how many Parquet files hourly exports leave behind, with today's compaction against the
``min_files`` rule alone (the baseline, what compaction did before closed days), on the same rows in the same run.

    python -m benchmarks.lake_files [--rows 20000] [--days 4] [--hourly 8] [--per-export 60] [--repeat 1]
                                    [--admin-url URL]

Seeds ``--rows`` demo commands (30 days, 5 tenants: ``cmdlog demo seed``'s defaults) into a template database, copies
it twice, then on each copy simulates ``--days`` further days of ``--hourly`` exports each (every export first adds
``--per-export`` commands stamped in that hour, plus a few late ones for the day before, through the batch path),
running the export and its compaction after each, with the baseline rule on one copy and the current one on the other.
``files_per_million_rows`` counts the files the last manifest lists per million rows of all datasets;
``ratio_files`` = baseline files / current files. The simulated days are after the seeded ones (the partitions
exist: seeding creates them a week ahead), so nothing depends on today's date beyond the seed's own ``now``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
import time

from benchmarks._common import add_repeat_argument, loadavg, print_summary, repeat
from benchmarks.export import BENCH_HOME


def _databases(rows: int, admin: str | None = None) -> tuple[str, str, dt.datetime]:
    """Two fresh copies of a seeded template database; and the seed's ``now``."""
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    from commandlog.bus import CommandBus
    from examples.billing import setup
    from examples.billing.demo import seed
    from storage import embedded
    from storage.migrate import upgrade
    from storage.postgres import Database

    if admin is None:
        admin = embedded.ensure_database(embedded.start_server(BENCH_HOME / "pg", keep_running=True), "postgres")
    now = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
    template = f"lakefiles_{rows}"

    def url(name: str) -> str:
        params = conninfo_to_dict(admin)
        params["dbname"] = name
        return make_conninfo(**params)

    with psycopg.connect(admin, autocommit=True) as conn:
        for name in (template, f"{template}_base", f"{template}_now"):
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(template)))
    db = Database(url=url(template))
    upgrade(db)
    seed(setup(CommandBus(db)), tenants=5, commands=rows, days=30, now=now)
    db.close()
    with psycopg.connect(admin, autocommit=True) as conn:
        for name in (f"{template}_base", f"{template}_now"):
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name),
                                                                         sql.Identifier(template)))
    return url(f"{template}_base"), url(f"{template}_now"), now


def _simulate(url: str, lake: str, *, now: dt.datetime, days: int, hourly: int, per_export: int,
              close_days: bool) -> dict:
    """Hourly exports over ``days`` simulated days; the lake's files and rows at the end."""
    from commandlog.bus import CommandBus
    from commandlog.context import ExecutionContext
    from commandlog.journal.export import run_compaction, run_export
    from commandlog.records import HistoricalCommand
    from examples.billing import commands as c
    from examples.billing import setup
    from storage.lake.datasets import Lake
    from storage.postgres import Database

    db = Database(url=url)
    bus = setup(CommandBus(db))
    tenants = ["acme", "globex", "initech"]
    n = 10_000_000
    t0 = time.perf_counter()
    run_export(db, lake)
    run_compaction(db, lake, close_days=close_days)
    for d in range(1, days + 1):
        for h in range(hourly):
            hour = now + dt.timedelta(days=d, hours=h)
            entries = []
            for i in range(per_export + per_export // 10):
                late = i >= per_export  # a tenth arrive late, stamped the day before
                when = hour - dt.timedelta(days=1 if late else 0) + dt.timedelta(seconds=i)
                tenant = tenants[i % len(tenants)]
                n += 1
                entries.append(HistoricalCommand(
                    command=c.CreateCustomer(customer_id=n, name=f"C{n}", email=f"c{n}@x.example"),
                    context=ExecutionContext(tenant_id=tenant, actor_id=f"bob@{tenant}"), started_at=when))
            bus.import_history(entries)
            run_export(db, lake)
            run_compaction(db, lake, close_days=close_days)
    _, files = Lake(lake).manifest() or (0, [])
    db.close()
    rows = sum(f.rows for f in files)
    return {"files": len(files), "rows": rows, "files_per_million_rows": round(len(files) / (rows / 1e6), 1),
            "seconds": round(time.perf_counter() - t0, 1)}


def main() -> None:
    """Seed once; per repeat, simulate the hourly exports on both copies; print one JSON line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=20_000)
    p.add_argument("--days", type=int, default=4)
    p.add_argument("--hourly", type=int, default=8, help="Exports per simulated day.")
    p.add_argument("--per-export", type=int, default=60, help="Commands added before each export.")
    p.add_argument("--admin-url", help="A server's maintenance database URL (default: the benchmark server).")
    add_repeat_argument(p, default=1)
    args = p.parse_args()
    load_start = loadavg()
    base_url, now_url, now = _databases(args.rows, args.admin_url)

    def run(i: int) -> dict:
        out = {}
        for label, url, close in (("baseline", base_url, False), ("current", now_url, True)):
            with tempfile.TemporaryDirectory(prefix=f"cmdlog-lakefiles-{label}-") as lake:
                out[label] = _simulate(url, lake, now=now + dt.timedelta(days=args.days * i), days=args.days,
                                       hourly=args.hourly, per_export=args.per_export, close_days=close)
        return {"files_per_million_rows": out["current"]["files_per_million_rows"],
                "baseline_files_per_million_rows": out["baseline"]["files_per_million_rows"],
                "ratio_files": round(out["baseline"]["files"] / out["current"]["files"], 2), **out}

    runs = repeat(args.repeat, run, label="lake-files-run")
    print_summary("lake_files", runs, load_start=load_start,
                  keys=("files_per_million_rows", "baseline_files_per_million_rows", "ratio_files"),
                  extra={"rows": args.rows, "days": args.days, "hourly": args.hourly, "per_export": args.per_export})


if __name__ == "__main__":
    main()
