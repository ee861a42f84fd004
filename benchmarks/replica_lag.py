"""Replica lag during an export that reads the standby: ``replica_lag_p99_ms``, against the lag without the export.

A throwaway embedded primary and its hot standby (``storage.standby``, the wheel's ``pg_basebackup``) are built in a
temporary folder and deleted at the end. ``--rows`` commands are seeded, then in each run, with one writer thread
executing commands on the primary all along:

1. baseline: for ``--baseline-s`` seconds, probes measure the lag with only the writer running;
2. export: a full export of the log reads the standby (``CMDLOG_REPLICA_URL`` path, ``run_export``) while the probes
   go on;
3. the same export read from the primary (``replica=False``, into another lake), probes still running.

A probe commits a transaction on the primary, takes the WAL position of its commit (``pg_current_wal_lsn()``) and
times how long until the standby has replayed it (``pg_last_wal_replay_lsn()``, polled every millisecond): the time a
commit takes to become readable on the standby. ``lag_ratio`` = p99 during the export / p99 of the baseline.

``export_s_replica`` / ``export_s_primary`` (``export_replica_to_primary``) shows what reading the standby costs on
this machine (primary and standby share its cores here; on separate machines the standby's reads leave the
primary's CPU alone); ``lag_p99_ms_export_on_primary`` tells the export's own effect on lag from the machine's.

    python -m benchmarks.replica_lag [--rows 200000] [--repeat 3]

``replica_lag_p99_ms(primary_url, standby_url, work)`` is the measuring function; ``primary_and_standby`` and
``lag_run`` are the setup and one run, which ``benchmarks/scale_out.py`` reuses for its ``replica_lag_p99_ms``.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg

from benchmarks._common import add_repeat_argument, loadavg, percentile, print_summary, repeat


def replica_lag_p99_ms(primary_url: str, standby_url: str, work: Callable[[], object], *,
                       every_s: float = 0.02, min_seconds: float = 0.0) -> dict:
    """Run ``work()`` while probing the standby's lag (one probe every ``every_s`` s, for at least ``min_seconds``);
    ``{"replica_lag_p99_ms", "replica_lag_p50_ms", "replica_lag_max_ms", "probes", "work_s"}``."""
    samples: list[float] = []
    done = threading.Event()

    def probe() -> None:
        with psycopg.connect(primary_url, autocommit=True) as primary, \
                psycopg.connect(standby_url, autocommit=True) as standby:
            while not done.is_set():
                with primary.transaction():
                    primary.execute("SELECT pg_current_xact_id()")  # an xid: the commit writes a WAL record
                t0 = time.perf_counter()
                lsn = primary.execute("SELECT pg_current_wal_lsn()").fetchone()[0]  # type: ignore[index]
                while not standby.execute("SELECT pg_last_wal_replay_lsn() >= %s", (lsn,)).fetchone()[0]:  # type: ignore[index]
                    time.sleep(0.001)
                samples.append((time.perf_counter() - t0) * 1000)
                time.sleep(every_s)

    prober = threading.Thread(target=probe, daemon=True)
    prober.start()
    t0 = time.perf_counter()
    work()
    work_s = time.perf_counter() - t0
    if work_s < min_seconds:
        time.sleep(min_seconds - work_s)
    done.set()
    prober.join(timeout=60)
    return {"replica_lag_p99_ms": round(percentile(samples, 99), 2),
            "replica_lag_p50_ms": round(percentile(samples, 50), 2),
            "replica_lag_max_ms": round(max(samples), 2) if samples else float("nan"),
            "probes": len(samples), "work_s": round(work_s, 3)}


class _Writer:
    """One thread executing commands on the primary until stopped (the platform's write load during an export)."""

    def __init__(self, bus) -> None:  # noqa: ANN001 — a CommandBus
        self.bus, self.stop, self.count = bus, threading.Event(), 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        from commandlog.context import ExecutionContext
        from examples.billing import commands as c

        ctx = ExecutionContext(tenant_id="bench-writer", actor_id="writer@bench")
        while not self.stop.is_set():
            self.count += 1
            self.bus.execute(c.CreateCustomer(customer_id=self.count, name=f"W{self.count}",
                                              email=f"w{self.count}@x.example"), ctx)

    def __enter__(self) -> _Writer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000, help="commands seeded before the runs")
    parser.add_argument("--baseline-s", type=float, default=5.0, help="seconds of the baseline (no export)")
    parser.add_argument("--standby-delay", default="30s",
                        help="the standby's max_standby_streaming_delay (Postgres's default 30s; -1: replay waits "
                             "for the export instead of cancelling it)")
    add_repeat_argument(parser)
    args = parser.parse_args()
    load_start = loadavg()

    with primary_and_standby(args.rows, standby_delay=args.standby_delay) as (db, bus, standby_url, base):
        runs = repeat(args.repeat, lambda i: lag_run(db, bus, standby_url, base / f"lakes-{i}",
                                                     baseline_s=args.baseline_s), label="replica_lag")
        print_summary("replica_lag", runs, keys=("replica_lag_p99_ms", "replica_lag_p50_ms", "replica_lag_max_ms",
                                                 "baseline_lag_p99_ms", "lag_p99_ms_export_on_primary",
                                                 "lag_ratio", "export_s_replica",
                                                 "export_s_primary", "export_replica_to_primary"),
                      load_start=load_start, extra={"rows_seeded": args.rows, "standby_delay": args.standby_delay,
                                                    "read_from": [r["read_from"] for r in runs]})


