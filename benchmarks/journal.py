"""Journal benchmark: the ``journal report`` queries on DuckDB over the lake vs the same SQL on Postgres, and the
latency of timelines on Postgres (first page of 50) for every filter — subject, actor, class, correlation, status,
time window and none — in tenant sessions and admin reads.

    python -m benchmarks.journal [--rows 5000000] [--timelines 100] [--repeat 3] [--database-url URL]
    python -m benchmarks.journal --rows 2000000,5000000,20000000 [--no-reports]

``--rows`` takes one size or a comma-separated list. A list measures one growing database: ``bench_grow``, a copy
of the seeded ``bench_2000000``, grown in SQL to each size in turn (copies of seeded commands shifted 30, 60, …
days into the past, tenant rows and events alike, as ``benchmarks.export.amplified_database`` does), measured at
each size; the last line (``journal-curve``) has the worst-filter p95 and the per-filter p95 at every size, so the
curve is visible. ``--no-reports`` times the timelines only (no lake export, no DuckDB).

``duckdb_speedup_median``: median over the report queries of (Postgres median time / DuckDB median time), both
measured in this run on the same rows (the lake is exported from the benchmark database first, incrementally).
``timeline_p95_ms``: the worst filter's p95 (Python API, connection from the pool, rows and events decoded);
``timeline_per_filter_p95_ms`` has each filter's, as ``tenant.<filter>`` and ``admin.<filter>``.
``journal_report_s``: the whole ``journal report`` (every built-in report with its cut-off count, on a connection
opened for it, as the CLI does) — cold (first) and warm (median). ``lake_files_per_million_rows``: Parquet files of
the lake per million rows of each dataset after the export and its compaction (``lake_layout``).
Seeds and exports once; each of the ``--repeat`` runs times reports and timelines and prints its own JSON line;
the final line has the medians and min/max over the runs and the load average at the start and end.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time

from benchmarks._common import add_repeat_argument, loadavg, percentile, print_summary, repeat
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


SESSIONS = ("tenant", "admin")
FILTERS = ("subject", "actor", "cmd_class", "correlation_id", "status", "window", "none")


def _sample(db, rows: int) -> list[tuple]:
    """About 3000 rows picked across the whole log (block sample, so old and new partitions alike)."""
    pct = min(100.0, 300_000 / max(rows, 1))
    with db.connection() as conn:
        sample = conn.execute(f"SELECT tenant_id, actor_id, cmd_class, subjects, correlation_id, status, started_at "
                              f"FROM command_log TABLESAMPLE SYSTEM ({pct:.4f}) REPEATABLE (7)").fetchall()
    return [r for r in sample if r[3]]


def _kwargs(kind: str, row: tuple, rng: random.Random, failed: list[tuple]) -> dict:
    import datetime as dt

    t, a, c, s, corr, _status, at = row
    if kind == "status":
        t = rng.choice(failed)[0] if failed else t
        return {"tenant": t, "status": "failed" if failed else "succeeded"}
    half = dt.timedelta(hours=1)
    value = {"subject": {"subject": rng.choice(s)}, "actor": {"actor": a}, "cmd_class": {"cmd_class": c},
             "correlation_id": {"correlation_id": corr}, "window": {"since": at - half, "until": at + half},
             "none": {}}[kind]
    return {"tenant": t, **value}


def bench_timelines(db, *, n: int, rows: int, seed: int = 3) -> dict:
    """Latencies (ms) of ``n`` first pages per filter and session (tenant session / admin), random sampled values."""
    from commandlog.journal.entries import timeline

    rng = random.Random(seed)
    sample = _sample(db, rows)
    failed = [r for r in sample if r[5] == "failed"]
    lat: dict[str, list[float]] = {f"{s}.{k}": [] for s in SESSIONS for k in FILTERS}
    for _ in range(3):  # warm the pool and the caches
        timeline(db, tenant=rng.choice(sample)[0], actor=rng.choice(sample)[1])
    for name in lat:
        session, kind = name.split(".")
        for _ in range(n):
            kw = _kwargs(kind, rng.choice(sample), rng, failed)
            if session == "admin" and kind not in ("none", "status", "window"):
                kw["tenant"] = None  # admin reads of the global log, every tenant
            t0 = time.perf_counter()
            page = timeline(db, admin=session == "admin", **kw)
            lat[name].append((time.perf_counter() - t0) * 1000)
            assert page.entries, (name, kw)
    per = {k: round(percentile(v, 95), 2) for k, v in lat.items()}
    every = [x for v in lat.values() for x in v]
    return {"p95_ms": max(per.values()), "worst_filter": max(per, key=per.__getitem__),
            "per_filter_p95_ms": per, "p50_ms": round(statistics.median(every), 2)}


_GROW = """
INSERT INTO command_log (cmd_uuid, cmd_class, cmd_version, tenant_id, actor_id, correlation_id, causation_id,
    replay_of, draft_uuid, status, error_type, error_message, started_at, finished_at, retention, subjects, cmd_body,
    body_excluded)
