"""What tracing costs: the same billing handler (one UPDATE) run five ways, interleaved — traced through the bus,
untraced, with hand-written tracing (plain psycopg writing the same log rows in the COMMIT's pipeline sync),
hand-written into a one-physical-row prototype of the dual log, and hand-written plus a prototype subject key table
(``subject_keys``: one narrow row per subject, what ``benchmarks.subject_keys`` reads); and the batch (COPY) seeding
path against a raw COPY of the same rows.

    python -m benchmarks.bus_overhead [--rows 5000] [--batch-rows 100000] [--repeat 3]
    python -m benchmarks.bus_overhead --breakdown [--rows 3000] [--repeat 3]   # where the log rows' cost goes

``--breakdown`` measures instead, per table and per index, what the hand-written log rows cost over the untraced
handler, and the floor of any log written in the command's transaction (``measure_breakdown``).

Each of the ``--repeat`` runs measures both parts (baselines included) and prints its own JSON line. Ends with one
JSON line: medians and min/max over the runs of p50_ratio and p99_ratio (traced / untraced latency),
ratio_to_handwritten (traced / hand-written p50: what our Python costs over the SQL), handwritten_p50_ratio and
single_row_p50_ratio (hand-written and prototype / untraced), subject_keys_to_handwritten (the key rows' cost
over the hand-written rows), the CPU each variant spends per execution in this
thread and in the server's backends (``*_cpu_ms``; unlike latency, hardly moved by the machine's load; the server
part needs a local server whose /proc entries this user may read), and batch_vs_copy (raw COPY time / batch path
time; 1.0 means the batch path costs nothing over COPY), WAL bytes per execution of each variant (``*_wal_bytes``:
the server's WAL insert position before and after each execution, read untimed after the timed loop;
``traced_wal_bytes_over_untraced`` is what the log rows add), with the load average at the start and end. Uses a
throwaway embedded Postgres unless CMDLOG_BENCH_DATABASE_URL names a database (whose log tables it truncates).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from psycopg import sql

from benchmarks._common import add_repeat_argument, loadavg, percentile, print_summary, repeat
from commandlog.bus import CommandBus
from commandlog.context import ExecutionContext, HandlerContext
from commandlog.ids import uuid7
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


def _hand_params(cmd: c.RenameCustomer, ctx: ExecutionContext, cmd_uuid: uuid.UUID, started: datetime,
                 finished: datetime, result: dict, events: list) -> dict:
    """The log rows' values built by hand: what any tracing must send, with none of the bus's checks."""
    body = cmd.model_dump_json()
    return {"cmd_uuid": cmd_uuid, "cmd_class": cmd.cmd_class, "cmd_version": cmd.cmd_version,
            "tenant_id": ctx.tenant_id, "actor_id": ctx.actor_id, "correlation_id": uuid7(),
            "causation_id": None, "replay_of": None,
            "draft_uuid": None, "status": "succeeded", "error_type": None, "error_message": None,
            "public_error_message": None, "started_at": started, "finished_at": finished, "retention": cmd.retention,
            "subjects": [f"customer:{cmd.customer_id}"], "body": body, "public_body": body, "body_excluded": False,
            "result": json.dumps(result),
            "events": json.dumps([{"event_uuid": str(e.event_uuid), "event_type": e.event_type, "payload": e.payload,
                                   "occurred_at": e.occurred_at.isoformat()} for e in events])}


def _handwritten(db: Database, cmd: c.RenameCustomer, ctx: ExecutionContext, statement: str) -> None:
    """The same handler plus plain psycopg: the log rows written by ``statement`` in the COMMIT's pipeline sync."""
    with db.connection() as conn:
        tx = conn.transaction()
        tx.__enter__()
        cmd_uuid, started = uuid7(), datetime.now(UTC)
        hctx = HandlerContext(conn=conn, execution=ctx, cmd_uuid=cmd_uuid, mode="live", _execute_nested=None)
        result = rename_customer(cmd, hctx)
        params = _hand_params(cmd, ctx, cmd_uuid, started, datetime.now(UTC), result, hctx.events)
        with conn.pipeline():
            conn.execute(statement, params)
            tx.__exit__(None, None, None)


