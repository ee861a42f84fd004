"""Retention purge vs. a batched DELETE of the same rows, and what a concurrent writer feels.

    python -m benchmarks.retention [--rows 3000000] [--url postgresql://…]

Seeds ``--rows`` commands (``command_log`` rows; each also has its tenant row and ~0.75 events) spread over 90 days,
through the bus's batch path (``bus.import_history`` of ``examples.billing.demo.history``; beyond 200k commands the
seeded block is replicated server-side with fresh ids and shifted times to save the seeding time). The policy
(60 days for both classes, as of the data's end, which lands the cutoff on a month boundary) makes the oldest third
expired. The database is then copied (``CREATE DATABASE … TEMPLATE``) so both sides start identical:

* copy A: ``run_purge`` (detach + drop of whole partitions), while a writer executes traced commands through the
  bus; its p99 during the purge is compared with its p99 just before;
* copy B: the baseline, a batched ``DELETE`` (5,000 rows per transaction, by primary key) of the same rows.

Prints table/index sizes before and after on both, then one JSON line: ``speedup_vs_delete``, ``writer_p99_ratio``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from psycopg import sql

from commandlog.bus import CommandBus
from commandlog.context import ExecutionContext
from commandlog.purge import run_purge
from commandlog.retention import RetentionPolicy
from commandlog.retention import setup as retention_setup
from examples.billing import commands as c
from examples.billing import setup as billing_setup
from examples.billing.demo import history
from storage import embedded
from storage.migrate import ensure_partitions_between, upgrade
from storage.partitions import table_sizes
from storage.postgres import Database

BASE_MAX = 200_000
POLICY = RetentionPolicy(short_lived_days=60, long_lived_days=60)
COLS = {
    "command_log": ("cmd_uuid", "started_at", (
        "cmd_class, cmd_version, tenant_id, actor_id, correlation_id, causation_id, replay_of, draft_uuid, status, "
        "error_type, error_message, finished_at, retention, subjects, cmd_body, body_excluded")),
    "tenant_command_log": ("cmd_uuid", "started_at", (
        "tenant_id, cmd_class, cmd_version, actor_id, correlation_id, causation_id, replay_of, draft_uuid, status, "
        "error_type, error_message, finished_at, retention, subjects, cmd_body, result")),
}


def _url(base: str, dbname: str) -> str:
    params = psycopg.conninfo.conninfo_to_dict(base)
    params["dbname"] = dbname
    from storage.postgres import as_uri

    return as_uri(psycopg.conninfo.make_conninfo(**params))


def _recreate(admin: str, name: str, template: str | None = None) -> None:
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        q = "CREATE DATABASE {}" + (" TEMPLATE {}" if template else "")
        conn.execute(sql.SQL(q).format(sql.Identifier(name), *([sql.Identifier(template)] if template else [])))


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
                    f"least(x.{col} + %(k)s * interval '1 second', %(end)s), {rest} FROM {table} x JOIN pick USING (cmd_uuid)",
                    {"k": k, "end": end})
            conn.execute(
                "INSERT INTO domain_event (event_uuid, cmd_uuid, tenant_id, event_type, payload, occurred_at, retention) "
                "SELECT md5(e.event_uuid::text || %(k)s)::uuid, md5(e.cmd_uuid::text || %(k)s)::uuid, e.tenant_id, "
                "e.event_type, e.payload, least(e.occurred_at + %(k)s * interval '1 second', %(end)s), e.retention "
                "FROM domain_event e JOIN pick USING (cmd_uuid)", {"k": k, "end": end})
        print(f"  replicated block {k}/{copies}", flush=True)


class Writer(threading.Thread):
    """Executes traced commands through the bus in a loop, recording each latency with its start time."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.db = Database(url=url, max_connections=2)
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

    def p99(self, start: float, end: float) -> float:
        lat = sorted(d for t, d in self.samples if start <= t < end)
        return statistics.quantiles(lat, n=100)[98] if len(lat) >= 20 else float("nan")

    def close(self) -> None:
        self.stop.set()
        self.join()
        self.db.close()


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
                    f"DELETE FROM {table} WHERE ({key}, retention, {col}) IN (SELECT {key}, retention, {col} FROM {table} "
                    f"WHERE retention IN ('short_lived', 'long_lived') AND {col} < %s LIMIT %s)", (cutoff, batch)).rowcount
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=3_000_000, help="commands to seed (default 3M)")
    parser.add_argument("--url", default=None, help="an existing Postgres (default: a throwaway embedded one)")
    parser.add_argument("--before-seconds", type=float, default=6.0, help="writer baseline window")
    args = parser.parse_args()

    tmp = None
    if args.url is None:
        tmp = tempfile.mkdtemp(prefix="cmdlog-bench-retention-")
        server = embedded.start_server(Path(tmp) / "pg", delete_on_exit=True)
        admin = embedded.ensure_database(server, "postgres")
    else:
        admin = args.url
    url_a, url_b = _url(admin, "bench_retention_a"), _url(admin, "bench_retention_b")
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    month = (today - timedelta(days=75)).replace(day=1)
    end = month + timedelta(days=60)  # as_of: the 60-day cutoff is the first of `month`
    _recreate(admin, "bench_retention_a")
    db = Database(url=url_a)
    upgrade(db)
    ensure_partitions_between(db, f"'{end - timedelta(days=91):%Y-%m-%d}'::date", "current_date + 7")
    t0 = time.perf_counter()
    print(f"seeding {args.rows:,} commands over 90 days up to {end:%Y-%m-%d} …", flush=True)
    seed(db, args.rows, end)
    print(f"  seeded in {time.perf_counter() - t0:.0f} s", flush=True)
    db.close()
    with psycopg.connect(url_a, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
        total = conn.execute("SELECT count(*) FROM command_log").fetchone()[0]
        expired = conn.execute("SELECT count(*) FROM command_log WHERE retention <> 'permanent' AND started_at < %s",
                               (month,)).fetchone()[0]
    _recreate(admin, "bench_retention_b", template="bench_retention_a")
    print(f"command_log: {total:,} rows, {expired:,} expired; identical copy made", flush=True)

    sizes_before = _sizes(url_a)
    _print_sizes("before", sizes_before)
    db = Database(url=url_a)
    bus = retention_setup(billing_setup(CommandBus(db), install_schema=False))
    writer = Writer(url_a)
    writer.start()
    time.sleep(1.0)  # warm up
    w0 = time.perf_counter()
    time.sleep(args.before_seconds)
    p0 = time.perf_counter()
    report = run_purge(db, bus, POLICY, as_of=end)
    p1 = time.perf_counter()
    writer.close()
    db.close()
    purge_s = p1 - p0
    purged = {}
    for row in report.counts:
        purged[row["table"]] = purged.get(row["table"], 0) + row["rows"]
    print(f"purge: {purge_s:.2f} s, {report.partitions_dropped} partitions dropped, "
          f"{report.bytes_freed / 2**20:.1f} MB freed, rows {purged}", flush=True)
    _print_sizes("after purge", _sizes(url_a))

    writer_b = Writer(url_b)
    writer_b.start()
    time.sleep(1.0)
    d0 = time.perf_counter()
    deleted = batched_delete(url_b, month)
    d1 = time.perf_counter()
    writer_b.close()
    delete_s = d1 - d0
    print(f"batched DELETE: {delete_s:.2f} s, rows {deleted}", flush=True)
    _print_sizes("after DELETE", _sizes(url_b))

    p99_before, p99_during = writer.p99(w0, p0), writer.p99(p0, p1)
    result = {
        "benchmark": "retention", "rows": total, "expired_rows": expired,
        "purge_seconds": round(purge_s, 3), "delete_seconds": round(delete_s, 3),
        "speedup_vs_delete": round(delete_s / purge_s, 2),
        "writer_p99_before_ms": round(p99_before * 1000, 3), "writer_p99_during_ms": round(p99_during * 1000, 3),
        "writer_p99_ratio": round(p99_during / p99_before, 3),
        "writer_samples_during": sum(1 for t, _ in writer.samples if p0 <= t < p1),
        "writer_errors": len(writer.errors) + len(writer_b.errors),
        "writer_p99_during_delete_ms": round(writer_b.p99(d0, d1) * 1000, 3),
        "same_rows": purged == {k: v for k, v in deleted.items() if v},
        "partitions_dropped": report.partitions_dropped, "bytes_freed": report.bytes_freed,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