SELECT md5(cmd_uuid::text || %(k)s)::uuid, cmd_class, cmd_version, tenant_id, actor_id,
    md5(correlation_id::text || %(k)s)::uuid, causation_id, replay_of, draft_uuid, status, error_type, error_message,
    started_at - %(shift)s::interval, finished_at - %(shift)s::interval, retention, subjects, cmd_body, body_excluded
FROM command_log WHERE cmd_uuid IN (SELECT cmd_uuid FROM bench_pick WHERE rn > %(lo)s AND rn <= %(hi)s);
INSERT INTO tenant_command_log (cmd_uuid, tenant_id, cmd_class, cmd_version, actor_id, correlation_id, causation_id,
    replay_of, draft_uuid, status, error_type, error_message, started_at, finished_at, retention, subjects, cmd_body,
    result)
SELECT md5(cmd_uuid::text || %(k)s)::uuid, tenant_id, cmd_class, cmd_version, actor_id,
    md5(correlation_id::text || %(k)s)::uuid, causation_id, replay_of, draft_uuid, status, error_type, error_message,
    started_at - %(shift)s::interval, finished_at - %(shift)s::interval, retention, subjects, cmd_body, result
FROM tenant_command_log WHERE cmd_uuid IN (SELECT cmd_uuid FROM bench_pick WHERE rn > %(lo)s AND rn <= %(hi)s);
INSERT INTO domain_event (event_uuid, cmd_uuid, tenant_id, event_type, payload, occurred_at, retention)
SELECT md5(event_uuid::text || %(k)s)::uuid, md5(cmd_uuid::text || %(k)s)::uuid, tenant_id, event_type, payload,
    occurred_at - %(shift)s::interval, retention
FROM domain_event WHERE cmd_uuid IN (SELECT cmd_uuid FROM bench_pick WHERE rn > %(lo)s AND rn <= %(hi)s)
"""


def grown_database(rows: int, *, base_rows: int = 2_000_000, days: int = 30, name: str = "bench_grow") -> str:
    """``name``: a copy of the seeded ``bench_<base_rows>`` grown in place, in SQL, to ``rows`` commands.

    Called with growing sizes it only adds what is missing (the copies of the seeded rows are numbered, copy
    ``j`` of seeded row ``rn`` exists once the database holds ``base_rows * j + rn`` commands), so 2M → 5M → 20M
    costs one growth, not three databases. Copy ``j`` is shifted ``j * days`` days into the past.
    """
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    from storage import embedded
    from storage.migrate import ensure_partitions_between, upgrade
    from storage.postgres import Database

    base = bench_database(base_rows)
    server = embedded.start_server(BENCH_HOME / "pg", keep_running=True)
    admin = embedded.ensure_database(server, "postgres")
    params = conninfo_to_dict(admin)
    params["dbname"] = name
    url = make_conninfo(**params)
    with psycopg.connect(admin, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(conninfo_to_dict(base)["dbname"])))
    db = Database(url=url)
    upgrade(db)
    with db.connection() as conn:
        # The seeded rows, numbered once before any copy (kept, so that later growth continues the numbering).
        conn.execute("CREATE TABLE IF NOT EXISTS bench_pick AS SELECT cmd_uuid, row_number() OVER (ORDER BY cmd_uuid) "
                     "AS rn FROM command_log")
        conn.execute("CREATE INDEX IF NOT EXISTS bench_pick_rn ON bench_pick (rn)")
        have = conn.execute("SELECT count(*) FROM command_log").fetchone()[0]
    if have >= rows:
        db.close()
        return url
    t0 = time.perf_counter()
    rounds = -(-(rows - base_rows) // base_rows)
    ensure_partitions_between(db, f"current_date - {(rounds + 1) * days + 2}", "current_date")
    done = have - base_rows
    with db.connection() as conn:
        conn.execute("SET synchronous_commit = off")
        while done < rows - base_rows:
            k, lo = done // base_rows + 1, done % base_rows
            hi = min(base_rows, lo + (rows - base_rows - done))
            for statement in _GROW.split(";"):
                conn.execute(statement, {"lo": lo, "hi": hi, "k": f"-{k}", "shift": f"{k * days} days"})
            conn.commit()
            done += hi - lo
            print(f"grew to {base_rows + done} rows ({time.perf_counter() - t0:.0f}s)", file=sys.stderr, flush=True)
    with db.connection() as conn:
        conn.execute("ANALYZE")
    db.close()
    print(f"grew {have} commands to {rows} in {time.perf_counter() - t0:.0f}s", file=sys.stderr)
    return url


def _sizes(text: str) -> list[int]:
    try:
        sizes = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"--rows: a row count or a comma-separated list of them, not {text!r}") \
            from None
    if not sizes or sizes[0] < 1:
        raise argparse.ArgumentTypeError("--rows: row counts must be positive")
    return sizes


def main() -> None:
    """Seed (or reuse/grow), export to the benchmark lake, time reports and timelines; print JSON lines."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=_sizes, default=[5_000_000],
                   help="Row count, or a comma-separated list measured on one growing database.")
    p.add_argument("--timelines", type=int, default=100, help="Timelines per filter and session.")
    p.add_argument("--runs", type=int, default=5, help="Runs per DuckDB report query (Postgres: half).")
    p.add_argument("--database-url")
    p.add_argument("--amplify", action=argparse.BooleanOptionalAction, default=True,
                   help="Above 2M rows, grow the seeded 2M database in SQL instead of seeding every row.")
    p.add_argument("--reports", action=argparse.BooleanOptionalAction, default=True,
                   help="Export the lake and time the DuckDB/Postgres reports (--no-reports: timelines only).")
    add_repeat_argument(p)
    args = p.parse_args()
    curve: dict[str, dict] = {}
    for rows in args.rows:
        curve[str(rows)] = measure_size(args, rows, grow=len(args.rows) > 1)
    if len(args.rows) > 1:
        print(json.dumps({"benchmark": "journal-curve", "rows": args.rows,
                          "timeline_p95_ms": {k: v.get("timeline_p95_ms") for k, v in curve.items()},
                          "timeline_per_filter_p95_ms": {k: v.get("timeline_per_filter_p95_ms")
                                                         for k, v in curve.items()},
                          "duckdb_speedup_median": {k: v.get("duckdb_speedup_median") for k, v in curve.items()},
                          "loadavg": {k: [v["loadavg_start"], v["loadavg_end"]] for k, v in curve.items()}}),
              flush=True)


