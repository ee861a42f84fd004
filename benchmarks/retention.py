"""Retention purge vs. a batched DELETE of the same rows, and what concurrent writers feel during the purge.

    python -m benchmarks.retention [--rows 3000000] [--repeat 3] [--writers 2] [--reclaim-mb-per-s 4] [--trace]
                                   [--no-delete] [--url postgresql://…]

Seeds ``--rows`` commands (``command_log`` rows; each also has its tenant row and ~0.75 events) spread over 90 days,
through the bus's batch path (``bus.import_history`` of ``examples.billing.demo.history``; beyond 200k commands the
seeded block is replicated server-side with fresh ids and shifted times to save the seeding time) — **once**, into
``bench_retention_seed_<rows>`` on an embedded server kept under ``$CMDLOG_BENCH_HOME`` (default ``/tmp/cmdlog-bench``;
reused by later invocations while the row count and the data's end date match). The policy (60 days for both
classes, as of the data's end, which lands the cutoff on a month boundary) makes the oldest third expired.

Each of the ``--repeat`` runs works on a fresh copy (``CREATE DATABASE … TEMPLATE … STRATEGY FILE_COPY``, brought
to the current schema): ``--writers`` threads execute traced commands through the bus (one connection each, ~4 ms
pause between commands) from before ``run_purge`` starts until it returns. ``run_purge`` has two phases: the purge
proper (each expired leaf detached concurrently and parked, its rows gone from the log: ``purge_seconds``, the time
``speedup_vs_delete`` divides) and the paced reclaim of the parked leaves' files at ``--reclaim-mb-per-s`` (default:
the policy's; ``reclaim_seconds``). ``writer_p99_ratio`` is the writers' p99 over the whole of ``run_purge`` — from
its start until the last file is gone — against their p99 over the ``--before-seconds`` just before it;
``writer_p99_ratio_purge`` and ``writer_p99_ratio_reclaim`` are the same over each phase alone (each run prints its
sample counts: ``writer_samples_purge``, ``writer_samples_reclaim``). The partitions ahead are created first, before
the writers start (in production, the cleanup's first step, ``retention.cleanup.ensure_partitions_ahead``; the purge
no longer creates any). The purge runs in its own process, as it does in production (a flow run): in the writers'
process its Python would hold the GIL the writer threads need, a delay that has nothing to do with the database.

The baseline, a batched ``DELETE`` (5,000 rows per transaction) of the same rows, takes minutes at full size: it is
measured **once per invocation**, on its own fresh copy after the purge runs, with one writer running; each run's
``speedup_vs_delete`` divides that one time by the run's purge time (the output says ``delete_measured: once``).

``--trace`` samples ``pg_stat_activity`` every 5 ms (wait event and blockers of the writers' backends, the purge
backend's statement) and prints, per run, the purge's step timeline and which purge statement and which wait
events the writers' slow samples fell on. Ends with one JSON line: medians and min/max of ``writer_p99_ratio``,
``speedup_vs_delete`` and the purge time, plus the load average at the start and end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from psycopg import sql

from benchmarks._common import add_repeat_argument, loadavg, percentile, print_summary, repeat
from commandlog.bus import CommandBus
from commandlog.context import ExecutionContext
from commandlog.retention.cleanup import DAYS_AHEAD
from commandlog.retention.policy import RetentionPolicy
from commandlog.retention.policy import setup as retention_setup
from commandlog.retention.purge import TAKERS, FanOut, run_purge
from examples.billing import commands as c
from examples.billing import setup as billing_setup
from examples.billing.demo import history
from storage import embedded
from storage.migrate import ensure_partitions_between, upgrade
from storage.partitions import ensure_ahead, table_sizes
from storage.postgres import Database, as_uri

BENCH_HOME = Path(os.environ.get("CMDLOG_BENCH_HOME", "/tmp/cmdlog-bench"))
BASE_MAX = 200_000
POLICY = RetentionPolicy(short_lived_days=60, long_lived_days=60)
RUN_DB, DELETE_DB = "bench_retention_run", "bench_retention_delete"
COLS = {
    "command_log": ("cmd_uuid", "started_at", (
        "cmd_class, cmd_version, tenant_id, actor_id, correlation_id, causation_id, replay_of, draft_uuid, status, "
        "error_type, error_message, finished_at, retention, subjects, cmd_body, body_excluded")),
    "tenant_command_log": ("cmd_uuid", "started_at", (
        "tenant_id, cmd_class, cmd_version, actor_id, correlation_id, causation_id, replay_of, draft_uuid, status, "
        "error_type, error_message, finished_at, retention, subjects, cmd_body, result")),
}


def _url(base: str, dbname: str, **params) -> str:
    p = psycopg.conninfo.conninfo_to_dict(base)
    p.update(dbname=dbname, **params)
    return as_uri(psycopg.conninfo.make_conninfo(**p))


def _recreate(admin: str, name: str, template: str | None = None) -> None:
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        if template:  # FILE_COPY: copies the files after a checkpoint instead of WAL-logging every block
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY").format(
                sql.Identifier(name), sql.Identifier(template)))
        else:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def seed(db: Database, rows: int, end: datetime) -> None:
    """``rows`` commands over the 90 days before ``end``: a bus-seeded block, replicated in SQL beyond BASE_MAX."""
    bus = billing_setup(CommandBus(db))
    base = min(rows, BASE_MAX)
    done = 0
    entries = history(tenants=20, commands=base, days=90, now=end, seed=11)
    while done < base:
        chunk = [e for _, e in zip(range(20_000), entries, strict=False)]
        done += bus.import_history(chunk, batch_size=20_000)
    copies = (rows - base + base - 1) // base
    for k in range(1, copies + 1):
        n = min(base, rows - base * k)
        with db.connection() as conn:
            conn.execute("CREATE TEMP TABLE IF NOT EXISTS pick (cmd_uuid uuid PRIMARY KEY)")
            conn.execute("TRUNCATE pick")
            conn.execute("INSERT INTO pick SELECT cmd_uuid FROM command_log WHERE cmd_class LIKE 'billing.%%' "
                         "AND started_at > %s ORDER BY cmd_uuid LIMIT %s", (end - timedelta(days=90), n))
            for table, (key, col, rest) in COLS.items():
                conn.execute(
                    f"INSERT INTO {table} ({key}, {col}, {rest}) SELECT md5(x.{key}::text || %(k)s)::uuid, "
                    f"least(x.{col} + %(k)s * interval '1 second', %(end)s), {rest} "
                    f"FROM {table} x JOIN pick USING (cmd_uuid)",
                    {"k": k, "end": end})
            conn.execute(
                "INSERT INTO domain_event "
                "(event_uuid, cmd_uuid, tenant_id, event_type, payload, occurred_at, retention) "
                "SELECT md5(e.event_uuid::text || %(k)s)::uuid, md5(e.cmd_uuid::text || %(k)s)::uuid, e.tenant_id, "
                "e.event_type, e.payload, least(e.occurred_at + %(k)s * interval '1 second', %(end)s), e.retention "
                "FROM domain_event e JOIN pick USING (cmd_uuid)", {"k": k, "end": end})
        print(f"  replicated block {k}/{copies}", flush=True)


def seed_name(rows: int) -> str:
    """The template database of a size."""
    return f"bench_retention_seed_{rows}"


def seed_database(admin: str, rows: int, end: datetime) -> tuple[int, int]:
    """``bench_retention_seed_<rows>`` holding ``rows`` commands ending at ``end`` (reused when it already does);
    returns (commands, expired commands)."""
    name = seed_name(rows)
    url = _url(admin, name)
    with psycopg.connect(admin, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    if exists:
        with psycopg.connect(url, autocommit=True) as conn:
            seeded = conn.execute("SELECT to_regclass('bench_seed') IS NOT NULL").fetchone()[0]
            meta = conn.execute("SELECT rows, end_at FROM bench_seed").fetchone() if seeded else None
        if meta and meta[0] == rows and meta[1] == end:
            print(f"reusing {name} ({rows:,} commands up to {end:%Y-%m-%d})", flush=True)
            return _counts(url, end)
    _recreate(admin, name)
    db = Database(url=url)
    upgrade(db)
    ensure_partitions_between(db, f"'{end - timedelta(days=91):%Y-%m-%d}'::date", "current_date + 7")
    t0 = time.perf_counter()
    print(f"seeding {rows:,} commands over 90 days up to {end:%Y-%m-%d} …", flush=True)
    seed(db, rows, end)
    print(f"  seeded in {time.perf_counter() - t0:.0f} s", flush=True)
    db.close()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
        conn.execute("CREATE TABLE bench_seed (rows bigint, end_at timestamptz)")
        conn.execute("INSERT INTO bench_seed VALUES (%s, %s)", (rows, end))
    return _counts(url, end)


def _counts(url: str, end: datetime) -> tuple[int, int]:
    month = end - timedelta(days=60)
    with psycopg.connect(url) as conn:
        total = conn.execute("SELECT count(*) FROM command_log").fetchone()[0]
        expired = conn.execute("SELECT count(*) FROM command_log WHERE retention <> 'permanent' AND started_at < %s",
                               (month,)).fetchone()[0]
    return total, expired


class Writer(threading.Thread):
    """Executes traced commands through the bus in a loop, recording each latency with its start time."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.db = Database(url=url, max_connections=1)
        self.bus = billing_setup(CommandBus(self.db), install_schema=False)
        self.samples: list[tuple[float, float]] = []
        self.errors: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        ctx = ExecutionContext(tenant_id="live", actor_id="writer@live")
        i = 0
        while not self.stop.is_set():
            i += 1
            t0 = time.perf_counter()
            try:
                self.bus.execute(c.RecordLogin(user_id=f"u{i % 50}", ip="10.1.2.3"), ctx)
            except Exception as e:  # noqa: BLE001 - counted and reported
                self.errors.append(repr(e))
            self.samples.append((t0, time.perf_counter() - t0))
            time.sleep(0.004)

    def close(self) -> None:
        self.stop.set()
        self.join()
        self.db.close()


