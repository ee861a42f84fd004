"""What tracing costs: the same billing handler (one UPDATE) run traced through the bus and untraced, interleaved;
and the batch (COPY) seeding path against a raw COPY of the same rows.

    python -m benchmarks.bus_overhead [--rows 5000] [--batch-rows 100000] [--repeat 3]

Each of the ``--repeat`` runs measures both parts (baselines included) and prints its own JSON line. Ends with one
JSON line: medians and min/max over the runs of p50_ratio and p99_ratio (traced / untraced latency) and
batch_vs_copy (raw COPY time / batch path time; 1.0 means the batch path costs nothing over COPY), with the load
average at the start and end. Uses a throwaway embedded Postgres unless
CMDLOG_BENCH_DATABASE_URL names a database (whose log tables it truncates).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from benchmarks._common import add_repeat_argument, loadavg, percentile, print_summary, repeat
from commandlog.bus import CommandBus
from commandlog.context import ExecutionContext, HandlerContext
from examples.billing import commands as c
from examples.billing import demo, setup
from examples.billing.handlers import rename_customer
from storage import logs
from storage.migrate import ensure_partitions
from storage.postgres import Database, open_database


def open_bench_db(tmp: str) -> Database:
    url = os.environ.get("CMDLOG_BENCH_DATABASE_URL")
    return open_database(url, home=Path(tmp), dbname="bench")


def untraced(db: Database, cmd: c.RenameCustomer, ctx: ExecutionContext) -> None:
    """The handler alone: same connection pool, same transaction shape, no log rows."""
    with db.connection() as conn:
        with conn.transaction():
            hctx = HandlerContext(conn=conn, execution=ctx, cmd_uuid=None, mode="live", _execute_nested=None)
            rename_customer(cmd, hctx)


def measure_overhead(db: Database, bus: CommandBus, rows: int) -> dict:
    ctx = ExecutionContext(tenant_id="bench", actor_id="bench@bench")
    with db.connection() as conn:
        conn.execute("INSERT INTO billing.customer (tenant_id, customer_id, name, email) "
                     "VALUES ('bench', 1, 'Bench', 'b@x.io') ON CONFLICT DO NOTHING")
    traced_ms, untraced_ms = [], []
    for i in range(200):  # warm-up: prepared statements, pool, caches
        bus.execute(c.RenameCustomer(customer_id=1, name=f"w{i}"), ctx)
        untraced(db, c.RenameCustomer(customer_id=1, name=f"w{i}"), ctx)
    for i in range(rows):
        cmd = c.RenameCustomer(customer_id=1, name=f"n{i}")
        for traced in ((True, False) if i % 2 else (False, True)):  # interleaved, alternating which goes first
            start = time.perf_counter()
            if traced:
                bus.execute(cmd, ctx)
            else:
                untraced(db, cmd, ctx)
            (traced_ms if traced else untraced_ms).append((time.perf_counter() - start) * 1000)
    return {
        "traced_p50_ms": round(percentile(traced_ms, 50), 4), "untraced_p50_ms": round(percentile(untraced_ms, 50), 4),
        "traced_p99_ms": round(percentile(traced_ms, 99), 4), "untraced_p99_ms": round(percentile(untraced_ms, 99), 4),
        "p50_ratio": round(percentile(traced_ms, 50) / percentile(untraced_ms, 50), 3),
        "p99_ratio": round(percentile(traced_ms, 99) / percentile(untraced_ms, 99), 3),
        "executions_each": rows,
    }


def _truncate(db: Database) -> None:
    with db.connection() as conn:
        conn.execute("TRUNCATE command_log, tenant_command_log, domain_event")


def measure_batch(db: Database, bus: CommandBus, rows: int) -> dict:
    ensure_partitions(db, days_back=31, days_ahead=1)
    entries = list(demo.history(tenants=10, commands=rows, days=30, seed=3))
    _truncate(db)
    start = time.perf_counter()
    bus.import_history(entries, batch_size=20_000)
    b = time.perf_counter() - start
    prepared = bus.copy_rows_of([bus.history_record(e) for e in entries])  # same rows, built untimed
    _truncate(db)
    start = time.perf_counter()
    with db.connection() as conn:
        logs.copy_rows(conn, **prepared)
    r = time.perf_counter() - start
    _truncate(db)
    return {"batch_rows": rows, "batch_s": round(b, 3), "raw_copy_s": round(r, 3),
            "batch_rows_per_s": round(rows / b), "batch_vs_copy": round(r / b, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5000, help="traced and untraced executions, each")
    parser.add_argument("--batch-rows", type=int, default=100_000, help="commands for the batch-vs-COPY part")
    add_repeat_argument(parser)
    args = parser.parse_args()
    load_start = loadavg()
    with tempfile.TemporaryDirectory() as tmp:
        db = open_bench_db(tmp)
        try:
            bus = setup(CommandBus(db))
            runs = repeat(args.repeat, lambda i: {**measure_overhead(db, bus, args.rows),
                                                  **measure_batch(db, bus, args.batch_rows)}, label="bus_overhead-run")
        finally:
            db.close()
    print_summary("bus_overhead", runs, load_start=load_start,
                  keys=("p50_ratio", "p99_ratio", "batch_vs_copy", "traced_p50_ms", "untraced_p50_ms",
                        "traced_p99_ms", "untraced_p99_ms", "batch_rows_per_s"),
                  extra={"executions_each": args.rows, "batch_rows": args.batch_rows})


if __name__ == "__main__":
    main()