# The hand-written statement: the same rows as the bus writes (``command_log``, ``tenant_command_log``,
# ``domain_event``), written here rather than imported so that the baseline stays put while the bus changes.
_HAND_GLOBAL = """
  INSERT INTO command_log (cmd_uuid, cmd_class, cmd_version, tenant_id, actor_id, correlation_id, causation_id,
      replay_of, draft_uuid, status, error_type, error_message, started_at, finished_at, retention, subjects,
      cmd_body, body_excluded)
  VALUES (%(cmd_uuid)b, %(cmd_class)b, %(cmd_version)b, %(tenant_id)b, %(actor_id)b, %(correlation_id)b,
      %(causation_id)b, %(replay_of)b, %(draft_uuid)b, %(status)b, %(error_type)b, %(public_error_message)b,
      %(started_at)b, %(finished_at)b, %(retention)b, %(subjects)b, %(public_body)b::jsonb, %(body_excluded)b)"""
_HAND_TENANT = """
  INSERT INTO tenant_command_log (cmd_uuid, tenant_id, cmd_class, cmd_version, actor_id, correlation_id,
      causation_id, replay_of, draft_uuid, status, error_type, error_message, started_at, finished_at, retention,
      subjects, cmd_body, result)
  VALUES (%(cmd_uuid)b, %(tenant_id)b, %(cmd_class)b, %(cmd_version)b, %(actor_id)b, %(correlation_id)b,
      %(causation_id)b, %(replay_of)b, %(draft_uuid)b, %(status)b, %(error_type)b, %(error_message)b,
      %(started_at)b, %(finished_at)b, %(retention)b, %(subjects)b, %(body)b::jsonb, %(result)b::jsonb)"""
_HAND_EVENTS = """
INSERT INTO domain_event (event_uuid, cmd_uuid, tenant_id, event_type, payload, occurred_at, retention)
SELECT e.event_uuid, %(cmd_uuid)b, %(tenant_id)b, e.event_type, e.payload, e.occurred_at, %(retention)b
  FROM jsonb_to_recordset(%(events)b::jsonb)
       AS e(event_uuid uuid, event_type text, payload jsonb, occurred_at timestamptz)"""
INSERT_HAND = f"WITH g AS ({_HAND_GLOBAL}), t AS ({_HAND_TENANT}) {_HAND_EVENTS}"
# Each table's part alone, for the breakdown (psycopg sends only the parameters a statement names).
HAND_PARTS = {"command_log": _HAND_GLOBAL, "tenant_command_log": _HAND_TENANT, "domain_event": _HAND_EVENTS}


def handwritten(db: Database, cmd: c.RenameCustomer, ctx: ExecutionContext) -> None:
    """Hand-written tracing: the same rows as the bus (``command_log``, ``tenant_command_log``, ``domain_event``)."""
    _handwritten(db, cmd, ctx, INSERT_HAND)


# The one-physical-row prototype (issue 17, point 4): the tenant table holds both the full and the lean body, with
# the union of both tables' indexes (the global log's admin timelines included), and ``command_log`` would become a
# projection of it. Measured here only; the schema is not changed.
SINGLE_TABLE = "bench_single_log"
SINGLE_INDEXES = (
    "(tenant_id, started_at DESC, cmd_uuid DESC)", "(tx_id)", "(correlation_id)", "USING gin (tenant_id, subjects)",
    "(tenant_id, actor_id, started_at DESC, cmd_uuid DESC)", "(tenant_id, cmd_class, started_at DESC, cmd_uuid DESC)",
    "(tenant_id, status, started_at DESC, cmd_uuid DESC) WHERE status <> 'succeeded'",
    "(replay_of) WHERE replay_of IS NOT NULL", "(actor_id, started_at DESC, cmd_uuid DESC)",
    "(cmd_class, started_at DESC, cmd_uuid DESC)", "(started_at DESC, cmd_uuid DESC)",
)
INSERT_SINGLE = f"""
WITH t AS (INSERT INTO {SINGLE_TABLE} (cmd_uuid, tenant_id, cmd_class, cmd_version, actor_id, correlation_id,
    causation_id, replay_of, draft_uuid, status, error_type, error_message, public_error_message, started_at,
    finished_at, retention, subjects, cmd_body, public_body, body_excluded, result)
  VALUES (%(cmd_uuid)b, %(tenant_id)b, %(cmd_class)b, %(cmd_version)b, %(actor_id)b, %(correlation_id)b,
    %(causation_id)b, %(replay_of)b, %(draft_uuid)b, %(status)b, %(error_type)b, %(error_message)b,
    %(public_error_message)b, %(started_at)b, %(finished_at)b, %(retention)b, %(subjects)b, %(body)b::jsonb,
    %(public_body)b::jsonb, %(body_excluded)b, %(result)b::jsonb))
{_HAND_EVENTS}"""