@contextlib.contextmanager
def primary_and_standby(rows: int, *, standby_delay: str = "30s") -> Iterator[tuple]:
    """``(db, bus, standby_url, folder)``: a throwaway embedded primary seeded with ``rows`` commands, its hot
    standby attached as ``db.replica``; everything is stopped and deleted at the end."""
    from commandlog.bus import CommandBus
    from examples.billing import setup
    from examples.billing.demo import seed
    from storage import embedded
    from storage.migrate import upgrade
    from storage.postgres import Database
    from storage.replica import Replica
    from storage.standby import start_standby

    base = Path(tempfile.mkdtemp(prefix="cmdlog-bench-replica-"))
    server = embedded.start_server(base / "data", delete_on_exit=True)
    standby = None
    try:
        db = Database(url=embedded.ensure_database(server, "bench"))
        upgrade(db)
        bus = setup(CommandBus(db))
        seed(bus, tenants=20, commands=rows, days=30)
        standby = start_standby(server, base / "standby", settings={"max_standby_streaming_delay": standby_delay})
        standby.wait_replayed(timeout=600)
        standby_url = standby.uri("bench")
        db.replica = Replica(url=standby_url, max_lag_s=60)
        yield db, bus, standby_url, base
        db.close()
    finally:
        if standby is not None:
            standby.stop()
        embedded.stop_server(server)
        shutil.rmtree(base, ignore_errors=True)


def lag_run(db, bus, standby_url: str, lakes: Path, *, baseline_s: float) -> dict:  # noqa: ANN001 — Database, bus
    """One run, writer on: the lag without an export, during an export reading the standby, during one reading the
    primary (into lakes under ``lakes``, deleted after)."""
    from commandlog.journal.export import run_export

    out: dict = {}
    with _Writer(bus):  # the same write load in all three phases
        idle = replica_lag_p99_ms(db.url, standby_url, lambda: time.sleep(baseline_s))
        during = replica_lag_p99_ms(db.url, standby_url, lambda: out.update(r=run_export(db, str(lakes / "replica"))))
        primary = replica_lag_p99_ms(db.url, standby_url, lambda: out.update(
            p=run_export(db, str(lakes / "primary"), replica=False)))
    assert out["p"].read_from == "primary"
    shutil.rmtree(lakes, ignore_errors=True)
    # read_from "primary": the standby cut the export short (a recovery conflict) and the primary redid it.
    return {"rows": sum(out["r"].rows.values()), "rows_primary": sum(out["p"].rows.values()),
            "read_from": out["r"].read_from,
            "replica_lag_p99_ms": during["replica_lag_p99_ms"], "replica_lag_p50_ms": during["replica_lag_p50_ms"],
            "replica_lag_max_ms": during["replica_lag_max_ms"], "probes": during["probes"],
            "baseline_lag_p99_ms": idle["replica_lag_p99_ms"],
            "lag_p99_ms_export_on_primary": primary["replica_lag_p99_ms"],
            "lag_ratio": round(during["replica_lag_p99_ms"] / max(idle["replica_lag_p99_ms"], 0.001), 2),
            "export_s_replica": during["work_s"], "export_s_primary": primary["work_s"],
            "export_replica_to_primary": round(during["work_s"] / primary["work_s"], 2)}


if __name__ == "__main__":
    main()