def measure_size(args: argparse.Namespace, rows: int, *, grow: bool) -> dict:
    """One size: the database (seeded, amplified or grown), then ``--repeat`` runs; returns the summary line."""
    load_start = loadavg()

    from commandlog.journal.export import run_compaction, run_export
    from storage.postgres import Database

    if grow and not args.database_url:
        url = grown_database(rows)
    elif args.database_url or rows <= 2_000_000 or not args.amplify:
        url = bench_database(rows, url=args.database_url)
    else:
        url = amplified_database(rows)
    db = Database(url=url)
    lake = str(BENCH_HOME / f"lake_{'grow' if grow else rows}")
    layout: dict = {}
    if args.reports:
        t0 = time.perf_counter()
        exported = run_export(db, lake)
        compacted = run_compaction(db, lake)  # as `cmdlog export` does
        print(f"export to {lake}: {sum(exported.rows.values())} new rows, {compacted.replaced} files compacted, "
              f"in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
        layout = lake_layout(lake)
        print(f"lake layout: {layout}", file=sys.stderr)

    def run(i: int) -> dict:
        out: dict = {"rows": rows}
        if args.reports:
            reports = bench_reports(db, lake, runs=args.runs)
            journal_report = bench_journal_report(lake, runs=max(1, args.runs // 2))
            out.update({"duckdb_speedup_median": round(statistics.median(r["speedup"] for r in reports.values()), 2),
                        "journal_report_s": journal_report["warm_s"], "journal_report_cold_s": journal_report["cold_s"],
                        "duckdb_reports_ms_sum": round(sum(r["duckdb_ms"] for r in reports.values()), 1),
                        "reports": reports})
        timelines = bench_timelines(db, n=args.timelines, rows=rows, seed=3 + i)
        out.update({"timeline_p95_ms": timelines["p95_ms"], "timeline_worst_filter": timelines["worst_filter"],
                    "timeline_p50_ms": timelines["p50_ms"],
                    "timeline_per_filter_p95_ms": timelines["per_filter_p95_ms"]})
        return out

    runs = repeat(args.repeat, run, label="journal-run")
    db.close()
    per_filter = {k: round(statistics.median(r["timeline_per_filter_p95_ms"][k] for r in runs), 2)
                  for k in runs[0]["timeline_per_filter_p95_ms"]}
    return print_summary("journal", runs, load_start=load_start,
                         keys=("duckdb_speedup_median", "journal_report_s", "journal_report_cold_s",
                               "duckdb_reports_ms_sum", "timeline_p95_ms", "timeline_p50_ms"),
                         extra={"rows": rows, "timeline_per_filter_p95_ms": per_filter,
                                "lake_files_per_million_rows":
                                    {k: v["files_per_million_rows"] for k, v in layout.items()},
                                "lake_files": {k: v["files"] for k, v in layout.items()}})


if __name__ == "__main__":
    main()