# The subject key prototype (issue 17, point 1; ``benchmarks.subject_keys`` measures its reads): the hand-written rows
# plus one narrow row per subject, ``(tenant_id, subject, started_at, cmd_uuid, retention)``, in a table partitioned by
# month with one b-tree and the tenant policy — what such a table would add to every command. Measured here only.
SUBJECT_KEY_TABLE = "bench_subject_key"
INSERT_SUBJECT_KEYS = f"""
WITH g AS ({_HAND_GLOBAL}), t AS ({_HAND_TENANT}),
k AS (INSERT INTO {SUBJECT_KEY_TABLE} (tenant_id, subject, started_at, cmd_uuid, retention)
      SELECT %(tenant_id)b, s, %(started_at)b, %(cmd_uuid)b, %(retention)b FROM unnest(%(subjects)b::text[]) AS s)
{_HAND_EVENTS}"""


def create_subject_key_table(db: Database) -> None:
    """The key prototype: one month-ish range around now, the page's b-tree, the tenant policy like the log's."""
    _prototype_table(db, SUBJECT_KEY_TABLE, [
        f"CREATE TABLE {SUBJECT_KEY_TABLE} (tenant_id text NOT NULL, subject text NOT NULL, "
        "started_at timestamptz NOT NULL, cmd_uuid uuid NOT NULL, retention text NOT NULL) "
        "PARTITION BY RANGE (started_at)",
        f"CREATE TABLE {SUBJECT_KEY_TABLE}_now PARTITION OF {SUBJECT_KEY_TABLE} "
        "FOR VALUES FROM (now() - interval '40 days') TO (now() + interval '40 days')",
        f"CREATE INDEX ON {SUBJECT_KEY_TABLE} (tenant_id, subject, started_at DESC, cmd_uuid DESC)",
        f"SELECT cmdlog_apply_tenant_rls('{SUBJECT_KEY_TABLE}'::regclass)",
        f"SELECT cmdlog_apply_tenant_rls('{SUBJECT_KEY_TABLE}_now'::regclass)"])


def subject_keys(db: Database, cmd: c.RenameCustomer, ctx: ExecutionContext) -> None:
    """Hand-written tracing plus the subject key rows."""
    _handwritten(db, cmd, ctx, INSERT_SUBJECT_KEYS)


def _prototype_table(db: Database, name: str, ddl: list[str]) -> None:
    """(Re)create a prototype table ``name`` with the statements ``ddl``."""
    with db.connection() as conn:
        conn.execute(f"DROP TABLE IF EXISTS {name}")
        for statement in ddl:
            conn.execute(statement)


def create_single_table(db: Database) -> None:
    """The prototype table, partitioned like the log (retention, then a range of ``started_at`` around now)."""
    _prototype_table(db, SINGLE_TABLE, [
        f"CREATE TABLE {SINGLE_TABLE} (LIKE tenant_command_log INCLUDING DEFAULTS INCLUDING CONSTRAINTS, "
        "public_body jsonb, public_error_message text, body_excluded boolean NOT NULL DEFAULT false, "
        "PRIMARY KEY (cmd_uuid, retention, started_at)) PARTITION BY LIST (retention)",
        f"CREATE TABLE {SINGLE_TABLE}_l PARTITION OF {SINGLE_TABLE} FOR VALUES IN ('long_lived') "
        "PARTITION BY RANGE (started_at)",
        f"CREATE TABLE {SINGLE_TABLE}_l_now PARTITION OF {SINGLE_TABLE}_l "
        "FOR VALUES FROM (now() - interval '40 days') TO (now() + interval '40 days')",
        *(f"CREATE INDEX ON {SINGLE_TABLE} {index}" for index in SINGLE_INDEXES)])


def single_row(db: Database, cmd: c.RenameCustomer, ctx: ExecutionContext) -> None:
    """Hand-written tracing into the one-row prototype: one log row (both bodies) plus the events."""
    _handwritten(db, cmd, ctx, INSERT_SINGLE)