def latencies(writers: list[Writer], start: float, end: float) -> list[float]:
    """Latencies (s) of the commands the writers started in ``[start, end)``."""
    return [d for w in writers for t, d in w.samples if start <= t < end]


class WaitSampler(threading.Thread):
    """Samples ``pg_stat_activity`` of the database every ``every`` s: each backend's application name, wait event,
    blockers' application names and statement."""

    QUERY = ("SELECT a.application_name, coalesce(a.wait_event_type, ''), coalesce(a.wait_event, ''), a.state, "
             "left(a.query, 90), (SELECT string_agg(DISTINCT b.application_name, ',') FROM pg_stat_activity b "
             "WHERE b.pid = ANY (pg_blocking_pids(a.pid))) FROM pg_stat_activity a "
             "WHERE a.datname = current_database() AND a.pid <> pg_backend_pid() "
             "AND a.application_name LIKE 'bench_%%'")

    def __init__(self, url: str, every: float = 0.005) -> None:
        super().__init__(daemon=True)
        self.conn = psycopg.connect(url, autocommit=True)
        self.every = every
        self.samples: list[tuple[float, list[tuple]]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            t = time.perf_counter()
            self.samples.append((t, self.conn.execute(self.QUERY).fetchall()))
            time.sleep(self.every)

    def close(self) -> None:
        self.stop.set()
        self.join()
        self.conn.close()


def _kind(query: str) -> str:
    """A short name for the purge backend's statement."""
    q = " ".join(query.split()).upper()
    for key, name in (("DETACH PARTITION", "detach"), ("DROP TABLE", "drop table"), ("DROP INDEX", "drop index"),
                      ("DROP CONSTRAINT", "drop index"), ("COUNT(*)", "count"),
                      ("CMDLOG_ENSURE_PARTITIONS", "create partitions"), ("LOCK TABLE", "lock parents"),
                      ("ATTACH PARTITION", "attach"), ("CREATE TABLE", "create table"),
                      ("RETENTION_STEP", "bookkeeping"), ("PG_TOTAL_RELATION_SIZE", "size"),
                      ("NOT EXISTS", "droppable check"), ("PG_INHERITS", "list partitions")):
        if key in q:
            return name
    return q[:30]


def trace_report(sampler: WaitSampler, writers: list[Writer], steps: list[tuple[float, str, str]],
                 p0: float, p1: float, threshold: float) -> dict:
    """Where the purge spent its time, and what the writers' slow samples during it coincided with."""
    purge_busy: Counter = Counter()
    purge_waits: Counter = Counter()
    writer_waits: Counter = Counter()
    timeline = []  # (t, purge statement kind or idle, {writer waits})
    for t, rows in sampler.samples:
        if not p0 <= t < p1:
            continue
        purge = [_kind(q) if state == "active" else f"({state}: {_kind(q)})" for app, _, _, state, q, _ in rows
                 if app == "bench_purge" and state != "idle"]
        kind = purge[0] if purge else "(purge idle: in Python)"
        purge_busy[kind] += 1
        purge_waits.update(f"{_kind(q)} {wt}:{we}" if wt else f"{_kind(q)} CPU" for app, wt, we, state, q, _ in rows
                           if app == "bench_purge" and state == "active")
        waits = set()
        for app, wtype, wevent, state, _, blockers in rows:
            if app.startswith("bench_writer") and state == "active":
                w = f"{wtype}:{wevent}" if wtype else "CPU"
                if blockers:
                    w += f" (blocked by {blockers})"
                writer_waits[w] += 1
                waits.add(w)
        timeline.append((t, kind, waits))
    slow_by_purge: Counter = Counter()
    slow_waits: Counter = Counter()
    slow = [(t, d) for w in writers for t, d in w.samples if p0 <= t < p1 and d > threshold]
    for t, d in slow:
        during = [(k, ws) for s, k, ws in timeline if t <= s <= t + d]
        slow_by_purge.update({k for k, _ in during} or {"(no sample)"})
        slow_waits.update({w for _, ws in during for w in ws} or {"(none sampled)"})
    phases: Counter = Counter()
    last = p0
    for t, phase, _ in steps:
        phases[phase] += t - last
        last = t
    phases["(after the last step)"] += p1 - last
    ends = [t for t, _, _ in steps]
    slow_by_phase: Counter = Counter()
    for t, _ in slow:  # the step that ends the interval the slow command started in
        k = next((i for i, e in enumerate(ends) if e > t), None)
        slow_by_phase["(after the last step)" if k is None else steps[k][1]] += 1
    return {"purge_statement_samples": dict(purge_busy.most_common()),
            "purge_wait_samples": dict(purge_waits.most_common(12)),
            "writer_active_wait_samples": dict(writer_waits.most_common(12)),
            "slow_threshold_ms": round(threshold * 1000, 2), "slow_samples": len(slow),
            "slow_samples_by_purge_statement": dict(slow_by_purge.most_common()),
            "slow_samples_by_writer_wait": dict(slow_waits.most_common(12)),
            "slow_samples_by_step": dict(slow_by_phase.most_common()),
            "seconds_before_step": {k: round(v, 3) for k, v in phases.most_common()}}


def batched_delete(url: str, cutoff: datetime, batch: int = 5000) -> dict[str, int]:
    """The baseline: DELETE … WHERE pk IN (SELECT … LIMIT batch) per table, one transaction per batch."""
    keys = {"command_log": ("cmd_uuid", "started_at"), "tenant_command_log": ("cmd_uuid", "started_at"),
            "domain_event": ("event_uuid", "occurred_at"), "frontend_action": ("action_uuid", "occurred_at")}
    deleted = {}
    with psycopg.connect(url, autocommit=True) as conn:
        for table, (key, col) in keys.items():
            total = 0
            while True:
                n = conn.execute(
                    f"DELETE FROM {table} WHERE ({key}, retention, {col}) IN "
                    f"(SELECT {key}, retention, {col} FROM {table} "
                    f"WHERE retention IN ('short_lived', 'long_lived') AND {col} < %s LIMIT %s)",
                    (cutoff, batch)).rowcount
                total += n
                if n == 0:
                    break
            deleted[table] = total
    return deleted


def _sizes(url: str) -> dict:
    with psycopg.connect(url) as conn:
        return table_sizes(conn)


def _print_sizes(label: str, sizes: dict) -> None:
    mb = 1024 * 1024
    print(f"  {label}: " + ", ".join(f"{t} {s['table_bytes'] / mb:.1f}+{s['index_bytes'] / mb:.1f} MB"
                                     for t, s in sizes.items()) + "  (table+indexes)", flush=True)


def purge_run(admin: str, end: datetime, args) -> dict:
    """One run on a fresh copy of the seed: writers before and during ``run_purge``."""
    _recreate(admin, RUN_DB, template=seed_name(args.rows))
    url = _url(admin, RUN_DB)
    with contextlib.closing(Database(url=url)) as db:  # a seed made by an earlier version: bring it to head
        upgrade(db)
    t0 = time.perf_counter()  # the cleanup's earlier step, before the writers' window as before the purge
    created = ensure_ahead(url, days=DAYS_AHEAD)
    print(f"  partitions ahead (the cleanup's first step, not timed with the purge): {created} created in "
          f"{time.perf_counter() - t0:.2f} s", flush=True)
    sizes_before = _sizes(url)
    writers = [Writer(_url(admin, RUN_DB, application_name=f"bench_writer{k}")) for k in range(args.writers)]
    sampler = WaitSampler(url) if args.trace else None
    purge = subprocess.Popen([sys.executable, "-m", "benchmarks.retention", "--child-purge",
                              _url(admin, RUN_DB, application_name="bench_purge"), "--as-of", end.isoformat(),
                              "--reclaim-mb-per-s", str(args.reclaim_mb_per_s), "--takers", str(args.takers)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    if purge.stdout.readline().strip() != "ready":
        raise SystemExit("the purge process did not start")
    for w in writers:
        w.start()
    if sampler:
        sampler.start()
    time.sleep(1.0)  # warm up: connections, prepared statements
    w0 = time.perf_counter()
    time.sleep(args.before_seconds)
    purge.stdin.write("go\n")
    purge.stdin.flush()
    out, _ = purge.communicate()
    for w in writers:
        w.close()
    if sampler:
        sampler.close()
    if purge.returncode != 0:
        raise SystemExit(f"the purge process failed ({purge.returncode})")
    report = json.loads(out.strip().splitlines()[-1])
    p0, p1, steps = report["p0"], report["p1"], [tuple(s) for s in report["steps"]]
    purged: dict[str, int] = {}
    for row in report["counts"]:
        purged[row["table"]] = purged.get(row["table"], 0) + row["rows"]
    pr = next((t for t, phase, _ in steps if phase == "reclaiming"), p1)  # rows gone: the paced reclaim starts
    before, during = latencies(writers, w0, p0), latencies(writers, p0, p1)
    in_purge, in_reclaim = latencies(writers, p0, pr), latencies(writers, pr, p1)
    p99_before, p99_during = percentile(before, 99), percentile(during, 99)
    print(f"  purge: {pr - p0:.2f} s (rows gone), reclaim: {p1 - pr:.2f} s, {report['partitions_dropped']} "
          f"partitions dropped, {report['reclaimed_bytes'] / 2**20:.1f} MB freed, rows {purged}", flush=True)
    if args.sizes:
        _print_sizes("before", sizes_before)
        _print_sizes("after purge", _sizes(url))

    def ratio(xs: list[float]) -> float | None:
        return round(percentile(xs, 99) / p99_before, 3) if xs else None

    figures = {
        "purge_seconds": round(pr - p0, 3), "reclaim_seconds": round(p1 - pr, 3),
        "partitions_dropped": report["partitions_dropped"],
        "bytes_freed": report["reclaimed_bytes"], "purged": purged,
        "writer_p50_before_ms": round(percentile(before, 50) * 1000, 3),
        "writer_p99_before_ms": round(p99_before * 1000, 3), "writer_p99_during_ms": round(p99_during * 1000, 3),
        "writer_p99_ratio": round(p99_during / p99_before, 3),
        "writer_p99_ratio_purge": ratio(in_purge), "writer_p99_ratio_reclaim": ratio(in_reclaim),
        "writer_max_during_ms": round(max(during) * 1000, 1),
        "writer_samples_before": len(before), "writer_samples_during": len(during),
        "writer_samples_purge": len(in_purge), "writer_samples_reclaim": len(in_reclaim),
        "writer_errors": sum(len(w.errors) for w in writers),
    }
    if sampler:
        figures["trace"] = trace_report(sampler, writers, steps, p0, p1, threshold=max(p99_before, 0.001))
        first = steps[0][0] if steps else p0
        print("  steps (s after purge start): " + "; ".join(
            f"{t - p0:.2f} {phase} {detail}" for t, phase, detail in steps[:6]) + f" … {len(steps)} steps, "
            f"first after {first - p0:.2f} s", flush=True)
        print("  trace " + json.dumps(figures["trace"]), flush=True)
    return figures


def child_purge(url: str, as_of: datetime, reclaim_mb_per_s: float, takers: int) -> None:
    """The purge in its own process, as in production (a flow run, not the writers' process): the writers' Python
    threads then never wait for the GIL behind the purge's Python. Starts on 'go' from stdin; prints its report
    with ``time.perf_counter`` stamps (CLOCK_MONOTONIC: comparable across processes on Linux)."""
    db = Database(url=url)
    bus = retention_setup(billing_setup(CommandBus(db), install_schema=False))
    steps: list[tuple[float, str, str]] = []
    print("ready", flush=True)
    sys.stdin.readline()
    p0 = time.perf_counter()
    policy = POLICY.model_copy(update={"reclaim_mb_per_s": reclaim_mb_per_s})
    report = run_purge(db, bus, policy, as_of=as_of, dry_run=False, fan=FanOut(takers=takers),
                       step=lambda phase, detail: steps.append((time.perf_counter(), phase, detail)))
    p1 = time.perf_counter()
    db.close()
    print(json.dumps({"p0": p0, "p1": p1, "steps": steps, "counts": report.counts,
                      "partitions_dropped": report.partitions_dropped, "bytes_freed": report.bytes_freed,
                      "reclaimed_bytes": report.reclaimed_bytes}))


def delete_run(admin: str, end: datetime, rows: int) -> dict:
    """The baseline on its own fresh copy, one writer running."""
    _recreate(admin, DELETE_DB, template=seed_name(rows))
    url = _url(admin, DELETE_DB)
    writer = Writer(_url(admin, DELETE_DB, application_name="bench_writer0"))
    writer.start()
    time.sleep(1.0)
    d0 = time.perf_counter()
    deleted = batched_delete(url, end - timedelta(days=60))
    d1 = time.perf_counter()
    writer.close()
    print(f"batched DELETE: {d1 - d0:.2f} s, rows {deleted}", flush=True)
    return {"delete_seconds": round(d1 - d0, 3), "deleted": {k: v for k, v in deleted.items() if v},
            "writer_p99_during_delete_ms": round(percentile(latencies([writer], d0, d1), 99) * 1000, 3),
            "writer_errors": len(writer.errors)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=3_000_000, help="commands to seed (default 3M)")
    parser.add_argument("--url", default=None, help="an existing Postgres (default: an embedded one under "
                                                    "$CMDLOG_BENCH_HOME)")
    add_repeat_argument(parser, default=3)
    parser.add_argument("--before-seconds", type=float, default=15.0, help="writer baseline window")
    parser.add_argument("--writers", type=int, default=2, help="writer threads (one connection each)")
    parser.add_argument("--trace", action="store_true", help="sample wait events; print where writers waited")
    parser.add_argument("--sizes", action="store_true", help="print table and index sizes before and after")
    parser.add_argument("--no-delete", action="store_true", help="skip the batched DELETE baseline")
    parser.add_argument("--seed-only", action="store_true", help="seed (or check) the template database and stop")
    parser.add_argument("--reclaim-mb-per-s", type=float, default=POLICY.reclaim_mb_per_s,
                        help="RetentionPolicy.reclaim_mb_per_s of the purge (default: the policy's default)")
    parser.add_argument("--takers", type=int, default=TAKERS,
                        help="threads of the purge taking its units (default: the purge's default)")
    parser.add_argument("--child-purge", help=argparse.SUPPRESS)
    parser.add_argument("--as-of", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_purge:
        return child_purge(args.child_purge, datetime.fromisoformat(args.as_of), args.reclaim_mb_per_s, args.takers)

    load_start = loadavg()
    if args.url is None:
        server = embedded.start_server(BENCH_HOME / "pg", keep_running=True)
        admin = embedded.ensure_database(server, "postgres")
    else:
        admin = args.url
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    month = (today - timedelta(days=75)).replace(day=1)
    end = month + timedelta(days=60)  # as_of: the 60-day cutoff is the first of `month`
    total, expired = seed_database(admin, args.rows, end)
    print(f"command_log: {total:,} rows, {expired:,} expired; each run purges a fresh copy", flush=True)
    if args.seed_only:
        return
    runs = repeat(args.repeat, lambda i: purge_run(admin, end, args), label="retention-run")
    baseline = {} if args.no_delete else delete_run(admin, end, args.rows)
    for r in runs:
        if baseline:
            r["speedup_vs_delete"] = round(baseline["delete_seconds"] / r["purge_seconds"], 2)
            r["same_rows"] = r["purged"] == baseline["deleted"]
    with psycopg.connect(admin, autocommit=True) as conn:
        for name in (RUN_DB, DELETE_DB):
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    print_summary("retention", runs, load_start=load_start,
                  keys=("writer_p99_ratio", "speedup_vs_delete", "purge_seconds", "reclaim_seconds",
                        "writer_p99_ratio_purge", "writer_p99_ratio_reclaim", "writer_p99_before_ms",
                        "writer_p99_during_ms", "writer_samples_during"),
                  extra={"rows": total, "expired_rows": expired, "writers": args.writers,
                         "reclaim_mb_per_s": args.reclaim_mb_per_s, "takers": args.takers,
                         "delete_measured": "once, on its own copy after the purge runs" if baseline else "skipped",
                         **{k: v for k, v in baseline.items() if k != "deleted"},
                         "same_rows": all(r.get("same_rows", False) for r in runs) if baseline else None,
                         "writer_errors": sum(r["writer_errors"] for r in runs) + baseline.get("writer_errors", 0),
                         "partitions_dropped": runs[-1]["partitions_dropped"],
                         "bytes_freed": runs[-1]["bytes_freed"]})


if __name__ == "__main__":
    main()
