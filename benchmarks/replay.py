"""Replay throughput: N failed commands replayed in execute mode through the ``replay-commands`` flow, against
executing the same commands directly through the bus, in the same run and on the same database.

    python -m benchmarks.replay                # 10k commands
    python -m benchmarks.replay --rows 2000    # a quick look

Setup: a fresh embedded Postgres (or ``--database-url``), N billing customers, N ``RenameCustomer`` originals
logged as failed (batch path). Baseline: N ``RenameCustomer`` commands through ``bus.execute`` one by one.
Direct and flow runs alternate, twice each, and each path counts its best run (on a shared machine single runs
swing). Flow: the ``replay-commands`` flow (plan task, one task per batch, report task) under a temporary
Prefect server, Prefect defaults otherwise (heartbeats on). Also the same replay through the service without
Prefect (``run_replay``), on a second tenant, to show what Prefect itself costs. ``--repeat R`` runs R rounds
(fresh tenants each; default 1, a round takes minutes), prints each as a JSON line, and ends with one JSON line of
the medians and min/max over the rounds with the load average at the start and end; ``ratio_to_direct`` is
flow/direct throughput (target >= 0.7).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from benchmarks._common import add_repeat_argument, loadavg, print_summary, repeat


def _setup(db, bus, tenant: str, n: int) -> None:
    """``n`` customers of ``tenant`` and ``n`` failed renames of them in the log."""
    from commandlog.bus import HistoricalCommand
    from commandlog.context import ExecutionContext
    from examples.billing import commands as c

    copy_sql = "COPY billing.customer (tenant_id, customer_id, name, email) FROM STDIN"
    with db.connection() as conn, conn.cursor() as cur, cur.copy(copy_sql) as copy:
        for i in range(1, n + 1):
            copy.write_row((tenant, i, f"Customer {i}", f"c{i}@{tenant}.example"))
    ctx = ExecutionContext(tenant_id=tenant, actor_id=f"clerk@{tenant}")
    start = datetime.now(UTC) - timedelta(hours=1)
    bus.import_history(HistoricalCommand(
        command=c.RenameCustomer(customer_id=i, name=f"Renamed {i}"), context=ctx,
        started_at=start + timedelta(milliseconds=i), status="failed", error_type="CustomerNotFoundError",
        error_message=f"customer {i} does not exist") for i in range(1, n + 1))


def _direct(bus, tenant: str, n: int, *, label: str) -> float:
    from commandlog.context import ExecutionContext
    from examples.billing import commands as c

    ctx = ExecutionContext(tenant_id=tenant, actor_id="bench")
    start = time.perf_counter()
    for i in range(1, n + 1):
        bus.execute(c.RenameCustomer(customer_id=i, name=f"{label} {i}"), ctx)
    return time.perf_counter() - start


def _request(tenant: str, n: int, batch_size: int):
    from commandlog.replay.service import ReplayRequest

    return ReplayRequest(tenant_id=tenant, cmd_class="billing.RenameCustomer", status="failed", mode="execute",
                         requested_by="bench", max_commands=n, batch_size=batch_size)


def _flow(db, bus, replay_commands, tenant: str, n: int, batch_size: int) -> float:
    _setup(db, bus, tenant, n)
    start = time.perf_counter()
    summary = replay_commands(_request(tenant, n, batch_size))
    seconds = time.perf_counter() - start
    if summary["counts"] != {"succeeded": n}:
        raise SystemExit(f"flow replay did not succeed for every command: {summary['counts']}")
    return seconds


def _round(db, bus, replay_commands, n: int, batch_size: int, label: str) -> dict:
    """One measurement, alternating: direct, flow, service, direct, flow (fresh originals for each replay).

    On a shared machine single runs swing widely, so each path counts its best run: min(direct) / min(flow).
    """
    from commandlog.replay.service import run_replay

    base, service_tenant = f"bench-{label}", f"bench-service-{label}"
    _setup(db, bus, base, n)
    _setup(db, bus, service_tenant, n)
    _direct(bus, base, min(n, 200), label="Warm-up")
    direct_s = [_direct(bus, base, n, label="Direct")]
    flow_s = [_flow(db, bus, replay_commands, f"{base}-f1", n, batch_size)]
    start = time.perf_counter()
    report = run_replay(db, bus, _request(service_tenant, n, batch_size))
    service_s = time.perf_counter() - start
    if report.counts() != {"succeeded": n}:
        raise SystemExit(f"service replay did not succeed for every command: {report.counts()}")
    direct_s.append(_direct(bus, base, n, label="Again"))
    flow_s.append(_flow(db, bus, replay_commands, f"{base}-f2", n, batch_size))
    baseline_s, best_flow_s = min(direct_s), min(flow_s)
    return {"direct_runs_seconds": [round(x, 3) for x in direct_s], "flow_runs_seconds": [round(x, 3) for x in flow_s],
            "service_seconds": round(service_s, 3), "ratio_to_direct": round(baseline_s / best_flow_s, 3),
            "service_ratio_to_direct": round(baseline_s / service_s, 3), "baseline_seconds": baseline_s,
            "flow_seconds": best_flow_s}


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print one JSON line."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.replay")
    parser.add_argument("--rows", type=int, default=10_000, help="Commands to replay (default 10000).")
    parser.add_argument("--batch-size", type=int, default=1000, help="Commands per replay task.")
    add_repeat_argument(parser, default=1)
    parser.add_argument("--database-url", help="An existing Postgres instead of a fresh embedded one.")
    args = parser.parse_args(argv)
    load_start = loadavg()
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    home = Path(tempfile.mkdtemp(prefix="cmdlog-bench-replay-"))

    from commandlog.bootstrap import close_runtimes, runtime
    from commandlog.settings import Settings
    from storage import embedded
    from storage.migrate import upgrade
    from storage.postgres import Database

    server = None if args.database_url else embedded.start_server(home / "pg", delete_on_exit=True)
    db = Database(url=args.database_url or embedded.ensure_database(server, "bench_replay"))
    upgrade(db)
    os.environ["CMDLOG_DATABASE_URL"] = db.url  # the flow's tasks open the same database through runtime()
    _, bus = runtime(Settings.from_env())

    from prefect.testing.utilities import prefect_test_harness

    from flows.replay_commands import replay_commands

    stamp = int(time.time())
    with prefect_test_harness(server_startup_timeout=120):
        n = args.rows
        rounds = repeat(args.repeat, lambda r: _per_s(n, _round(db, bus, replay_commands, n, args.batch_size,
                                                                f"{stamp}-{r}")), label="replay-run")
    close_runtimes()
    db.close()
    if server is not None:
        embedded.stop_server(server)
    print_summary("replay", rounds, load_start=load_start,
                  keys=("ratio_to_direct", "service_ratio_to_direct", "direct_per_s", "flow_per_s", "service_per_s"),
                  extra={"rows": args.rows, "batch_size": args.batch_size})


def _per_s(n: int, r: dict) -> dict:
    return {"direct_per_s": round(n / r["baseline_seconds"], 1), "flow_per_s": round(n / r["flow_seconds"], 1),
            "service_per_s": round(n / r["service_seconds"], 1), **r}


if __name__ == "__main__":
    main()