def _backend_pids(db: Database) -> list[int]:
    with db.connection() as conn:
        return [r[0] for r in conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")]


def _server_cpu_ns(pids: list[int]) -> int | None:
    """CPU time the server's backends have used (``/proc/<pid>/schedstat``), None when it cannot be read (a
    remote server, or another user's processes): load-independent, unlike latency."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            return None
    return total


def _lsn(conn: Any) -> int:
    """The server's WAL insert position in bytes (``pg_current_wal_insert_lsn``, text ``X/Y``)."""
    hi, lo = str(conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()[0]).split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def wal_per_execution(db: Database, variants: dict[str, Callable[[c.RenameCustomer], Any]], runs: int) -> dict:
    """WAL bytes each variant writes per execution: the insert position read before and after each execution on a
    connection of its own (autocommit), variants interleaved as in the timed loop so that checkpoints (and the
    full-page images after them) fall on all alike. Untimed. Includes the variant's handler UPDATE and commit."""
    names = list(variants)
    total = dict.fromkeys(names, 0)
    with db.connection() as probe:
        probe.autocommit = True
        for i in range(runs):
            cmd = c.RenameCustomer(customer_id=1, name=f"wal{i}")
            for name in names[i % len(names):] + names[:i % len(names)]:
                start = _lsn(probe)
                variants[name](cmd)
                total[name] += _lsn(probe) - start
        probe.autocommit = False
    return {f"{k}_wal_bytes": round(v / runs) for k, v in total.items()}


def timed(db: Database, variants: dict[str, Callable[[c.RenameCustomer], Any]], rows: int) -> dict:
    """``rows`` executions of each variant, interleaved (rotating which goes first): per variant its p50 and p99
    latency and the CPU per execution in this thread (``*_client_cpu_ms``) and in the server's backends
    (``*_server_cpu_ms``, None when /proc cannot be read) — CPU, unlike latency, is hardly moved by the load."""
    pids = _backend_pids(db)  # the pool's connections, opened by the caller's warm-up
    ms: dict[str, list[float]] = {k: [] for k in variants}
    client_s = dict.fromkeys(variants, 0.0)
    server_ns: dict[str, int | None] = dict.fromkeys(variants, 0)
    names = list(variants)
    for i in range(rows):
        cmd = c.RenameCustomer(customer_id=1, name=f"n{i}")
        for name in names[i % len(names):] + names[:i % len(names)]:
            server_start = _server_cpu_ns(pids)
            cpu_start = time.thread_time()
            start = time.perf_counter()
            variants[name](cmd)
            ms[name].append((time.perf_counter() - start) * 1000)
            client_s[name] += time.thread_time() - cpu_start
            server_end = _server_cpu_ns(pids)
            spent = server_ns[name]
            server_ns[name] = None if None in (spent, server_start, server_end) else \
                spent + server_end - server_start  # type: ignore[operator]
    out: dict[str, Any] = {}
    for k in names:
        out[f"{k}_p50_ms"] = round(percentile(ms[k], 50), 4)
        out[f"{k}_p99_ms"] = round(percentile(ms[k], 99), 4)
        out[f"{k}_client_cpu_ms"] = round(client_s[k] / rows * 1000, 4)
        spent = server_ns[k]
        out[f"{k}_server_cpu_ms"] = None if spent is None else round(spent / rows / 1e6, 4)
    return out


def measure_overhead(db: Database, bus: CommandBus, rows: int) -> dict:
    ctx = ExecutionContext(tenant_id="bench", actor_id="bench@bench")
    with db.connection() as conn:
        conn.execute("INSERT INTO billing.customer (tenant_id, customer_id, name, email) "
                     "VALUES ('bench', 1, 'Bench', 'b@x.io') ON CONFLICT DO NOTHING")
    create_single_table(db)
    create_subject_key_table(db)
    variants: dict[str, Callable[[c.RenameCustomer], Any]] = {
        "traced": lambda cmd: bus.execute(cmd, ctx), "untraced": lambda cmd: untraced(db, cmd, ctx),
        "handwritten": lambda cmd: handwritten(db, cmd, ctx), "single_row": lambda cmd: single_row(db, cmd, ctx),
        "subject_keys": lambda cmd: subject_keys(db, cmd, ctx)}
    for i in range(200):  # warm-up: prepared statements, pool, caches
        for run in variants.values():
            run(c.RenameCustomer(customer_id=1, name=f"w{i}"))
    out = timed(db, variants, rows)
    names = list(variants)
    wal = wal_per_execution(db, variants, max(100, rows // 10))
    with db.connection() as conn:
        conn.execute(f"DROP TABLE {SINGLE_TABLE}")
        conn.execute(f"DROP TABLE {SUBJECT_KEY_TABLE}")
    p50 = {k: out[f"{k}_p50_ms"] for k in names}
    p99 = {k: out[f"{k}_p99_ms"] for k in names}
    out.update({
        "p50_ratio": round(p50["traced"] / p50["untraced"], 3),
        "p99_ratio": round(p99["traced"] / p99["untraced"], 3),
        "ratio_to_handwritten": round(p50["traced"] / p50["handwritten"], 3),
        "handwritten_p50_ratio": round(p50["handwritten"] / p50["untraced"], 3),
        "single_row_p50_ratio": round(p50["single_row"] / p50["untraced"], 3),
        "single_row_p99_ratio": round(p99["single_row"] / p99["untraced"], 3),
        "subject_keys_p50_ratio": round(p50["subject_keys"] / p50["untraced"], 3),
        "subject_keys_to_handwritten": round(p50["subject_keys"] / p50["handwritten"], 3),
    })
    base = out["untraced_client_cpu_ms"] + (out["untraced_server_cpu_ms"] or 0)
    for k in ("traced", "handwritten", "single_row", "subject_keys"):
        out[f"{k}_cpu_over_untraced_ms"] = round(out[f"{k}_client_cpu_ms"] + (out[f"{k}_server_cpu_ms"] or 0) - base, 4)
    out.update(wal)
    for k in ("traced", "handwritten", "single_row", "subject_keys"):
        out[f"{k}_wal_bytes_over_untraced"] = out[f"{k}_wal_bytes"] - out["untraced_wal_bytes"]
    out["executions_each"] = rows
    return out


LOG_TABLES = ("command_log", "tenant_command_log", "domain_event")


def _secondary_indexes(db: Database) -> list[tuple[str, str, str]]:
    """(table, index, definition) of each non-unique index of the log tables, as defined on the partitioned parent."""
    with db.connection() as conn:
        rows = conn.execute(
            "SELECT t.relname, c.relname, pg_get_indexdef(i.indexrelid) FROM pg_index i "
            "JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_class t ON t.oid = i.indrelid "
            "WHERE t.relname = ANY(%s) AND t.relkind = 'p' AND NOT i.indisunique ORDER BY 1, 2",
            (list(LOG_TABLES),)).fetchall()
    return [(str(t), str(i), str(d)) for t, i, d in rows]


def measure_breakdown(db: Database, rows: int) -> dict:
    """Where the log rows' cost goes (issue 17, point 4), in server CPU per execution over the untraced handler
    (CPU, not latency, so that small parts are not lost in the load's noise):

    - ``table_<t>_server_cpu_ms`` and ``table_<t>_p50_ms``: the hand-written tracing writing only table ``t``'s
      rows, over untraced (what that table costs with all its indexes);
    - ``index_<name>_server_cpu_ms``: the drop in the hand-written tracing's server CPU when that index is dropped,
      the indexes dropped one after another (each figure is the index's marginal cost); all are recreated after;
    - ``no_secondary_index_server_cpu_ms``: what is left with primary keys only (rows, WAL, partition routing);
    - ``table_floor_one_row_*``: one uuid into an unindexed table in the same pipeline as the COMMIT — the floor
      of any log written atomically with the command (invariant 1), whatever its schema.
    """
    ctx = ExecutionContext(tenant_id="bench", actor_id="bench@bench")
    with db.connection() as conn:
        conn.execute("INSERT INTO billing.customer (tenant_id, customer_id, name, email) "
                     "VALUES ('bench', 1, 'Bench', 'b@x.io') ON CONFLICT DO NOTHING")
    pair: dict[str, Callable[[c.RenameCustomer], Any]] = {
        "untraced": lambda cmd: untraced(db, cmd, ctx), "handwritten": lambda cmd: handwritten(db, cmd, ctx)}
    parts = {f"table_{t}": (lambda cmd, st=st: _handwritten(db, cmd, ctx, st)) for t, st in HAND_PARTS.items()}
    with db.connection() as conn:  # the floor: the least any log written in the command's transaction can cost
        conn.execute("DROP TABLE IF EXISTS bench_floor")
        conn.execute("CREATE TABLE bench_floor (cmd_uuid uuid)")
    parts["floor_one_row"] = lambda cmd: _handwritten(db, cmd, ctx, "INSERT INTO bench_floor VALUES (%(cmd_uuid)b)")

    def warm(variants: dict) -> None:
        for i in range(100):  # plans (re)made after each change, pool connections open
            for run in variants.values():
                run(c.RenameCustomer(customer_id=1, name=f"w{i}"))

    def over(m: dict, k: str) -> float:
        return round((m[f"{k}_server_cpu_ms"] or 0) - (m["untraced_server_cpu_ms"] or 0), 4)

    warm({**pair, **parts})
    m = timed(db, {**pair, **parts}, rows)
    out: dict[str, Any] = {"handwritten_server_cpu_ms": over(m, "handwritten")}
    for k in parts:
        out[f"{k}_server_cpu_ms"] = over(m, k)
        out[f"{k}_p50_ms"] = round(m[f"{k}_p50_ms"] - m["untraced_p50_ms"], 4)
        out[f"{k}_p50_ratio"] = round(m[f"{k}_p50_ms"] / m["untraced_p50_ms"], 3)
    out["handwritten_p50_ratio"] = round(m["handwritten_p50_ms"] / m["untraced_p50_ms"], 3)
    indexes = _secondary_indexes(db)
    previous = out["handwritten_server_cpu_ms"]
    try:
        for _table, name, _definition in indexes:
            with db.connection() as conn:
                conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(name)))
            warm(pair)
            now = over(timed(db, pair, rows), "handwritten")
            out[f"index_{name}_server_cpu_ms"] = round(previous - now, 4)
            previous = now
        out["no_secondary_index_server_cpu_ms"] = previous
    finally:
        with db.connection() as conn:
            existing = {r[0] for r in conn.execute("SELECT indexname FROM pg_indexes WHERE tablename = ANY(%s)",
                                                   (list(LOG_TABLES),))}
            for _table, name, definition in indexes:
                if name not in existing:  # recreated on the parent: every partition gets it again
                    conn.execute(definition.replace(" ON ONLY ", " ON "))
            conn.execute("DROP TABLE bench_floor")
    out["executions_each"] = rows
    return out


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
    parser.add_argument("--breakdown", action="store_true",
                        help="instead: where the log rows' server CPU goes, per table and per index")
    add_repeat_argument(parser)
    args = parser.parse_args()
    load_start = loadavg()
    with tempfile.TemporaryDirectory() as tmp:
        db = open_bench_db(tmp)
        try:
            bus = setup(CommandBus(db))
            if args.breakdown:
                runs = repeat(args.repeat, lambda i: measure_breakdown(db, args.rows), label="bus_overhead-breakdown")
                keys = [k for k in runs[0] if k.endswith(("_ms", "_ratio"))]
                print_summary("bus_overhead-breakdown", runs, load_start=load_start, keys=keys,
                              extra={"executions_each": args.rows})
                return
            runs = repeat(args.repeat, lambda i: {**measure_overhead(db, bus, args.rows),
                                                  **measure_batch(db, bus, args.batch_rows)}, label="bus_overhead-run")
        finally:
            db.close()
    print_summary("bus_overhead", runs, load_start=load_start,
                  keys=("p50_ratio", "p99_ratio", "ratio_to_handwritten", "handwritten_p50_ratio",
                        "single_row_p50_ratio", "single_row_p99_ratio", "subject_keys_p50_ratio",
                        "subject_keys_to_handwritten", "subject_keys_cpu_over_untraced_ms",
                        "subject_keys_wal_bytes_over_untraced", "batch_vs_copy",
                        "traced_p50_ms", "untraced_p50_ms", "handwritten_p50_ms", "single_row_p50_ms",
                        "subject_keys_p50_ms",
                        "traced_p99_ms", "untraced_p99_ms", "handwritten_p99_ms", "single_row_p99_ms",
                        "traced_cpu_over_untraced_ms", "handwritten_cpu_over_untraced_ms",
                        "single_row_cpu_over_untraced_ms", "traced_client_cpu_ms", "handwritten_client_cpu_ms",
                        "untraced_client_cpu_ms", "traced_server_cpu_ms", "handwritten_server_cpu_ms",
                        "untraced_server_cpu_ms", "traced_wal_bytes", "untraced_wal_bytes",
                        "handwritten_wal_bytes", "single_row_wal_bytes", "traced_wal_bytes_over_untraced",
                        "batch_rows_per_s"),
                  extra={"executions_each": args.rows, "batch_rows": args.batch_rows})


if __name__ == "__main__":
    main()
